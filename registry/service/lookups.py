"""Shared by the registry services: finding rows, rendering them, paging fingerprints."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from registry import store
from registry.artifacts.paths import ArtifactPath
from registry.errors import ModelVersionNotFound, RegisteredModelNotFound
from registry.prompts import PROMPT_TAG, is_prompt_tags
from registry.schemas import AliasOut, ModelVersionOut, RegisteredModelOut, TagOut, Version
from registry.sources import (
    LoggedModelSource,
    RegisteredVersionSource,
    RunSource,
    parse_version_source,
)
from registry.validation import parse_version, validate_model_name, validate_tag
from tracking.core.auth import ANONYMOUS as ANONYMOUS_ACTOR
from tracking.core.errors import MlflowError

# The actor recorded when authentication is off (the API passes ``actor_name(request)``).
ANONYMOUS = ANONYMOUS_ACTOR
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
        # MLflow's server always sends these three, "" when unset (the client reads "").
        description=r.description or "",
        run_id=r.run_id or "",
        status_message=r.status_message,
        run_link=r.run_link or "",
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


async def model_is_prompt(s: AsyncSession, model_id: int) -> bool:
    """Whether the registered model is a prompt (its prompt tag is "true"; MLflow's rule)."""
    return is_prompt_tags({PROMPT_TAG: await store.model_tag(s, model_id, PROMPT_TAG) or ""})


def checked_tags(items: Sequence[Any]) -> dict[str, str]:
    return dict(validate_tag(t.key, t.value) for t in items)


# --- lookups for authorization -------------------------------------------------------------------


def source_references(
    source: str | None, run_id: str | None, model_id: str | None
) -> tuple[set[str], set[str], set[str]]:
    """The run ids, logged model ids and registered model names a create-version request
    reads files from.

    Registering a version exposes its source's files to the model's readers, so the caller
    must be able to read each of them. A copy (``models:/<name>/<version>``) needs read on the
    source registered model only: its run_id and model_id must be the source version's own
    (the service checks), whose files the model's readers may already download. An
    unparseable source names nothing here: the service refuses it anyway.
    """
    runs = {run_id} if run_id else set()
    models = {model_id} if model_id else set()
    try:
        parsed = parse_version_source(source)
    except MlflowError:
        return runs, models, set()
    if isinstance(parsed, RegisteredVersionSource):
        return set(), set(), {parsed.uri.name}
    if isinstance(parsed, RunSource):
        runs.add(parsed.run_id)
    elif isinstance(parsed, LoggedModelSource):
        models.add(parsed.model_id)
    return runs, models, set()


async def models_storing(s: AsyncSession, path: ArtifactPath) -> list[str]:
    """Registered models with a version whose files include ``path`` (model readers may
    download them even without access to the experiment that logged them)."""
    return await store.model_names_storing(s, path)


async def run_versions(
    s: AsyncSession, name: str | None, run_id: str, limit: int = 100
) -> tuple[Any, list[ModelVersionOut]]:
    """The model's row and its versions registered from ``run_id``, newest first (at most
    ``limit``); (None, []) when there is no such model."""
    checked = validate_model_name(name)
    model, ids = await store.model_and_version_ids_of_run(s, checked, run_id, min(limit, 1000))
    if model is None:
        return None, []
    found = {b.row.version: version_out(b) for b in await store.load_versions(s, ids)}
    return model, [found[v] for v in sorted(found, reverse=True)]
