"""Every SQL statement of the tracking domain. No HTTP and no business rules here."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    Integer,
    Table,
    bindparam,
    delete,
    false,
    func,
    insert,
    literal,
    select,
    text,
    union_all,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from tracking.core.db import (
    StatementCache,
    dialect_insert,
    dialect_name,
    id_list_value,
    in_id_list,
    insert_for,
)
from tracking.models import (
    Dataset,
    DatasetInput,
    DatasetInputTag,
    Experiment,
    ExperimentTag,
    LatestMetric,
    LoggedModel,
    LoggedModelMetric,
    LoggedModelParam,
    LoggedModelTag,
    Metric,
    Param,
    Run,
    RunModelLink,
    Tag,
)


@dataclass(frozen=True, slots=True)
class MetricPoint:
    key: str
    value: float
    timestamp: int
    step: int
    model_id: str | None = None
    dataset_name: str | None = None
    dataset_digest: str | None = None

    @property
    def is_nan(self) -> bool:
        return math.isnan(self.value)

    @property
    def stored_value(self) -> float:
        # SQLite stores a NaN REAL as NULL, so NaN is kept as 0 plus the is_nan flag.
        return 0.0 if math.isnan(self.value) else self.value


@dataclass(frozen=True, slots=True)
class RunHandle:
    """The few columns a write needs to find and check a run."""

    id: int
    run_uuid: str
    experiment_id: int
    lifecycle_stage: str


def _build_param_insert(dialect: str) -> Any:
    ins = insert_for(dialect)
    p = Param.__table__
    return ins(p).on_conflict_do_nothing(index_elements=[p.c.run_id, p.c.key])


def _build_tag_upsert(dialect: str) -> Any:
    ins = insert_for(dialect)
    t = Tag.__table__
    stmt = ins(t)
    return stmt.on_conflict_do_update(
        index_elements=[t.c.run_id, t.c.key], set_={"value": stmt.excluded.value}
    )


_SQLITE_METRIC_INSERT = (
    "INSERT INTO metrics (run_id, key, step, timestamp, value, is_nan, model_id, dataset_name, "
    "dataset_digest) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (run_id, key, step, timestamp, value, is_nan) DO NOTHING"
)
# Keep the maximum (step, timestamp, value): an older point never replaces a newer one.
_SQLITE_LATEST_UPSERT = (
    "INSERT INTO latest_metrics (run_id, key, step, timestamp, value, is_nan) "
    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (run_id, key) DO UPDATE SET step = excluded.step, "
    "timestamp = excluded.timestamp, value = excluded.value, is_nan = excluded.is_nan "
    "WHERE (excluded.step, excluded.timestamp, excluded.value) "
    "> (latest_metrics.step, latest_metrics.timestamp, latest_metrics.value)"
)

_PARAM_INSERT = StatementCache(_build_param_insert)
_TAG_UPSERT = StatementCache(_build_tag_upsert)


# --- experiments -----------------------------------------------------------------------------


async def insert_experiment(
    s: AsyncSession, *, name: str, artifact_location: str | None, now: int
) -> int:
    result = await s.execute(
        insert(Experiment)
        .values(
            name=name,
            artifact_location=artifact_location or "",
            lifecycle_stage="active",
            creation_time=now,
            last_update_time=now,
        )
        .returning(Experiment.experiment_id)
    )
    experiment_id = int(result.scalar_one())
    if not artifact_location:
        await s.execute(
            update(Experiment)
            .where(Experiment.experiment_id == experiment_id)
            .values(artifact_location=f"mlflow-artifacts:/{experiment_id}")
        )
    return experiment_id


@dataclass(frozen=True, slots=True)
class ExperimentIdentity:
    """What authorization needs to know about an experiment."""

    experiment_id: int
    name: str


async def experiment_identity(s: AsyncSession, experiment_id: int) -> ExperimentIdentity | None:
    row = (
        await s.execute(
            select(Experiment.experiment_id, Experiment.name).where(
                Experiment.experiment_id == experiment_id
            )
        )
    ).first()
    return ExperimentIdentity(int(row[0]), row[1]) if row else None


# The common case, one run (every run-scoped request's authorization), as a statement built
# once: no IN-list expansion, and the compiled form is reused.
_EXPERIMENT_OF_RUN = (
    select(Run.run_uuid, Experiment.experiment_id, Experiment.name)
    .join(Experiment, Experiment.experiment_id == Run.experiment_id)
    .where(Run.run_uuid == bindparam("run_uuid"))
)


async def experiments_of_runs(
    s: AsyncSession, run_uuids: Sequence[str]
) -> dict[str, ExperimentIdentity]:
    if not run_uuids:
        return {}
    if len(run_uuids) == 1:
        conn = await s.connection()
        found = (await conn.execute(_EXPERIMENT_OF_RUN, {"run_uuid": run_uuids[0]})).first()
        return {found[0]: ExperimentIdentity(int(found[1]), found[2])} if found else {}
    rows = await s.execute(
        select(Run.run_uuid, Experiment.experiment_id, Experiment.name)
        .join(Experiment, Experiment.experiment_id == Run.experiment_id)
        .where(Run.run_uuid.in_(run_uuids))
    )
    return {r[0]: ExperimentIdentity(int(r[1]), r[2]) for r in rows}


async def experiments_of_logged_models(
    s: AsyncSession, model_ids: Sequence[str]
) -> dict[str, ExperimentIdentity]:
    if not model_ids:
        return {}
    rows = await s.execute(
        select(LoggedModel.model_id, Experiment.experiment_id, Experiment.name)
        .join(Experiment, Experiment.experiment_id == LoggedModel.experiment_id)
        .where(LoggedModel.model_id.in_(model_ids))
    )
    return {r[0]: ExperimentIdentity(int(r[1]), r[2]) for r in rows}


async def experiment_name_taken(s: AsyncSession, name: str) -> bool:
    found = await s.execute(select(Experiment.experiment_id).where(Experiment.name == name))
    return found.first() is not None


async def get_experiments(s: AsyncSession, ids: Sequence[int]) -> list[Any]:
    """Experiment rows in the order of ``ids``, each with a ``tags`` list attribute."""
    if not ids:
        return []
    rows = (
        await s.execute(select(Experiment.__table__).where(Experiment.experiment_id.in_(ids)))
    ).all()
    tags: dict[int, list[tuple[str, str]]] = defaultdict(list)
    tag_rows = await s.execute(
        select(ExperimentTag.experiment_id, ExperimentTag.key, ExperimentTag.value).where(
            ExperimentTag.experiment_id.in_(ids)
        )
    )
    for eid, key, value in tag_rows:
        tags[eid].append((key, value))
    by_id = {r.experiment_id: (r, tags.get(r.experiment_id, [])) for r in rows}
    return [by_id[i] for i in ids if i in by_id]


async def find_experiment_id_by_name(s: AsyncSession, name: str) -> int | None:
    return (
        await s.execute(select(Experiment.experiment_id).where(Experiment.name == name))
    ).scalar_one_or_none()


async def experiment_lifecycle(
    s: AsyncSession, experiment_id: int, *, lock: bool = False
) -> str | None:
    stmt = select(Experiment.lifecycle_stage).where(Experiment.experiment_id == experiment_id)
    if lock:
        stmt = stmt.with_for_update()
    return (await s.execute(stmt)).scalar_one_or_none()


_EXPERIMENT_STAGE_LOCATION = select(Experiment.lifecycle_stage, Experiment.artifact_location).where(
    Experiment.experiment_id == bindparam("experiment_id")
)


async def experiment_stage_and_location(s: AsyncSession, experiment_id: int) -> Any:
    conn = await s.connection()
    result = await conn.execute(_EXPERIMENT_STAGE_LOCATION, {"experiment_id": experiment_id})
    return result.first()


async def update_experiment(s: AsyncSession, experiment_id: int, **values: Any) -> None:
    await s.execute(
        update(Experiment).where(Experiment.experiment_id == experiment_id).values(**values)
    )


async def set_runs_lifecycle_for_experiment(
    s: AsyncSession, experiment_id: int, *, lifecycle_stage: str, deleted_time: int | None
) -> None:
    await s.execute(
        update(Run)
        .where(Run.experiment_id == experiment_id)
        .values(lifecycle_stage=lifecycle_stage, deleted_time=deleted_time)
    )


async def upsert_experiment_tags(
    s: AsyncSession, experiment_id: int, tags: Iterable[tuple[str, str]]
) -> None:
    rows = [{"experiment_id": experiment_id, "key": k, "value": v} for k, v in dict(tags).items()]
    if not rows:
        return
    ins = dialect_insert(s)(ExperimentTag.__table__)
    await s.execute(
        ins.on_conflict_do_update(
            index_elements=[ExperimentTag.experiment_id, ExperimentTag.key],
            set_={"value": ins.excluded.value},
        ),
        rows,
    )


async def delete_experiment_tag(s: AsyncSession, experiment_id: int, key: str) -> int:
    result = await s.execute(
        delete(ExperimentTag).where(
            ExperimentTag.experiment_id == experiment_id, ExperimentTag.key == key
        )
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


# --- runs ------------------------------------------------------------------------------------


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


_RUN_INSERT_FROM_EXPERIMENT = _build_run_insert_from_experiment()


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
    row = (await conn.execute(_RUN_INSERT_FROM_EXPERIMENT, params)).first()
    return None if row is None else (int(row[0]), str(row[1]))


_RUN_HANDLE = select(Run.id, Run.run_uuid, Run.experiment_id, Run.lifecycle_stage).where(
    Run.run_uuid == bindparam("run_uuid")
)


async def get_run_handle(s: AsyncSession, run_uuid: str) -> RunHandle | None:
    conn = await s.connection()
    row = (await conn.execute(_RUN_HANDLE, {"run_uuid": run_uuid})).first()
    return RunHandle(*row) if row else None


async def update_run(s: AsyncSession, run_pk: int, **values: Any) -> None:
    await s.execute(update(Run).where(Run.id == run_pk).values(**values))


async def insert_params_checked(
    s: AsyncSession, run_pk: int, params: dict[str, str]
) -> list[tuple[str, str, str]]:
    """Insert params that are new; return ``(key, existing, attempted)`` for changed values.

    Insert-then-read is race-free: a concurrent writer of the same key either lands first (and
    we see its value) or loses on the primary key.
    """
    if not params:
        return []
    conn = await s.connection()
    await conn.execute(
        _PARAM_INSERT(s), [{"run_id": run_pk, "key": k, "value": v} for k, v in params.items()]
    )
    existing = await conn.execute(
        select(Param.key, Param.value).where(Param.run_id == run_pk, Param.key.in_(list(params)))
    )
    return [(k, v, params[k]) for k, v in existing if v != params[k]]


async def upsert_run_tags(s: AsyncSession, run_pk: int, tags: dict[str, str]) -> None:
    if not tags:
        return
    conn = await s.connection()
    await conn.execute(
        _TAG_UPSERT(s), [{"run_id": run_pk, "key": k, "value": v} for k, v in tags.items()]
    )


async def delete_run_tag(s: AsyncSession, run_pk: int, key: str) -> int:
    result = await s.execute(delete(Tag).where(Tag.run_id == run_pk, Tag.key == key))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


# PostgreSQL: the history rows and the latest-value upsert in ONE statement and one round trip,
# whatever the batch size; each column travels as one array (unnest), so the SQL text (and its
# prepared statement) is the same for 1 point or 1,000. Data-modifying CTEs always run; the
# final SELECT names the run written to (no row: no active run of that id, nothing written).
_PG_METRICS_WRITE_TEMPLATE = """
    WITH run AS ({run}),
    history AS (
        INSERT INTO metrics (run_id, key, step, timestamp, value, is_nan,
                             model_id, dataset_name, dataset_digest)
        SELECT run.id, p.key, p.step, p.ts, p.value, p.is_nan,
               p.model_id, p.dataset_name, p.dataset_digest
        FROM run, unnest(CAST(:keys AS TEXT[]), CAST(:steps AS BIGINT[]), CAST(:tss AS BIGINT[]),
                         CAST(:values AS FLOAT8[]), CAST(:nans AS BOOLEAN[]),
                         CAST(:model_ids AS TEXT[]), CAST(:dataset_names AS TEXT[]),
                         CAST(:dataset_digests AS TEXT[]))
             AS p(key, step, ts, value, is_nan, model_id, dataset_name, dataset_digest)
        ON CONFLICT (run_id, key, step, timestamp, value, is_nan) DO NOTHING
    ),
    latest AS (
        INSERT INTO latest_metrics AS lm (run_id, key, step, timestamp, value, is_nan)
        SELECT run.id, l.key, l.step, l.ts, l.value, l.is_nan
        FROM run, unnest(CAST(:latest_keys AS TEXT[]), CAST(:latest_steps AS BIGINT[]),
                         CAST(:latest_tss AS BIGINT[]), CAST(:latest_values AS FLOAT8[]),
                         CAST(:latest_nans AS BOOLEAN[]))
             AS l(key, step, ts, value, is_nan)
        ON CONFLICT (run_id, key) DO UPDATE
        SET step = excluded.step, timestamp = excluded.timestamp, value = excluded.value,
            is_nan = excluded.is_nan
        WHERE (excluded.step, excluded.timestamp, excluded.value)
              > (lm.step, lm.timestamp, lm.value)
    )
    SELECT id FROM run
