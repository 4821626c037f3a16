"""Model versions: create (numbered, source-checked), search, tags, stage transitions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from registry import events, store
from registry.artifacts.freeze import EMPTY_ROOT, tree_root_of
from registry.artifacts.manifest import manifest_digest
from registry.artifacts.paths import ArtifactPath, parse_artifact_uri
from registry.errors import InvalidSource, ModelVersionNotFound, RegisteredModelNotFound
from registry.events import PointerMove
from registry.prompts import (
    PROMPT_SOURCE_PLACEHOLDERS,
    PromptVersionOutsidePrompt,
    check_prompt_source,
    is_prompt_request,
)
from registry.schemas import CreateModelVersion, ModelVersionOut, SearchModelVersions, Version
from registry.search import PROMPT_TAG, model_version_search_select
from registry.service.history import history_row, stage_changes
from registry.service.integrity import VersionFingerprint, find_by_uri
from registry.service.lookups import (
    POINTER_STAGES,
    checked_tags,
    find_model,
    find_version,
    model_is_prompt,
    page_fingerprint,
    render_version,
    version_out,
)
from registry.sources import (
    RegisteredVersionSource,
    ResolvedSource,
    parse_version_source,
    resolve_version_source,
)
from registry.validation import (
    DEFAULT_SEARCH_VERSIONS,
    MAX_SEARCH_VERSIONS,
    MAX_VERSION_TAGS,
    parse_version,
    validate_description,
    validate_max_results,
    validate_model_name,
    validate_tag,
)
from tracking import service as tracking
from tracking.core.auth import ResourceScope
from tracking.core.clock import now_ms
from tracking.core.db import dialect_name
from tracking.core.driver import session_rows
from tracking.core.errors import InvalidParameter, InvalidState, MlflowError, ResourceNotFound
from tracking.core.object_uris import S3Location, is_s3_uri
from tracking.core.wire import decode_page_token, encode_page_token
from tracking.schemas import RunOut

# --- model versions ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KnownSource:
    """Rows a caller already read in this transaction, not read again to register: the
    model's row (``run_versions``) and the source's run with its model outputs."""

    model: Any = None
    run: RunOut | None = None


@dataclass(frozen=True, slots=True)
class _CheckedCreate:
    tags: dict[str, str]
    description: str | None
    model: Any
    resolved: ResolvedSource
    # The row of the registered version a copy's source names (copy_model_version), else None.
    copy_of: Any = None


async def _resolve_copy(
    s: AsyncSession, parsed: RegisteredVersionSource, req: CreateModelVersion
) -> tuple[ResolvedSource, Any]:
    """A ``models:/<name>/<version|stage|latest>`` or ``@alias`` source: the version it names.

    Like MLflow's server, the copy stores the source as ``models:/<name>/<version>`` and
    inherits the source version's run and logged model; a run_id or model_id sent with it
    must match them. The copy's files are the source version's frozen copy (shared, never
    re-read from the run), so nothing is fingerprinted again.
    """
    bundle = await find_by_uri(s, parsed.uri, unknown_alias_invalid=True)
    src = bundle.row
    canonical = f"models:/{src.model_name}/{src.version}"
    if (await store.registered_model_tag(s, src.model_id, PROMPT_TAG) or "").lower() == "true":
        raise InvalidSource(canonical, "prompt versions cannot be used as model version sources")
    if (req.run_id is not None and req.run_id != (src.run_id or "")) or (
        req.model_id is not None and req.model_id != (src.logged_model_id or "")
    ):
        raise InvalidParameter(
            f"Invalid model version source: '{req.source}'. The run_id and model_id request "
            "parameters must match the referenced model version."
        )
    resolved = ResolvedSource(canonical, src.storage_location, src.run_id, src.logged_model_id)
    return resolved, src


async def _check_create(
    s: AsyncSession,
    req: CreateModelVersion,
    external: Sequence[S3Location] = (),
    *,
    known: KnownSource | None = None,
) -> _CheckedCreate:
    name = validate_model_name(req.name)
    tags = checked_tags(req.tags)
    if len(tags) > MAX_VERSION_TAGS:
        raise InvalidParameter(
            f"A model version can be created with at most {MAX_VERSION_TAGS} tags."
        )
    description = validate_description(req.description)
    reused = known.model if known is not None else None
    model = reused if reused is not None and reused.name == name else await find_model(s, name)
    if is_prompt_request(req.tags):
        return _CheckedCreate(tags, description, model, await _prompt_source(s, model, req))
    parsed = parse_version_source(req.source)
    if isinstance(parsed, RegisteredVersionSource):
        resolved, src = await _resolve_copy(s, parsed, req)
        return _CheckedCreate(tags, description, model, resolved, src)
    resolved = await resolve_version_source(
        s,
        req.source,
        run_id=req.run_id,
        model_id=req.model_id,
        external=external,
        run=known.run if known is not None else None,
    )
    return _CheckedCreate(tags, description, model, resolved)


async def _prompt_source(s: AsyncSession, model: Any, req: CreateModelVersion) -> ResolvedSource:
    """A prompt version: its placeholder source, no files (see ``registry.prompts``)."""
    source = check_prompt_source(req.source)
    if not await model_is_prompt(s, model.id):
        raise PromptVersionOutsidePrompt(model.name)
    run_id, model_id = req.run_id or None, req.model_id or None
    # Lineage the client chose to send must still name something that exists.
    try:
        if run_id is not None:
            await tracking.get_run(s, run_id)
        if model_id is not None:
            await tracking.get_logged_model(s, model_id)
    except ResourceNotFound as exc:
        raise InvalidParameter(f"Invalid prompt version lineage: {exc.message}") from None
    return ResolvedSource(source, EMPTY_ROOT.to_uri(), run_id, model_id)


def _is_prompt_version(row: Any) -> bool:
    return row.source in PROMPT_SOURCE_PLACEHOLDERS and row.artifact_root == EMPTY_ROOT.posix


async def model_version_location(
    s: AsyncSession,
    req: CreateModelVersion,
    *,
    external: Sequence[S3Location] = (),
    known: KnownSource | None = None,
) -> str | None:
    """Check a create request as :func:`create_model_version` will; return where its files are.

    Read-only: the API calls it first, fingerprints the location outside any transaction, and
    hands the fingerprint to :func:`create_model_version`. ``None``: nothing to fingerprint
    (a prompt version has no files; a copy of a registered version shares that version's frozen
    files).
    """
    checked = await _check_create(s, req, external, known=known)
    if checked.copy_of is not None or checked.resolved.storage_location == EMPTY_ROOT.to_uri():
        return None
    return checked.resolved.storage_location


async def create_model_version(
    s: AsyncSession,
    req: CreateModelVersion,
    *,
    actor: str,
    fingerprint: VersionFingerprint | None = None,
    external: Sequence[S3Location] = (),
) -> ModelVersionOut:
    """Register a new version (see :func:`register_version`) and render it."""
    pk, _ = await register_version(s, req, actor=actor, fingerprint=fingerprint, external=external)
    return await render_version(s, pk)


async def register_version(
    s: AsyncSession,
    req: CreateModelVersion,
    *,
    actor: str,
    fingerprint: VersionFingerprint | None = None,
    external: Sequence[S3Location] = (),
    known: KnownSource | None = None,
) -> tuple[int, int]:
    """Register a new version: the next number, status READY, source checked and resolved.
    Returns its (row id, version number), for callers that need no rendered version.

    ``fingerprint`` is the frozen copy of the source's files (see ``registry.service.
    integrity``): the version's files are then the copy, and its digest is the copy's (NULL
    when the source held no files). Without one (no artifact store attached: service tests,
    embedders) the version points at the source location itself, with a NULL digest, and is
    protected by the write guard as versions registered before frozen copies were. The version
    is READY either way: the client polls for READY and has uploaded its files before.
    A copy of a registered version (``models:/name/3``) shares that version's files, digest and
    manifest rows instead. ``known``: rows the caller already read in this transaction.
    """
    checked = await _check_create(s, req, external, known=known)
    model, resolved, src = checked.model, checked.resolved, checked.copy_of
    if src is not None:
        files = [(r.path, int(r.size), r.sha256) for r in await store.version_files(s, src.id)]
        return await _insert_version(
            s,
            checked,
            _Files(str(src.storage_location), src.artifact_root, src.manifest_digest, files),
            actor=actor,
            run_link=req.run_link,
        )
    if fingerprint is not None and fingerprint.location != resolved.storage_location:
        # Sources resolve to immutable run / logged-model roots, so this needs a concurrent
        # change of the tracking data: refuse rather than record another location's files.
        raise InvalidState(
            f"The source of model version '{model.name}' resolved to another location while "
            "its files were fingerprinted; retry the request."
        )
    if fingerprint is None and is_s3_uri(resolved.storage_location):
        # An external source is only ever registered through its copy.
        raise InvalidState("External sources can be registered only with an artifact store.")
    entries = fingerprint.files if fingerprint is not None else ()
    root = (
        fingerprint.frozen_root
        if fingerprint is not None
        else parse_artifact_uri(resolved.storage_location)
    )
    served = fingerprint.frozen_location if fingerprint is not None else root
    files = [(f.path, f.size, f.sha256) for f in entries]
    out = await _insert_version(
        s,
        checked,
        _Files(served.to_uri(), root.posix, manifest_digest(entries), files),
        actor=actor,
        run_link=req.run_link,
    )
    if resolved.model_id is not None:
        # MLflow's server lists a logged model's registered versions in this tag.
        await tracking.add_logged_model_version(s, resolved.model_id, model.name, out[1])
    return out


@dataclass(frozen=True, slots=True)
class _Files:
    """Where a new version's files are, their digest and manifest rows (path, size, sha256)."""

    storage_location: str
    artifact_root: str
    digest: str | None
    rows: list[tuple[str, int, str]]


