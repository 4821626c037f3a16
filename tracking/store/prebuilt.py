"""Starting a run, logging metrics and loading runs as prebuilt statements on the driver
(tracking.core.driver).

PostgreSQL: each write is ONE statement (data-modifying CTEs), so it commits by itself with no
BEGIN and COMMIT round trips. SQLite: a few statements in one ``BEGIN IMMEDIATE`` transaction,
each a few microseconds on the in-loop driver. Loading runs (a search's page, ``runs/get``)
sends the very statements :func:`tracking.store.runs.load_runs` sends through a session, so
the database returns the same rows in the same order.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import select, text

from tracking.core.db import in_id_list
from tracking.core.driver import DriverRows, Prebuilt
from tracking.models import Dataset, DatasetInputTag
from tracking.store.metrics import (
    PG_METRICS_WRITE_BY_UUID,
    SQLITE_LATEST_UPSERT,
    SQLITE_METRIC_INSERT,
    MetricColumns,
    MetricPoint,
    pg_metric_arrays,
    sqlite_history_rows,
    sqlite_latest_rows,
)
from tracking.store.runs import (
    RUN_HANDLE_SELECT,
    RUN_INSERT_FROM_EXPERIMENT,
    RUN_TAGS,
    _build_load_runs,
)

# The run (in an ACTIVE experiment, checked in the same statement) and its tags. The tags'
# foreign key is checked at the end of the statement, when the run row exists.
_PG_START_RUN = text("""
    WITH run AS (
        INSERT INTO runs (run_uuid, experiment_id, name, user_id, status, start_time,
                          lifecycle_stage, artifact_uri)
        SELECT CAST(:run_uuid AS VARCHAR), e.experiment_id, CAST(:name AS VARCHAR),
               CAST(:user_id AS VARCHAR), 'RUNNING', CAST(:start_time AS BIGINT), 'active',
               rtrim(e.artifact_location, '/') || '/' || CAST(:run_uuid AS VARCHAR)
               || '/artifacts'
        FROM experiments AS e
        WHERE e.experiment_id = CAST(:experiment_id AS BIGINT) AND e.lifecycle_stage = 'active'
        RETURNING id, artifact_uri
    ),
    run_tags AS (
        INSERT INTO tags (run_id, key, value)
        SELECT run.id, t.key, t.value
        FROM run, unnest(CAST(:tag_keys AS TEXT[]), CAST(:tag_values AS TEXT[])) AS t(key, value)
        ON CONFLICT (run_id, key) DO UPDATE SET value = excluded.value
    )
    SELECT id, artifact_uri FROM run
