"""Experiments and their tags, and which experiment a run or logged model belongs to."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from tracking.models import Experiment, ExperimentTag, LatestMetric, LoggedModel, Param, Run, Tag
from tracking.store.key_values import KeyValueTable, write_key_values


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


EXPERIMENT_TAGS = KeyValueTable(ExperimentTag.__table__, "experiment_id")


async def upsert_experiment_tags(
    s: AsyncSession, experiment_id: int, tags: Iterable[tuple[str, str]]
) -> None:
    # A repeated key keeps its last value, as the request listed them.
    await write_key_values(s, EXPERIMENT_TAGS, experiment_id, dict(tags))


async def delete_experiment_tag(s: AsyncSession, experiment_id: int, key: str) -> int:
    result = await s.execute(
        delete(ExperimentTag).where(
            ExperimentTag.experiment_id == experiment_id, ExperimentTag.key == key
        )
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


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