async def _insert_version(
    s: AsyncSession, checked: _CheckedCreate, files: _Files, *, actor: str, run_link: str | None
) -> tuple[int, int]:
    model, resolved = checked.model, checked.resolved
    now = now_ms()
    # Resolved before taking the version number, so the model's row lock is held briefly.
    columns = {
        "user_id": actor,
        "description": checked.description,
        "source": resolved.source,
        "storage_location": files.storage_location,
        "artifact_root": files.artifact_root,
        "manifest_digest": files.digest,
        "run_id": resolved.run_id,
        "run_link": run_link or None,
        "logged_model_id": resolved.model_id,
    }
    if dialect_name(s) == "postgresql":
        # One statement: the number, the row, its tags and files (after what is unflushed).
        await s.flush()
        created = await store.register_version_on_driver(
            await session_rows(s),
            model_id=model.id,
            now=now,
            tags=checked.tags,
            files=files.rows,
            **columns,
        )
        if created is None:  # deleted while the source was being checked
            raise RegisteredModelNotFound(model.name)
        pk, number = created
    else:
        number_or_none = await store.next_version(s, model.id, now)
        if number_or_none is None:  # deleted while the source was being checked
            raise RegisteredModelNotFound(model.name)
        number = number_or_none
        pk = await store.insert_version(
            s,
            model_id=model.id,
            version=number,
            creation_timestamp=now,
            last_updated_timestamp=now,
            current_stage="None",
            status="READY",
            **columns,
        )
        await store.upsert_version_tags(s, pk, checked.tags)
        await store.insert_version_files(s, pk, files.rows)
    await events.emit(
        s,
        events.ModelVersionCreated(
            model.name,
            number,
            resolved.source,
            files.storage_location,
            resolved.run_id,
            resolved.model_id,
            actor,
            now,
            tags=tuple(checked.tags.items()),
            description=checked.description,
            manifest_digest=files.digest,
            is_prompt=checked.tags.get(PROMPT_TAG, "").lower() == "true",
        ),
    )
    return pk, number


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


