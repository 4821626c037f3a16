"""Runs: start, look up, update, params and tags, and loading runs with their data."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    Table,
    Text,
    bindparam,
    delete,
    func,
    insert,
    literal,
    null,
    select,
    union_all,
    update,
)
from sqlalchemy import cast as cast_
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


# A run found by its id with its params, tags, latest metrics and model links, in two reads
# (the row, then one UNION ALL of the four child tables): what evaluating a run against a
# policy and resolving a ``runs:/`` source need. Dataset inputs are not read.
_RUN_BY_UUID = select(Run.__table__).where(Run.run_uuid == bindparam("run_uuid"))
_NO_TEXT, _NO_FLOAT = cast_(null(), Text), cast_(null(), Float)
_NO_BOOL, _NO_INT = cast_(null(), Boolean), cast_(null(), BigInteger)
_CHILD_PARAM, _CHILD_TAG, _CHILD_METRIC, _CHILD_LINK = 0, 1, 2, 3
_RUN_LINKS = select(
    literal(_CHILD_LINK).label("kind"), RunModelLink.model_id.label("key"),
    RunModelLink.direction.label("text"), _NO_FLOAT.label("value"), _NO_BOOL.label("is_nan"),
    _NO_INT.label("timestamp"), RunModelLink.step.label("step"),
).where(RunModelLink.run_id == bindparam("run_pk"))  # fmt: skip
_RUN_CHILDREN = union_all(
    select(literal(_CHILD_PARAM), Param.key, Param.value, _NO_FLOAT, _NO_BOOL, _NO_INT, _NO_INT)
    .where(Param.run_id == bindparam("run_pk")),
    select(literal(_CHILD_TAG), Tag.key, Tag.value, _NO_FLOAT, _NO_BOOL, _NO_INT, _NO_INT)
    .where(Tag.run_id == bindparam("run_pk")),
    select(literal(_CHILD_METRIC), LatestMetric.key, _NO_TEXT, LatestMetric.value,
           LatestMetric.is_nan, LatestMetric.timestamp, LatestMetric.step)
    .where(LatestMetric.run_id == bindparam("run_pk")),
    _RUN_LINKS,
)  # fmt: skip


async def load_run_by_uuid(
    s: AsyncSession, run_uuid: str, *, data: bool = True
) -> RunBundle | None:
    """A run with its params, tags, latest metrics and model links (dataset inputs left
    empty), in two queries; None when no run has that id. ``data=False``: the run and its
    model links only."""
    conn = await s.connection()
    row = (await conn.execute(_RUN_BY_UUID, {"run_uuid": run_uuid})).first()
    if row is None:
        return None
    bundle = RunBundle(row, [], [], [], [], [], [])
    children = await conn.execute(_RUN_CHILDREN if data else _RUN_LINKS, {"run_pk": row.id})
    for kind, key, text, value, is_nan, timestamp, step in children.tuples():
        if kind == _CHILD_PARAM:
            bundle.params.append((key, text))
        elif kind == _CHILD_TAG:
            bundle.tags.append((key, text))
        elif kind == _CHILD_METRIC:
            bundle.metrics.append((row.id, key, value, bool(is_nan), timestamp, step))
        elif text == "input":
            bundle.model_inputs.append(key)
        else:
            bundle.model_outputs.append((key, step))
    return bundle


async def run_pks_by_uuids(s: AsyncSession, run_uuids: Sequence[str]) -> dict[str, int]:
    """The primary key of each known run id."""
    if not run_uuids:
        return {}
    rows = await s.execute(select(Run.run_uuid, Run.id).where(Run.run_uuid.in_(list(run_uuids))))
    return {r[0]: int(r[1]) for r in rows}
