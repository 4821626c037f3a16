"""Runs: start, look up, update, params and tags, and loading runs with their data."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, bindparam, delete, func, insert, literal, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from tracking.core.db import StatementCache, dialect_name, id_list_value, in_id_list
from tracking.models import (
    Dataset,
    DatasetInput,
    DatasetInputTag,
    Experiment,
    LatestMetric,
    Param,
    Run,
    RunModelLink,
    Tag,
)
from tracking.store.key_values import KeyValueTable, write_key_values


@dataclass(frozen=True, slots=True)
class RunHandle:
    """The few columns a write needs to find and check a run."""

    id: int
    run_uuid: str
    experiment_id: int
    lifecycle_stage: str


def _build_run_insert_from_experiment() -> Any:
    runs = cast(Table, Run.__table__)
    run_uuid = bindparam("run_uuid", type_=Run.run_uuid.type)
    # The run's artifact URI is its experiment's location + /<run id>/artifacts, as MLflow's.
    artifact_uri = (
        func.rtrim(Experiment.artifact_location, "/")
        .concat("/")
        .concat(run_uuid)
        .concat("/artifacts")
    )
    source = select(
        run_uuid,
        Experiment.experiment_id,
        bindparam("name", type_=Run.name.type),
        bindparam("user_id", type_=Run.user_id.type),
        literal("RUNNING", type_=Run.status.type),
        bindparam("start_time", type_=Run.start_time.type),
        literal("active", type_=Run.lifecycle_stage.type),
        artifact_uri,
    ).where(
        Experiment.experiment_id == bindparam("experiment_id"),
        Experiment.lifecycle_stage == "active",
    )
    columns = ["run_uuid", "experiment_id", "name", "user_id", "status", "start_time",
               "lifecycle_stage", "artifact_uri"]  # fmt: skip
    return insert(runs).from_select(columns, source).returning(Run.id, Run.artifact_uri)


RUN_INSERT_FROM_EXPERIMENT = _build_run_insert_from_experiment()


async def insert_run_in_active_experiment(
    s: AsyncSession, *, run_uuid: str, experiment_id: int, name: str, user_id: str, start_time: int
) -> tuple[int, str] | None:
    """Start a run in an ACTIVE experiment, checking it in the same statement.

    Returns the run's key and artifact URI, or None when no active experiment has that id
    (nothing written: the caller looks the experiment up to say why).
    """
    conn = await s.connection()
    params = {"run_uuid": run_uuid, "experiment_id": experiment_id, "name": name,
              "user_id": user_id, "start_time": start_time}  # fmt: skip
    row = (await conn.execute(RUN_INSERT_FROM_EXPERIMENT, params)).first()
    return None if row is None else (int(row[0]), str(row[1]))


RUN_HANDLE_SELECT = select(Run.id, Run.run_uuid, Run.experiment_id, Run.lifecycle_stage).where(
    Run.run_uuid == bindparam("run_uuid")
)


async def get_run_handle(s: AsyncSession, run_uuid: str) -> RunHandle | None:
    conn = await s.connection()
    row = (await conn.execute(RUN_HANDLE_SELECT, {"run_uuid": run_uuid})).first()
    return RunHandle(*row) if row else None


async def update_run(s: AsyncSession, run_pk: int, **values: Any) -> None:
    await s.execute(update(Run).where(Run.id == run_pk).values(**values))


# A run's param is immutable once logged (MLflow): a second write of a key keeps the first.
RUN_PARAMS = KeyValueTable(Param.__table__, "run_id", keep_first=True)
RUN_TAGS = KeyValueTable(Tag.__table__, "run_id")


async def insert_params_checked(
    s: AsyncSession, run_pk: int, params: dict[str, str]
) -> list[tuple[str, str, str]]:
    """Insert params that are new; return ``(key, existing, attempted)`` for changed values.

    Insert-then-read is race-free: a concurrent writer of the same key either lands first (and
    we see its value) or loses on the primary key.
    """
    if not params:
        return []
    await write_key_values(s, RUN_PARAMS, run_pk, params)
    conn = await s.connection()
    existing = await conn.execute(
        select(Param.key, Param.value).where(Param.run_id == run_pk, Param.key.in_(list(params)))
    )
    return [(k, v, params[k]) for k, v in existing if v != params[k]]


async def upsert_run_tags(s: AsyncSession, run_pk: int, tags: dict[str, str]) -> None:
    await write_key_values(s, RUN_TAGS, run_pk, tags)


async def delete_run_tag(s: AsyncSession, run_pk: int, key: str) -> int:
    result = await s.execute(delete(Tag).where(Tag.run_id == run_pk, Tag.key == key))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


# PostgreSQL: the history rows and the latest-value upsert in ONE statement and one round trip,
# whatever the batch size; each column travels as one array (unnest), so the SQL text (and its


@dataclass(slots=True)
class RunBundle:
    """A run's row and every child collection, loaded with a fixed number of queries."""

    row: Any
    params: list[tuple[str, str]]
    tags: list[tuple[str, str]]
    metrics: list[Any]
    dataset_inputs: list[tuple[Any, list[tuple[str, str]]]]
    model_inputs: list[str]
    model_outputs: list[tuple[str, int]]