async def _check_deletion_moves(
    s: AsyncSession,
    model: Any,
    row: Any,
    aliases: list[str],
    before: dict[str, int],
    actor: str,
) -> str | None:
    """Ask the pointer guards about every alias and stage the deleted version held: the note
    to record with the history rows (or None); a guard may refuse the deletion by raising."""
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
    return events.with_note(None, "; ".join(n for n in notes if n) or None)


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
    noted = await _check_deletion_moves(s, model, row, aliases, before, actor)
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
    prompt = await model_is_prompt(s, model.id) if aliases else False
    for alias in aliases:
        await events.emit(
            s,
            events.AliasMoved(
                model.name, alias, row.version, None, actor, None, now, is_prompt=prompt
            ),
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
    # Like MLflow's server, tags leave last_updated_timestamp (the default search order) alone.
    await store.upsert_version_tags(s, row.id, {checked_key: checked_value})
    prompt = await model_is_prompt(s, model.id)
    await events.emit(
        s,
        events.ModelVersionTagSet(
            model.name, row.version, checked_key, checked_value, now, is_prompt=prompt
        ),
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
    prompt = await model_is_prompt(s, model.id)
    await events.emit(
        s, events.ModelVersionTagDeleted(model.name, row.version, key, now, is_prompt=prompt)
    )


async def get_download_uri(s: AsyncSession, name: str | None, version: Version | None) -> str:
    """Where the version's files are: its frozen copy (``mlflow-artifacts:/mlgate-frozen/…``),
    or for a version registered before frozen copies, the location its source resolved to."""
    checked = validate_model_name(name)
    try:
        number = parse_version(version)
    except MlflowError:
        await find_model(s, checked)  # a missing model is reported first
        raise
    found = await store.version_location(s, checked, number)  # one indexed read
    if found is None:
        await find_version(s, await find_model(s, checked), number)  # names what is missing
        raise ModelVersionNotFound(checked, number)  # deleted in between
    # A prompt version has no files: like MLflow, answer with its placeholder source.
    return str(found.source if _is_prompt_version(found) else found.storage_location)


async def version_artifact_root(
    s: AsyncSession, name: str | None, version: Version | None
) -> ArtifactPath:
    """The store path of a version's files (for the artifact layer's model-version downloads)."""
    row = await find_version(s, await find_model(s, name), version)
    return tree_root_of(parse_artifact_uri(row.storage_location))


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