""")

PG_START_RUN = Prebuilt(lambda _dialect: _PG_START_RUN)
RUN_INSERT = Prebuilt(lambda _dialect: RUN_INSERT_FROM_EXPERIMENT)
RUN_TAG_UPSERT = Prebuilt(RUN_TAGS.build)
RUN_HANDLE = Prebuilt(lambda _dialect: RUN_HANDLE_SELECT)
PG_METRICS_BY_UUID = Prebuilt(lambda _dialect: PG_METRICS_WRITE_BY_UUID)

# Several requests' metric writes in one statement (tracking.core.group_commit), each to its own
# run or several to one: the runs are looked up by uuid (ACTIVE only), each point names its
# run by its index in that list, and the final SELECT returns the indexes of the runs written
# to (a request whose run is not among them wrote nothing). Each (run, key) comes once in the
# latest values (an upsert may not touch a row twice in one statement), the maximum over every
# request of the group, so the outcome is the one of the requests' statements in any order.
# The latest rows are upserted in (run, key) order, so two groups that move the same rows lock
# them in the same order instead of deadlocking. Each array is read through a scalar subquery:
# bound as a plain parameter, PostgreSQL's custom plans know its length and always looked
# cheaper than the generic plan, so it planned the statement afresh at every execution (about
# 0.15 ms of database CPU per flush); behind the subquery the generic plan is used.
_PG_METRIC_GROUPS = text("""
    WITH run AS (
        SELECT r.id, u.i
        FROM unnest((SELECT CAST(:run_uuids AS TEXT[]))) WITH ORDINALITY AS u(run_uuid, i)
        JOIN runs AS r ON r.run_uuid = u.run_uuid AND r.lifecycle_stage = 'active'
    ),
    history AS (
        INSERT INTO metrics (run_id, key, step, timestamp, value, is_nan,
                             model_id, dataset_name, dataset_digest)
        SELECT run.id, p.key, p.step, p.ts, p.value, p.is_nan,
               p.model_id, p.dataset_name, p.dataset_digest
        FROM unnest((SELECT CAST(:runs AS BIGINT[])), (SELECT CAST(:keys AS TEXT[])),
                    (SELECT CAST(:steps AS BIGINT[])), (SELECT CAST(:tss AS BIGINT[])),
                    (SELECT CAST(:values AS FLOAT8[])), (SELECT CAST(:nans AS BOOLEAN[])),
                    (SELECT CAST(:model_ids AS TEXT[])),
                    (SELECT CAST(:dataset_names AS TEXT[])),
                    (SELECT CAST(:dataset_digests AS TEXT[])))
             AS p(run_i, key, step, ts, value, is_nan, model_id, dataset_name, dataset_digest)
        JOIN run ON run.i = p.run_i
        ON CONFLICT (run_id, key, step, timestamp, value, is_nan) DO NOTHING
    ),
    latest AS (
        INSERT INTO latest_metrics AS lm (run_id, key, step, timestamp, value, is_nan)
        SELECT run.id, l.key, l.step, l.ts, l.value, l.is_nan
        FROM unnest((SELECT CAST(:latest_runs AS BIGINT[])),
                    (SELECT CAST(:latest_keys AS TEXT[])),
                    (SELECT CAST(:latest_steps AS BIGINT[])),
                    (SELECT CAST(:latest_tss AS BIGINT[])),
                    (SELECT CAST(:latest_values AS FLOAT8[])),
                    (SELECT CAST(:latest_nans AS BOOLEAN[])))
             AS l(run_i, key, step, ts, value, is_nan)
        JOIN run ON run.i = l.run_i
        ORDER BY run.id, l.key COLLATE "C"
        ON CONFLICT (run_id, key) DO UPDATE
        SET step = excluded.step, timestamp = excluded.timestamp, value = excluded.value,
            is_nan = excluded.is_nan
        WHERE (excluded.step, excluded.timestamp, excluded.value)
              > (lm.step, lm.timestamp, lm.value)
    )
    SELECT i FROM run
