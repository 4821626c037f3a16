"""Shared by the registry services: finding rows, rendering them, paging fingerprints."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from registry import store
from registry.errors import ModelVersionNotFound, RegisteredModelNotFound
from registry.schemas import AliasOut, ModelVersionOut, RegisteredModelOut, TagOut, Version
from registry.validation import parse_version, validate_model_name, validate_tag

# TODO(identity issue): the API passes this until requests carry an authenticated user.
ANONYMOUS = "anonymous"
# Stages that are pointers (``models:/name/<stage>``); "None" means "not staged".
POINTER_STAGES = ("Staging", "Production", "Archived")


# --- rendering -----------------------------------------------------------------------------------


def version_out(b: store.VersionBundle) -> ModelVersionOut:
    r = b.row
    return ModelVersionOut(
        name=r.model_name,
        version=str(r.version),
        creation_timestamp=r.creation_timestamp,
        last_updated_timestamp=r.last_updated_timestamp,
        current_stage=r.current_stage,
        source=r.source,
        status=r.status,
        user_id=r.user_id,
        description=r.description,
        run_id=r.run_id,
        status_message=r.status_message,
        run_link=r.run_link,
        model_id=r.logged_model_id,
        tags=[TagOut(k, v) for k, v in b.tags],
        aliases=list(b.aliases),
    )


def model_out(b: store.ModelBundle) -> RegisteredModelOut:
    r = b.row
    return RegisteredModelOut(
        name=r.name,
        creation_timestamp=r.creation_timestamp,
        last_updated_timestamp=r.last_updated_timestamp,
        user_id=r.user_id,
        description=r.description,
        latest_versions=[version_out(v) for v in b.latest_versions],
        tags=[TagOut(k, v) for k, v in b.tags],
        aliases=[AliasOut(alias, str(version)) for alias, version in b.aliases],
    )


def page_fingerprint(*parts: object) -> str:
    return hashlib.blake2s(repr(parts).encode(), digest_size=6).hexdigest()


# --- lookups -------------------------------------------------------------------------------------


async def find_model(s: AsyncSession, name: str | None, *, lock: bool = False) -> Any:
    """The model's row; ``lock`` serialises this request with every other pointer change."""
    checked = validate_model_name(name)
    row = await store.get_model_row(s, checked, lock=lock)
    if row is None:
        raise RegisteredModelNotFound(checked)
    return row


async def find_version(s: AsyncSession, model: Any, version: Version | None) -> Any:
    number = parse_version(version)
    row = await store.get_version_row(s, model.id, number)
    if row is None:
        raise ModelVersionNotFound(model.name, number)
    return row


async def render_model(s: AsyncSession, model_id: int) -> RegisteredModelOut:
    return model_out((await store.load_registered_models(s, [model_id]))[0])


async def render_version(s: AsyncSession, version_pk: int) -> ModelVersionOut:
    return version_out((await store.load_versions(s, [version_pk]))[0])


def checked_tags(items: Sequence[Any]) -> dict[str, str]:
    return dict(validate_tag(t.key, t.value) for t in items)
