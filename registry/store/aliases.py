"""Aliases: which version each of a model's aliases points at."""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from registry.models import RegisteredModelAlias
from registry.store.tables import rowcount
from tracking.core.db import dialect_insert


async def get_alias_version(s: AsyncSession, model_id: int, alias: str) -> int | None:
    found = (
        await s.execute(
            select(RegisteredModelAlias.version).where(
                RegisteredModelAlias.model_id == model_id, RegisteredModelAlias.alias == alias
            )
        )
    ).scalar_one_or_none()
    return None if found is None else int(found)


async def upsert_alias(s: AsyncSession, model_id: int, alias: str, version: int) -> None:
    ins = dialect_insert(s)(RegisteredModelAlias)
    await s.execute(
        ins.values(model_id=model_id, alias=alias, version=version).on_conflict_do_update(
            index_elements=[RegisteredModelAlias.model_id, RegisteredModelAlias.alias],
            set_={"version": ins.excluded.version},
        )
    )


async def delete_alias(s: AsyncSession, model_id: int, alias: str) -> int:
    result = await s.execute(
        delete(RegisteredModelAlias).where(
            RegisteredModelAlias.model_id == model_id, RegisteredModelAlias.alias == alias
        )
    )
    return rowcount(result)


async def aliases_of_model(s: AsyncSession, model_id: int) -> dict[str, int]:
    rows = await s.execute(
        select(RegisteredModelAlias.alias, RegisteredModelAlias.version).where(
            RegisteredModelAlias.model_id == model_id
        )
    )
    return {alias: int(version) for alias, version in rows}


async def delete_aliases_of_version(s: AsyncSession, model_id: int, version: int) -> list[str]:
    result = await s.execute(
        delete(RegisteredModelAlias)
        .where(RegisteredModelAlias.model_id == model_id, RegisteredModelAlias.version == version)
        .returning(RegisteredModelAlias.alias)
    )
    return sorted(result.scalars())
