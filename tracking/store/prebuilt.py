"""Starting a run and logging metrics as prebuilt statements on the driver (tracking.core.driver).

PostgreSQL: each is ONE statement (data-modifying CTEs), so it commits by itself with no BEGIN
and COMMIT round trips. SQLite: a few statements in one ``BEGIN IMMEDIATE`` transaction, each a
few microseconds on the in-loop driver.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sqlalchemy import text

from tracking.core.driver import DriverRows, Prebuilt
from tracking.store.metrics import (
    PG_METRICS_WRITE_BY_UUID,
    SQLITE_LATEST_UPSERT,
    SQLITE_METRIC_INSERT,
    MetricPoint,
    pg_metric_arrays,
    sqlite_history_rows,
    sqlite_latest_rows,
)
from tracking.store.runs import RUN_HANDLE_SELECT, RUN_INSERT_FROM_EXPERIMENT, RUN_TAGS

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