""")
PG_METRIC_GROUPS = Prebuilt(lambda _dialect: _PG_METRIC_GROUPS)


async def start_run(
    w: DriverRows,
    *,
    run_uuid: str,
    experiment_id: int,
    name: str,
    user_id: str,
    start_time: int,
    tags: Mapping[str, str],
) -> str | None:
    """Insert a run and its tags; returns its artifact URI, or None when no ACTIVE experiment
    has that id (nothing written)."""
    params = {"run_uuid": run_uuid, "experiment_id": experiment_id, "name": name,
              "user_id": user_id, "start_time": start_time}  # fmt: skip
    if w.dialect == "postgresql":
        params = {**params, "tag_keys": list(tags), "tag_values": list(tags.values())}
        row = await w.first(PG_START_RUN, params)
        return None if row is None else str(row[1])
    row = await w.first(RUN_INSERT, params)
    if row is None:
        return None
    run_pk = row[0]
    await w.executemany(
        RUN_TAG_UPSERT, [{"run_id": run_pk, "key": k, "value": v} for k, v in tags.items()]
    )
    return str(row[1])


async def write_metrics(w: DriverRows, run_uuid: str, points: Sequence[MetricPoint]) -> bool:
    """Append ``points`` to the ACTIVE run ``run_uuid``'s history and move its latest values;
    False when there is no such active run (nothing written)."""
    if w.dialect == "postgresql":
        params = {"run_uuid": run_uuid, **pg_metric_arrays(points)}
        return await w.first(PG_METRICS_BY_UUID, params) is not None
    handle = await w.first(RUN_HANDLE, {"run_uuid": run_uuid})
    if handle is None or handle[3] != "active":
        return False
    await w.executemany_native(SQLITE_METRIC_INSERT, sqlite_history_rows(handle[0], points))
    await w.executemany_native(SQLITE_LATEST_UPSERT, sqlite_latest_rows(handle[0], points))
    return True


async def write_metric_groups(
    w: DriverRows, writes: Sequence[tuple[str, MetricColumns]]
) -> list[bool]:
    """PostgreSQL: several ``(run uuid, points)`` writes in one statement (which commits by
    itself); for each, whether its run was an ACTIVE run (False: that write wrote nothing)."""
    run_index: dict[str, int] = {}
    runs: list[int] = []
    history = MetricColumns()
    # Each (run, key)'s maximum (step, timestamp, value), and that point's NaN flag.
    latest: dict[tuple[int, str], tuple[int, int, float, bool]] = {}
    for run_uuid, points in writes:
        i = run_index.setdefault(run_uuid, len(run_index) + 1)  # unnest's ordinality: from 1
        runs += [i] * len(points)
        history.keys += points.keys
        history.steps += points.steps
        history.timestamps += points.timestamps
        history.values += points.values
        history.nans += points.nans
        history.model_ids += points.model_ids
        history.dataset_names += points.dataset_names
        history.dataset_digests += points.dataset_digests
        for key, step, ts, value, nan in zip(
            points.keys, points.steps, points.timestamps, points.values, points.nans, strict=True
        ):
            cur = latest.get((i, key))
            if cur is None or (step, ts, value) > cur[:3]:
                latest[(i, key)] = (step, ts, value, nan)
    params: dict[str, Any] = {
        "keys": history.keys,
        "steps": history.steps,
        "tss": history.timestamps,
        "values": history.values,
        "nans": history.nans,
        "model_ids": history.model_ids,
        "dataset_names": history.dataset_names,
        "dataset_digests": history.dataset_digests,
        "latest_runs": [i for i, _ in latest],
        "latest_keys": [k for _, k in latest],
        "latest_steps": [p[0] for p in latest.values()],
        "latest_tss": [p[1] for p in latest.values()],
        "latest_values": [p[2] for p in latest.values()],
        "latest_nans": [p[3] for p in latest.values()],
    }
    if len(writes) == 1:
        # One write: the one-run statement. PostgreSQL plans the grouped one afresh at every
        # execution (its custom plans, which know the arrays' sizes, always look cheaper than
        # a generic plan), which cost a lone write about 0.3 ms of database CPU more.
        params["run_uuid"] = writes[0][0]
        return [await w.first(PG_METRICS_BY_UUID, params) is not None]
    params["run_uuids"] = list(run_index)
    params["runs"] = runs
    written = {row[0] for row in await w.all(PG_METRIC_GROUPS, params)}
    return [run_index[run_uuid] in written for run_uuid, _ in writes]


# Dataset input rows with attribute access, like the session's rows (rendering reads them by
# name).
InputRow = namedtuple(  # type: ignore[misc]
    "InputRow", ["id", "run_id", *(c.key for c in Dataset.__table__.c)]
)


def _load_statement(index: int) -> Prebuilt:
    return Prebuilt(lambda dialect: _build_load_runs(dialect)[index])


_LOAD = [_load_statement(i) for i in range(6)]
LOAD_RUN_ROWS, LOAD_PARAMS, LOAD_TAGS, LOAD_METRICS, LOAD_INPUTS, LOAD_MODEL_LINKS = _LOAD
LOAD_INPUT_TAGS = Prebuilt(
    lambda dialect: select(
        DatasetInputTag.input_id, DatasetInputTag.key, DatasetInputTag.value
    ).where(in_id_list(DatasetInputTag.input_id, dialect))
)


async def run_pk(r: DriverRows, run_uuid: str) -> int | None:
    """The key of the run ``run_uuid`` (deleted or not), or None."""
    row = await r.first(RUN_HANDLE, {"run_uuid": run_uuid})
    return None if row is None else int(row[0])
