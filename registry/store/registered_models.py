"""Registered models and their tags: every SQL statement about them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, exists, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from registry.models import ModelVersion, RegisteredModel, RegisteredModelTag
from registry.store.tables import RM, rowcount
from tracking.core.auth import ResourceScope
from tracking.core.db import dialect_insert
from tracking.search.sql import fnmatch_match, scope_predicate


async def patterns_with_models(
    s: AsyncSession, patterns: Sequence[str], scope: ResourceScope
) -> set[str]:
    """Which fnmatch ``patterns`` match at least one model ``scope`` lets through (one query:
    an EXISTS per pattern)."""
    if not patterns:
        return set()
    checks = [
        exists(
            select(RegisteredModel.id).where(
                fnmatch_match(RegisteredModel.name, pattern),
                scope_predicate(scope, RegisteredModel.name),
            )
        ).label(f"p{index}")
        for index, pattern in enumerate(patterns)
    ]
    row = (await s.execute(select(*checks))).one()
    return {pattern for pattern, hit in zip(patterns, row, strict=True) if hit}


async def insert_registered_model(
    s: AsyncSession, *, name: str, user_id: str, description: str | None, now: int
) -> int | None:
    """Insert a model; None when the name is taken (race-free: ON CONFLICT DO NOTHING)."""
    result = await s.execute(
        dialect_insert(s)(RegisteredModel)
        .values(
            name=name,
            creation_timestamp=now,
            last_updated_timestamp=now,
            user_id=user_id,
            description=description,
            last_version=0,
        )
        .on_conflict_do_nothing(index_elements=[RegisteredModel.name])
        .returning(RegisteredModel.id)
    )
    found = result.scalar_one_or_none()
    return None if found is None else int(found)


async def get_model_row(s: AsyncSession, name: str, *, lock: bool = False) -> Any:
    """The model's row, or None. ``lock`` takes its row lock until commit (PostgreSQL).

    FOR NO KEY UPDATE, not FOR UPDATE: it serialises every pointer change of this model but
    does not block concurrent inserts of child rows (tags, versions), whose foreign-key checks
    take KEY SHARE. SQLite ignores it: its writers are already serialised by BEGIN IMMEDIATE.
    """
    stmt = select(RM).where(RegisteredModel.name == name)
    if lock:
        stmt = stmt.with_for_update(key_share=True)
    return (await s.execute(stmt)).first()


async def update_registered_model(s: AsyncSession, model_id: int, **values: Any) -> None:
    await s.execute(update(RegisteredModel).where(RegisteredModel.id == model_id).values(**values))


async def rename_registered_model(s: AsyncSession, model_id: int, new_name: str, now: int) -> bool:
    """Rename; False when another model holds ``new_name`` (the unique index decides races)."""
    try:
        async with s.begin_nested():
            await s.execute(
                update(RegisteredModel)
                .where(RegisteredModel.id == model_id)
                .values(name=new_name, last_updated_timestamp=now)
            )
            # MLflow's rename touches every version of the model too.
            await s.execute(
                update(ModelVersion)
                .where(ModelVersion.model_id == model_id)
                .values(last_updated_timestamp=now)
            )
    except IntegrityError:
        return False
    return True


async def delete_registered_model(s: AsyncSession, model_id: int) -> None:
    # Versions, tags and aliases go by ON DELETE CASCADE; history rows keep their model name.
    await s.execute(delete(RegisteredModel).where(RegisteredModel.id == model_id))


async def upsert_model_tags(s: AsyncSession, model_id: int, tags: dict[str, str]) -> None:
    if not tags:
        return
    ins = dialect_insert(s)(RegisteredModelTag)
    await s.execute(
        ins.on_conflict_do_update(
            index_elements=[RegisteredModelTag.model_id, RegisteredModelTag.key],
            set_={"value": ins.excluded.value},
        ),
        [{"model_id": model_id, "key": k, "value": v} for k, v in tags.items()],
    )


async def model_tag(s: AsyncSession, model_id: int, key: str) -> str | None:
    """The value of one tag of a registered model, or None (one primary-key lookup)."""
    stmt = select(RegisteredModelTag.value).where(
        RegisteredModelTag.model_id == model_id, RegisteredModelTag.key == key
    )
    return (await s.execute(stmt)).scalar_one_or_none()


async def delete_model_tag(s: AsyncSession, model_id: int, key: str) -> int:
    result = await s.execute(
        delete(RegisteredModelTag).where(
            RegisteredModelTag.model_id == model_id, RegisteredModelTag.key == key
        )
    )
    return rowcount(result)