"""
_PG_METRICS_WRITE = text(
    _PG_METRICS_WRITE_TEMPLATE.format(run="SELECT CAST(:run_id AS BIGINT) AS id")
)
# The same, finding the run by its uuid: saves the separate run lookup of a metrics-only write.
_PG_METRICS_WRITE_BY_UUID = text(
    _PG_METRICS_WRITE_TEMPLATE.format(
        run="SELECT id FROM runs WHERE run_uuid = :run_uuid AND lifecycle_stage = 'active'"
    )
)


def _pg_metric_arrays(points: Sequence[MetricPoint]) -> dict[str, Any]:
    latest = _latest_points(points)
    return {
        "keys": [p.key for p in points],
        "steps": [p.step for p in points],
        "tss": [p.timestamp for p in points],
        "values": [p.stored_value for p in points],
        "nans": [p.is_nan for p in points],
        "model_ids": [p.model_id for p in points],
        "dataset_names": [p.dataset_name for p in points],
        "dataset_digests": [p.dataset_digest for p in points],
        "latest_keys": [p.key for p in latest],
        "latest_steps": [p.step for p in latest],
        "latest_tss": [p.timestamp for p in latest],
        "latest_values": [p.stored_value for p in latest],
        "latest_nans": [p.is_nan for p in latest],
    }


async def insert_metrics_by_run_uuid(
    s: AsyncSession, run_uuid: str, points: Sequence[MetricPoint]
) -> bool | None:
    """PostgreSQL only: write ``points`` to the ACTIVE run ``run_uuid`` in one statement.

    True when written; False when no active run has that id (nothing written: the caller looks
    the run up to say why); None on SQLite, where the caller takes the usual path.
    """
    if dialect_name(s) != "postgresql":
        return None
    conn = await s.connection()
    params = {"run_uuid": run_uuid, **_pg_metric_arrays(points)}
    return (await conn.execute(_PG_METRICS_WRITE_BY_UUID, params)).first() is not None


def _latest_points(points: Sequence[MetricPoint]) -> list[MetricPoint]:
    """One point per key, its maximum (step, timestamp, value): an upsert may not touch the
    same row twice in one statement."""
    latest: dict[str, MetricPoint] = {}
    for p in points:
        cur = latest.get(p.key)
        if cur is None or (p.step, p.timestamp, p.stored_value) > (
            cur.step,
            cur.timestamp,
            cur.stored_value,
        ):
            latest[p.key] = p
    return list(latest.values())


async def insert_metrics(s: AsyncSession, run_pk: int, points: Sequence[MetricPoint]) -> None:
    """Append to the history and move each key's latest value forward (one statement on
    PostgreSQL, two on SQLite, where a statement costs microseconds and no round trip)."""
    if not points:
        return
    conn = await s.connection()
    if dialect_name(s) == "postgresql":
        await conn.execute(_PG_METRICS_WRITE, {"run_id": run_pk, **_pg_metric_arrays(points)})
        return
    # SQLite: the driver's executemany with plain tuples. A statement costs microseconds here,
    # so SQLAlchemy's per-row parameter processing was most of a 100-metric batch's CPU.
    await conn.exec_driver_sql(
        _SQLITE_METRIC_INSERT,
        [
            (
                run_pk,
                p.key,
                p.step,
                p.timestamp,
                p.stored_value,
                p.is_nan,
                p.model_id,
                p.dataset_name,
                p.dataset_digest,
            )
            for p in points
        ],
    )
    await conn.exec_driver_sql(
        _SQLITE_LATEST_UPSERT,
        [
            (run_pk, p.key, p.step, p.timestamp, p.stored_value, p.is_nan)
            for p in _latest_points(points)
        ],
    )


_METRIC_HISTORY = (
    select(
        Metric.key,
        Metric.value,
        Metric.is_nan,
        Metric.timestamp,
        Metric.step,
        Metric.model_id,
        Metric.dataset_name,
        Metric.dataset_digest,
    )
    .where(Metric.run_id == bindparam("run_id"), Metric.key == bindparam("key"))
    .order_by(Metric.step, Metric.timestamp, Metric.value, Metric.is_nan)
    .offset(bindparam("offset"))
    .limit(bindparam("limit"))
)


async def metric_history(
    s: AsyncSession, run_pk: int, key: str, *, offset: int, limit: int
) -> list[Any]:
    """A page of one metric's points as rows (tuples), in the order of the SELECT's columns.

    Built once and run on the Core connection: a 1,000-point page through the ORM's row
    loading (and named attribute access per row) cost more CPU than the query itself.
    """
    conn = await s.connection()
    params = {"run_id": run_pk, "key": key, "offset": offset, "limit": limit}
    return list((await conn.execute(_METRIC_HISTORY, params)).all())


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


async def run_pk_by_uuid(s: AsyncSession, run_uuid: str) -> int | None:
    return (await s.execute(select(Run.id).where(Run.run_uuid == run_uuid))).scalar_one_or_none()


# --- datasets and model links --------------------------------------------------------------------


async def find_dataset(s: AsyncSession, experiment_id: int, name: str, digest: str) -> str | None:
    return (
        await s.execute(
            select(Dataset.dataset_uuid).where(
                Dataset.experiment_id == experiment_id,
                Dataset.name == name,
                Dataset.digest == digest,
            )
        )
    ).scalar_one_or_none()


# The input tag MLflow sets to say what a dataset was used for ("training", "eval"...).
DATASET_CONTEXT_TAG = "mlflow.data.context"
MAX_DATASET_SUMMARIES = 1000


async def dataset_summaries(s: AsyncSession, experiment_ids: Sequence[int]) -> list[Any]:
    """Distinct (experiment, name, digest, context) of the datasets the experiments' runs
    used, in that order, at most MAX_DATASET_SUMMARIES (MLflow UI's dataset filter)."""
    context = (
        select(DatasetInputTag.value)
        .where(
            DatasetInputTag.input_id == DatasetInput.id,
            DatasetInputTag.key == DATASET_CONTEXT_TAG,
        )
        .scalar_subquery()
    )
    stmt = (
        select(Dataset.experiment_id, Dataset.name, Dataset.digest, context.label("context"))
        .join(DatasetInput, DatasetInput.dataset_uuid == Dataset.dataset_uuid)
        .where(Dataset.experiment_id.in_(list(experiment_ids)))
        .distinct()
        .order_by(Dataset.experiment_id, Dataset.name, Dataset.digest, context)
        .limit(MAX_DATASET_SUMMARIES)
    )
    return list((await s.execute(stmt)).all())


async def insert_dataset(s: AsyncSession, **values: Any) -> None:
    await s.execute(
        dialect_insert(s)(Dataset.__table__)
        .values(**values)
        .on_conflict_do_nothing(
            index_elements=[Dataset.experiment_id, Dataset.name, Dataset.digest]
        )
    )


async def link_dataset_input(
    s: AsyncSession, run_pk: int, dataset_uuid: str, tags: dict[str, str]
) -> None:
    await s.execute(
        dialect_insert(s)(DatasetInput.__table__)
        .values(run_id=run_pk, dataset_uuid=dataset_uuid)
        .on_conflict_do_nothing(index_elements=[DatasetInput.run_id, DatasetInput.dataset_uuid])
    )
    input_id = (
        await s.execute(
            select(DatasetInput.id).where(
                DatasetInput.run_id == run_pk, DatasetInput.dataset_uuid == dataset_uuid
            )
        )
    ).scalar_one()
    if tags:
        ins = dialect_insert(s)(DatasetInputTag.__table__)
        await s.execute(
            ins.on_conflict_do_update(
                index_elements=[DatasetInputTag.input_id, DatasetInputTag.key],
                set_={"value": ins.excluded.value},
            ),
            [{"input_id": input_id, "key": k, "value": v} for k, v in tags.items()],
        )


async def link_models(
    s: AsyncSession, run_pk: int, links: Sequence[tuple[str, int]], direction: str
) -> None:
    if not links:
        return
    ins = dialect_insert(s)(RunModelLink.__table__)
    await s.execute(
        ins.on_conflict_do_update(
            index_elements=[RunModelLink.run_id, RunModelLink.model_id, RunModelLink.direction],
            set_={"step": ins.excluded.step},
        ),
        [{"run_id": run_pk, "model_id": m, "direction": direction, "step": st} for m, st in links],
    )


# --- logged models -------------------------------------------------------------------------------


async def insert_logged_model(s: AsyncSession, **values: Any) -> None:
    await s.execute(insert(LoggedModel).values(**values))


async def get_logged_model_row(s: AsyncSession, model_id: str) -> Any:
    return (
        await s.execute(select(LoggedModel.__table__).where(LoggedModel.model_id == model_id))
    ).first()


async def lock_logged_model_tag(s: AsyncSession, model_id: str, key: str) -> str | None:
    """Lock a logged model's row (PostgreSQL; SQLite has one writer) and read one tag.

    Read-modify-write of a tag (``mlflow.modelVersions``) is then serialised per model, so
    concurrent writers cannot lose each other's entries. None: no such model or no such tag.
    """
    locked = await s.scalar(
        select(LoggedModel.model_id).where(LoggedModel.model_id == model_id).with_for_update()
    )
    if locked is None:
        return None
    value = await s.scalar(
        select(LoggedModelTag.value).where(
            LoggedModelTag.model_id == model_id, LoggedModelTag.key == key
        )
    )
    return None if value is None else str(value)


async def update_logged_model(s: AsyncSession, model_id: str, **values: Any) -> None:
    await s.execute(update(LoggedModel).where(LoggedModel.model_id == model_id).values(**values))


async def upsert_logged_model_tags(s: AsyncSession, model_id: str, tags: dict[str, str]) -> None:
    if not tags:
        return
    ins = dialect_insert(s)(LoggedModelTag.__table__)
    await s.execute(
        ins.on_conflict_do_update(
            index_elements=[LoggedModelTag.model_id, LoggedModelTag.key],
            set_={"value": ins.excluded.value},
        ),
        [{"model_id": model_id, "key": k, "value": v} for k, v in tags.items()],
    )


async def delete_logged_model_tag(s: AsyncSession, model_id: str, key: str) -> int:
    result = await s.execute(
        delete(LoggedModelTag).where(LoggedModelTag.model_id == model_id, LoggedModelTag.key == key)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def insert_logged_model_params(
    s: AsyncSession, model_id: str, params: dict[str, str]
) -> None:
    if not params:
        return
    ins = dialect_insert(s)(LoggedModelParam.__table__)
    await s.execute(
        ins.on_conflict_do_update(
            index_elements=[LoggedModelParam.model_id, LoggedModelParam.key],
            set_={"value": ins.excluded.value},
        ),
        [{"model_id": model_id, "key": k, "value": v} for k, v in params.items()],
    )


async def insert_logged_model_metrics(
    s: AsyncSession, run_uuid: str | None, points: Sequence[MetricPoint]
) -> None:
    rows = [
        {
            "model_id": p.model_id,
            "key": p.key,
            "value": p.stored_value,
            "is_nan": p.is_nan,
            "timestamp": p.timestamp,
            "step": p.step,
            "run_id": run_uuid,
            "dataset_name": p.dataset_name,
            "dataset_digest": p.dataset_digest,
        }
        for p in points
        if p.model_id
    ]
    if not rows:
        return
    await s.execute(
        dialect_insert(s)(LoggedModelMetric.__table__).on_conflict_do_nothing(
            index_elements=[
                LoggedModelMetric.model_id,
                LoggedModelMetric.key,
                LoggedModelMetric.step,
                LoggedModelMetric.timestamp,
                LoggedModelMetric.value,
                LoggedModelMetric.is_nan,
                LoggedModelMetric.run_id,
            ]
        ),
        rows,
    )


async def existing_logged_model_ids(s: AsyncSession, ids: Iterable[str]) -> set[str]:
    wanted = list(set(ids))
    if not wanted:
        return set()
    found = await s.execute(select(LoggedModel.model_id).where(LoggedModel.model_id.in_(wanted)))
    return {r[0] for r in found}


@dataclass(slots=True)
class LoggedModelBundle:
    row: Any
    tags: list[tuple[str, str]]
    params: list[tuple[str, str]]
    metrics: list[Any]


async def load_logged_models(s: AsyncSession, ids: Sequence[str]) -> list[LoggedModelBundle]:
    if not ids:
        return []
    wanted = list(ids)
    rows = (
        await s.execute(select(LoggedModel.__table__).where(LoggedModel.model_id.in_(wanted)))
    ).all()
    out = {r.model_id: LoggedModelBundle(r, [], [], []) for r in rows}
    for mid, key, value in await s.execute(
        select(LoggedModelTag.model_id, LoggedModelTag.key, LoggedModelTag.value).where(
            LoggedModelTag.model_id.in_(wanted)
        )
    ):
        out[mid].tags.append((key, value))
    for mid, key, value in await s.execute(
        select(LoggedModelParam.model_id, LoggedModelParam.key, LoggedModelParam.value).where(
            LoggedModelParam.model_id.in_(wanted)
        )
    ):
        out[mid].params.append((key, value))
    for m in await s.execute(
        select(LoggedModelMetric.__table__)
        .where(LoggedModelMetric.model_id.in_(wanted))
        .order_by(LoggedModelMetric.id)
    ):
        out[m.model_id].metrics.append(m)
    return [out[i] for i in wanted if i in out]


async def count_rows(s: AsyncSession, table: Any) -> int:
    return int((await s.execute(select(func.count()).select_from(table))).scalar_one())


# --- charts: run lookups and downsampled metric histories -----------------------------------------
# Chart queries never send a whole history to the caller: the database buckets it by step range.


async def run_pks_by_uuids(s: AsyncSession, run_uuids: Sequence[str]) -> dict[str, int]:
    """The primary key of each known run id."""
    if not run_uuids:
        return {}
    rows = await s.execute(select(Run.run_uuid, Run.id).where(Run.run_uuid.in_(list(run_uuids))))
    return {r[0]: int(r[1]) for r in rows}


async def metric_step_ranges(
    s: AsyncSession, run_pks: Sequence[int], keys: Sequence[str] | None = None
) -> list[tuple[int, str, int, int]]:
    """``(run_pk, key, first step, last step)`` of each logged metric of these runs.

    The last step comes from ``latest_metrics`` (its row holds the maximum step) and the first
    from an index seek on the history, so no history row is scanned.
    """
    if not run_pks:
        return []
    first_step = (
        select(func.min(Metric.step))
        .where(Metric.run_id == LatestMetric.run_id, Metric.key == LatestMetric.key)
        .scalar_subquery()
    )
    stmt = select(LatestMetric.run_id, LatestMetric.key, first_step, LatestMetric.step).where(
        LatestMetric.run_id.in_(list(run_pks))
    )
    if keys is not None:
        stmt = stmt.where(LatestMetric.key.in_(list(keys)))
    rows = await s.execute(stmt.order_by(LatestMetric.run_id, LatestMetric.key))
    return [(int(r[0]), r[1], int(r[2]), int(r[3])) for r in rows if r[2] is not None]


@dataclass(frozen=True, slots=True)
class MetricBucket:
    """One step range of a history: its first and last step, lowest and highest value, size."""

    series: int
    bucket: int
    first_step: int
    last_step: int
    min_value: float
    max_value: float
    points: int


async def metric_history_buckets(
    s: AsyncSession, series: Sequence[tuple[int, str, int, int]]
) -> list[MetricBucket]:
    """Min-max downsampling of several histories in one statement.

    ``series`` holds ``(run_pk, key, origin, width)``: history points (NaN excluded) are grouped
    into buckets ``(step - origin) / width`` (integer division on SQLite and PostgreSQL alike),
    and each bucket keeps its extremes, so a one-step spike survives any zoom level. Results
    are ordered by series (the index in ``series``) then bucket.
    """

    if not series:
        return []
    parts = []
    for index, (run_pk, key, origin, width) in enumerate(series):
        bucket = ((Metric.step - literal(origin, BigInteger)) // literal(width, BigInteger)).label(
            "bucket"
        )
        parts.append(
            select(
                literal(index, Integer).label("series"),
                bucket,
                func.min(Metric.step),
                func.max(Metric.step),
                func.min(Metric.value),
                func.max(Metric.value),
                func.count(),
            )
            .where(Metric.run_id == run_pk, Metric.key == key, Metric.is_nan == false())
            .group_by(bucket)
        )
    if len(parts) == 1:
        stmt: Any = parts[0].order_by("bucket")
    else:
        stmt = union_all(*parts).order_by("series", "bucket")
    rows = await s.execute(stmt)
    return [
        MetricBucket(int(r[0]), int(r[1]), int(r[2]), int(r[3]), float(r[4]), float(r[5]), r[6])
        for r in rows
    ]


async def metric_point_counts(
    s: AsyncSession, run_pks: Sequence[int], keys: Sequence[str] | None = None
) -> dict[tuple[int, str], int]:
    """How many history points (NaN included) each (run, key) has."""
    if not run_pks:
        return {}
    stmt = select(Metric.run_id, Metric.key, func.count()).where(Metric.run_id.in_(list(run_pks)))
    if keys is not None:
        stmt = stmt.where(Metric.key.in_(list(keys)))
    rows = await s.execute(stmt.group_by(Metric.run_id, Metric.key))
    return {(int(r[0]), r[1]): int(r[2]) for r in rows}


@dataclass(frozen=True, slots=True)
class MetricSeries:
    """A metric history for charts: at most the requested number of (step, value) points.

    ``total`` counts the history's non-NaN points; ``downsampled`` says points were merged.
    """

    run_id: str
    key: str
    steps: list[int]
    values: list[float]
    total: int
    downsampled: bool


async def recent_keys(
    s: AsyncSession, experiment_id: int, *, runs: int, limit: int
) -> dict[str, list[str]]:
    """Distinct metric, param and tag keys of the experiment's ``runs`` newest active runs,
    at most ``limit`` each (bounded work however big the experiment)."""
    recent = (
        select(Run.id)
        .where(Run.experiment_id == experiment_id, Run.lifecycle_stage == "active")
        .order_by(Run.start_time.desc())
        .limit(runs)
        .scalar_subquery()
    )
    out: dict[str, list[str]] = {}
    for kind, table in (("metrics", LatestMetric), ("params", Param), ("tags", Tag)):
        stmt = (
            select(table.key)
            .where(table.run_id.in_(recent))
            .distinct()
            .order_by(table.key)
            .limit(limit)
        )
        out[kind] = list((await s.execute(stmt)).scalars())
    return out
