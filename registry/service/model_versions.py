"""Model versions: create (numbered, source-checked), search, tags, stage transitions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from registry import events, store
from registry.artifacts.manifest import manifest_digest
from registry.artifacts.paths import ArtifactPath, parse_artifact_uri
from registry.errors import ModelVersionNotFound, RegisteredModelNotFound
from registry.events import PointerMove
from registry.schemas import CreateModelVersion, ModelVersionOut, SearchModelVersions, Version
from registry.search import model_version_search_select
from registry.service.history import history_row, stage_changes
from registry.service.integrity import VersionFingerprint
from registry.service.lookups import (
    POINTER_STAGES,
    checked_tags,
    find_model,
    find_version,
    page_fingerprint,
    render_version,
    version_out,
)
from registry.sources import ResolvedSource, resolve_version_source
from registry.validation import (
    ARCHIVING_STAGES,
    DEFAULT_SEARCH_VERSIONS,
    MAX_SEARCH_VERSIONS,
    MAX_VERSION_TAGS,
    canonical_stage,
    parse_version,
    validate_description,
    validate_max_results,
    validate_model_name,
    validate_tag,
)
from tracking.core.auth import ResourceScope
from tracking.core.clock import now_ms
from tracking.core.errors import InvalidParameter, InvalidState, MlflowError, ResourceNotFound
from tracking.core.wire import decode_page_token, encode_page_token

# --- model versions ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _CheckedCreate:
    tags: dict[str, str]
    description: str | None
    model: Any
    resolved: ResolvedSource


async def _check_create(s: AsyncSession, req: CreateModelVersion) -> _CheckedCreate:
    name = validate_model_name(req.name)
    tags = checked_tags(req.tags)
    if len(tags) > MAX_VERSION_TAGS:
        raise InvalidParameter(
            f"A model version can be created with at most {MAX_VERSION_TAGS} tags."
        )
    description = validate_description(req.description)
    model = await find_model(s, name)
    resolved = await resolve_version_source(s, req.source, run_id=req.run_id, model_id=req.model_id)
    return _CheckedCreate(tags, description, model, resolved)


async def model_version_location(s: AsyncSession, req: CreateModelVersion) -> str:
    """Check a create request as :func:`create_model_version` will; return where its files are.

    Read-only: the API calls it first, fingerprints the location outside any transaction, and
    hands the fingerprint to :func:`create_model_version`.
    """
    return (await _check_create(s, req)).resolved.storage_location


async def create_model_version(
    s: AsyncSession,
    req: CreateModelVersion,
    *,
    actor: str,
    fingerprint: VersionFingerprint | None = None,
) -> ModelVersionOut:
    """Register a new version: the next number, status READY, source checked and resolved.

    ``fingerprint`` is the frozen copy of the source's files (see ``registry.service.
    integrity``): the version's files are then the copy, and its digest is the copy's (NULL
    when the source held no files). Without one (no artifact store attached: service tests,
    embedders) the version points at the source location itself, with a NULL digest, and is
    protected by the write guard as versions registered before frozen copies were. The version
    is READY either way: the client polls for READY and has uploaded its files before.
    """
    checked = await _check_create(s, req)
    model, resolved = checked.model, checked.resolved
    if fingerprint is not None and fingerprint.location != resolved.storage_location:
        # Sources resolve to immutable run / logged-model roots, so this needs a concurrent
        # change of the tracking data: refuse rather than record another location's files.
        raise InvalidState(
            f"The source of model version '{model.name}' resolved to another location while "
            "its files were fingerprinted; retry the request."
        )
    files = fingerprint.files if fingerprint is not None else ()
    digest = manifest_digest(files)
    root = (
        fingerprint.frozen_root
        if fingerprint is not None
        else parse_artifact_uri(resolved.storage_location)
    )
    now = now_ms()
    # Resolved before taking the version number, so the model's row lock is held briefly.
    number = await store.next_version(s, model.id, now)
    if number is None:  # deleted while the source was being checked
        raise RegisteredModelNotFound(model.name)
    pk = await store.insert_version(
        s,
        model_id=model.id,
        version=number,
        creation_timestamp=now,
        last_updated_timestamp=now,
        user_id=actor,
        current_stage="None",
        description=checked.description,
        source=resolved.source,
        storage_location=root.to_uri(),
        artifact_root=root.posix,
        manifest_digest=digest,
        run_id=resolved.run_id,
        run_link=req.run_link or None,
        logged_model_id=resolved.model_id,
        status="READY",
    )
    await store.upsert_version_tags(s, pk, checked.tags)
    await store.insert_version_files(s, pk, [(f.path, f.size, f.sha256) for f in files])
    await events.emit(
        s,
        events.ModelVersionCreated(
            model.name,
            number,
            resolved.source,
            root.to_uri(),
            resolved.run_id,
            resolved.model_id,
            actor,
            now,
            tags=tuple(checked.tags.items()),
            description=checked.description,
            manifest_digest=digest,
        ),
    )
    return await render_version(s, pk)


async def get_model_version(
    s: AsyncSession, name: str | None, version: Version | None
) -> ModelVersionOut:
    row = await find_version(s, await find_model(s, name), version)
    return await render_version(s, row.id)


async def update_model_version(
    s: AsyncSession, name: str | None, version: Version | None, description: str | None
) -> ModelVersionOut:
    row = await find_version(s, await find_model(s, name), version)
    await store.update_version(
        s, row.id, description=validate_description(description), last_updated_timestamp=now_ms()
    )
    return await render_version(s, row.id)


async def delete_model_version(
    s: AsyncSession, name: str | None, version: Version | None, *, actor: str
) -> None:
    """Delete a version; stage and alias pointers it held move on, and the history says so."""
    model = await find_model(s, name, lock=True)
    row = await find_version(s, model, version)
    before = await store.stage_holders(s, model.id)
    aliases = sorted(
        a for a, v in (await store.aliases_of_model(s, model.id)).items() if v == row.version
    )
    notes = []
    for alias in aliases:
        notes.append(
            await events.check_pointer_move(
                s,
                PointerMove("delete_version", model.name, "alias", alias, None, row.version, actor),
            )
        )
    if row.current_stage in POINTER_STAGES:
        note = await events.check_pointer_move(
            s,
            PointerMove(
                "delete_version",
                model.name,
                "stage",
                row.current_stage,
                None,
                before.get(row.current_stage),
                actor,
                from_stage=row.current_stage,
            ),
        )
        notes.append(note)
    noted = events.with_note(None, "; ".join(n for n in notes if n) or None)
    now = now_ms()
    await store.delete_aliases_of_version(s, model.id, row.version)
    await store.delete_version(s, row.id)
    await store.update_registered_model(s, model.id, last_updated_timestamp=now)
    after = await store.stage_holders(s, model.id)
    history = stage_changes(model, before, after, row.version, "version_deleted", actor, noted, now)
    history += [
        history_row(
            model, "alias", a, row.version, None, row.version, "version_deleted", actor, noted, now
        )
        for a in aliases
    ]
    await store.insert_pointer_events(s, history)
    await events.emit(
        s,
        events.ModelVersionDeleted(
            model.name, row.version, row.current_stage, tuple(aliases), actor, now
        ),
    )
    for alias in aliases:
        await events.emit(
            s, events.AliasMoved(model.name, alias, row.version, None, actor, None, now)
        )


async def search_model_versions(
    s: AsyncSession, req: SearchModelVersions, *, scope: ResourceScope | None = None
) -> tuple[list[ModelVersionOut], str | None]:
    """One page of versions; ``scope`` (None: all) keeps versions of models the caller reads."""
    limit = validate_max_results(req.max_results, DEFAULT_SEARCH_VERSIONS, MAX_SEARCH_VERSIONS)
    fingerprint = page_fingerprint("mv", req.filter or "", tuple(req.order_by))
    offset = decode_page_token(req.page_token, fingerprint)
    stmt = model_version_search_select(req.filter, list(req.order_by), scope)
    ids = await store.search_ids(s, stmt, offset=offset, limit=limit + 1)
    token = encode_page_token(offset + limit, fingerprint) if len(ids) > limit else None
    return [version_out(b) for b in await store.load_versions(s, ids[:limit])], token


async def set_model_version_tag(
    s: AsyncSession, name: str | None, version: Version | None, key: str | None, value: str | None
) -> None:
    model = await find_model(s, name)
    row = await find_version(s, model, version)
    checked_key, checked_value = validate_tag(key, value)
    now = now_ms()
    await store.upsert_version_tags(s, row.id, {checked_key: checked_value})
    await store.update_version(s, row.id, last_updated_timestamp=now)
    await events.emit(
        s, events.ModelVersionTagSet(model.name, row.version, checked_key, checked_value, now)
    )


async def delete_model_version_tag(
    s: AsyncSession, name: str | None, version: Version | None, key: str | None
) -> None:
    model = await find_model(s, name)
    row = await find_version(s, model, version)
    if not key:
        raise InvalidParameter("Missing value for required parameter 'key'.")
    if not await store.delete_version_tag(s, row.id, key):
        raise ResourceNotFound(
            f"No tag with key '{key}' on model version (name={model.name}, version={row.version})"
        )
    now = now_ms()
    await store.update_version(s, row.id, last_updated_timestamp=now)
    await events.emit(s, events.ModelVersionTagDeleted(model.name, row.version, key, now))


async def transition_stage(
    s: AsyncSession,
    name: str | None,
    version: Version | None,
    stage: str | None,
    archive_existing_versions: bool = False,
    *,
    actor: str,
    comment: str | None = None,
) -> ModelVersionOut:
    """Move a version to ``stage``, optionally archiving the stage's other versions.

    One transaction with the model's row locked: concurrent transitions queue, and readers see
    the state before or after the whole move (never zero or two versions in the stage).
    """
    target = canonical_stage(stage)
    if archive_existing_versions and target not in ARCHIVING_STAGES:
        raise InvalidParameter(
            f"Model version transition cannot archive existing model versions because '{target}' "
            "is not an Active stage. Valid stages are Staging and Production."
        )
    model = await find_model(s, name, lock=True)
    row = await find_version(s, model, version)
    before = await store.stage_holders(s, model.id)
    note = await events.check_pointer_move(
        s,
        PointerMove(
            "transition",
            model.name,
            "stage",
            target,
            row.version,
            before.get(target),
            actor,
            comment,
            from_stage=row.current_stage,
            archive_existing_versions=archive_existing_versions,
        ),
    )
    comment = events.with_note(comment, note)
    now = now_ms()
    archived = await store.move_to_stage(
        s, model.id, row.version, target, archive_others=archive_existing_versions, now=now
    )
    after = await store.stage_holders(s, model.id)
    history = stage_changes(
        model, before, after, row.version, "transition", actor, comment, now, explicit=target
    )
    await store.insert_pointer_events(s, history)
    await events.emit(
        s,
        events.StageTransitioned(
            model.name, row.version, row.current_stage, target, tuple(archived), actor, comment, now
        ),
    )
    return await render_version(s, row.id)


async def get_download_uri(s: AsyncSession, name: str | None, version: Version | None) -> str:
    """Where the version's files are: its frozen copy (``mlflow-artifacts:/mlgate-frozen/…``),
    or for a version registered before frozen copies, the location its source resolved to."""
    checked = validate_model_name(name)
    try:
        number = parse_version(version)
    except MlflowError:
        await find_model(s, checked)  # a missing model is reported first
        raise
    location = await store.version_location(s, checked, number)  # one indexed read
    if location is None:
        await find_version(s, await find_model(s, checked), number)  # names what is missing
        raise ModelVersionNotFound(checked, number)  # deleted in between
    return location


async def version_artifact_root(
    s: AsyncSession, name: str | None, version: Version | None
) -> ArtifactPath:
    """The store path of a version's files (for the artifact layer's model-version downloads)."""
    return parse_artifact_uri(await get_download_uri(s, name, version))


async def versions_of_run(
    s: AsyncSession, name: str | None, run_id: str, limit: int = 100
) -> list[ModelVersionOut]:
    """The model's versions registered from ``run_id``, newest first (at most ``limit``)."""
    model = await find_model(s, name)
    ids = await store.version_ids_of_run(s, model.id, run_id, min(limit, 1000))
    found = {b.row.version: version_out(b) for b in await store.load_versions(s, ids)}
    return [found[v] for v in sorted(found, reverse=True)]


async def versions_with_digests(
    s: AsyncSession,
    name: str | None,
    max_results: int | None = None,
    page_token: str | None = None,
) -> tuple[list[tuple[ModelVersionOut, str | None]], str | None]:
    """One page of a model's versions, newest first, each with its recorded manifest digest."""
    model = await find_model(s, name)
    limit = validate_max_results(max_results, DEFAULT_SEARCH_VERSIONS, MAX_SEARCH_VERSIONS)
    fingerprint = page_fingerprint("model-versions", model.id)
    offset = decode_page_token(page_token, fingerprint)
    ids = await store.search_ids(
        s, store.model_versions_select(model.id), offset=offset, limit=limit + 1
    )
    token = encode_page_token(offset + limit, fingerprint) if len(ids) > limit else None
    bundles = await store.load_versions(s, ids[:limit])
    return [(version_out(b), b.row.manifest_digest) for b in bundles], token
