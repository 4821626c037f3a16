"""What a stage or alias pointer names right now, read cheaply for watchers and drift checks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from registry import store
from registry.service.lookups import find_model


@dataclass(frozen=True, slots=True)
class PointerState:
    """A pointer of one model: the version it names (None: nothing), where its files are, and
    their frozen manifest digest. ``model_id`` tells a deleted-and-recreated model apart."""

    model_id: int
    name: str
    version: int | None
    storage_location: str | None
    digest: str | None


async def pointer_state_of(
    s: AsyncSession, model_id: int, name: str, *, stage: str | None, alias: str | None
) -> PointerState:
    """The state of a stage (``stage``) or alias (``alias``) pointer of a known model."""
    row = await store.pointer_target(s, model_id, stage=stage, alias=alias)
    if row is None:
        return PointerState(model_id, name, None, None, None)
    return PointerState(model_id, name, int(row.version), row.storage_location, row.manifest_digest)


async def pointer_state(
    s: AsyncSession, name: str | None, *, stage: str | None, alias: str | None
) -> PointerState:
    """The state of a pointer of the model named ``name`` (404 when there is no such model)."""
    model = await find_model(s, name)
    return await pointer_state_of(s, int(model.id), str(model.name), stage=stage, alias=alias)


async def model_id_of(s: AsyncSession, name: str | None) -> tuple[int, str]:
    """The id and stored name of a model (404 when there is none)."""
    model = await find_model(s, name)
    return int(model.id), str(model.name)


async def model_names(s: AsyncSession, model_ids: Sequence[int]) -> dict[int, str]:
    """Names of existing models by id."""
    return await store.model_names(s, model_ids)
