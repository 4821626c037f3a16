"""Logged models: rows, tags, params and metrics."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from tracking.core.db import dialect_insert
from tracking.models import LoggedModel, LoggedModelMetric, LoggedModelParam, LoggedModelTag
from tracking.store.key_values import KeyValueTable, write_key_values
from tracking.store.metrics import MetricPoint

LOGGED_MODEL_TAGS = KeyValueTable(LoggedModelTag.__table__, "model_id")
LOGGED_MODEL_PARAMS = KeyValueTable(LoggedModelParam.__table__, "model_id")


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
    await write_key_values(s, LOGGED_MODEL_TAGS, model_id, tags)


async def delete_logged_model_tag(s: AsyncSession, model_id: str, key: str) -> int:
    result = await s.execute(
        delete(LoggedModelTag).where(LoggedModelTag.model_id == model_id, LoggedModelTag.key == key)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def insert_logged_model_params(
    s: AsyncSession, model_id: str, params: dict[str, str]
) -> None:
    # Unlike a run's, a logged model's param takes the latest value (as before: MLflow's
    # server writes logged-model params without an immutability check).
    await write_key_values(s, LOGGED_MODEL_PARAMS, model_id, params)


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