def _build_load_runs(dialect: str) -> tuple[Any, ...]:
    return (
        select(Run.__table__).where(in_id_list(Run.id, dialect)),
        select(Param.run_id, Param.key, Param.value).where(in_id_list(Param.run_id, dialect)),
        select(Tag.run_id, Tag.key, Tag.value).where(in_id_list(Tag.run_id, dialect)),
        select(
            LatestMetric.run_id,
            LatestMetric.key,
            LatestMetric.value,
            LatestMetric.is_nan,
            LatestMetric.timestamp,
            LatestMetric.step,
        ).where(in_id_list(LatestMetric.run_id, dialect)),
        select(DatasetInput.id, DatasetInput.run_id, Dataset.__table__)
        .join(Dataset, Dataset.dataset_uuid == DatasetInput.dataset_uuid)
        .where(in_id_list(DatasetInput.run_id, dialect))
        .order_by(DatasetInput.id),
        select(
            RunModelLink.run_id, RunModelLink.model_id, RunModelLink.direction, RunModelLink.step
        ).where(in_id_list(RunModelLink.run_id, dialect)),
    )


_LOAD_RUNS = StatementCache(_build_load_runs)


async def load_runs(
    s: AsyncSession, run_pks: Sequence[int], *, data: bool = True
) -> list[RunBundle]:
    """Load runs in the order given: six queries however many runs there are (no N+1).

    ``data=False`` loads only the run rows and their model links (two queries): params, tags,
    metrics and dataset inputs are left empty.
    """
    if not run_pks:
        return []
    ids = list(run_pks)
    conn = await s.connection()
    bind = {"ids": id_list_value(ids, dialect_name(s))}
    runs_q, params_q, tags_q, metrics_q, inputs_q, links_q = _LOAD_RUNS(s)
    rows = (await conn.execute(runs_q, bind)).all()
    bundles = {r.id: RunBundle(r, [], [], [], [], [], []) for r in rows}
    if not data:
        await _load_model_links(conn, links_q, bind, bundles)
        return [bundles[i] for i in ids if i in bundles]
    for run_id, key, value in (await conn.execute(params_q, bind)).tuples():
        bundles[run_id].params.append((key, value))
    for run_id, key, value in (await conn.execute(tags_q, bind)).tuples():
        bundles[run_id].tags.append((key, value))
    for m in (await conn.execute(metrics_q, bind)).tuples():
        bundles[m[0]].metrics.append(m)
    inputs = (await conn.execute(inputs_q, bind)).all()
    if inputs:
        input_tags: dict[int, list[tuple[str, str]]] = defaultdict(list)
        for input_id, key, value in await s.execute(
            select(DatasetInputTag.input_id, DatasetInputTag.key, DatasetInputTag.value).where(
                DatasetInputTag.input_id.in_([i.id for i in inputs])
            )
        ):
            input_tags[input_id].append((key, value))
        for i in inputs:
            bundles[i.run_id].dataset_inputs.append((i, input_tags.get(i.id, [])))
    await _load_model_links(conn, links_q, bind, bundles)
    return [bundles[i] for i in ids if i in bundles]


async def _load_model_links(
    conn: Any, links_q: Any, bind: dict[str, Any], bundles: dict[int, RunBundle]
) -> None:
    for run_id, model_id, direction, step in (await conn.execute(links_q, bind)).tuples():
        if direction == "input":
            bundles[run_id].model_inputs.append(model_id)
        else:
            bundles[run_id].model_outputs.append((model_id, step))


async def run_pks_by_uuids(s: AsyncSession, run_uuids: Sequence[str]) -> dict[str, int]:
    """The primary key of each known run id."""
    if not run_uuids:
        return {}
    rows = await s.execute(select(Run.run_uuid, Run.id).where(Run.run_uuid.in_(list(run_uuids))))
    return {r[0]: int(r[1]) for r in rows}
