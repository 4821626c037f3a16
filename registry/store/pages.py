"""Reads only the web UI's model pages make."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Select, and_, false, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from registry.models import ModelVersion, PointerEvent, RegisteredModel, RegisteredModelAlias
from registry.store.loading import versions_by_alias


def model_versions_select(model_id: int) -> Select:
    """Ids of one model's versions, newest first (the model page's versions table)."""
    return (
        select(ModelVersion.id)
        .where(ModelVersion.model_id == model_id)
        .order_by(ModelVersion.version.desc())
    )


async def model_ids_by_names(s: AsyncSession, names: Sequence[str]) -> dict[str, int]:
    if not names:
        return {}
    rows = await s.execute(
        select(RegisteredModel.name, RegisteredModel.id).where(
            RegisteredModel.name.in_(sorted(set(names)))
        )
    )
    return {str(name): int(pk) for name, pk in rows}


def alias_targets_select(pairs: Sequence[tuple[int, str]]) -> Select:
    """Ids of the versions several (model id, alias) pairs point at, in one statement."""
    wanted = [
        and_(RegisteredModelAlias.model_id == model_id, RegisteredModelAlias.alias == alias)
        for model_id, alias in pairs
    ]
    return versions_by_alias().where(or_(*wanted) if wanted else false())


async def pointer_names(s: AsyncSession, model_id: int, limit: int) -> list[tuple[str, str]]:
    """The distinct (kind, pointer) pairs a model's history mentions, stages first."""
    stmt = (
        select(PointerEvent.pointer_kind, PointerEvent.pointer)
        .where(PointerEvent.model_id == model_id)
        .group_by(PointerEvent.pointer_kind, PointerEvent.pointer)
        .order_by(PointerEvent.pointer_kind.desc(), PointerEvent.pointer)
        .limit(limit)
    )
    return [(str(kind), str(pointer)) for kind, pointer in await s.execute(stmt)]
