"""Litestar controllers for MLflow's model-registry REST API and mlgate's own registry API."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from litestar import Request, Response, delete, get, patch, post

from registry import service
from registry.artifacts.api import artifact_storage
from registry.artifacts.external import EXTERNAL_STATE_KEY, ExternalSources
from registry.schemas import (
    CreateModelVersion,
    CreateRegisteredModel,
    DeleteAlias,
    DeleteModelVersionTag,
    DeleteRegisteredModelTag,
    GetByAlias,
    GetLatestVersions,
    GetModelVersionFiles,
    GetPointerAt,
    GetPointerHistory,
    ModelVersionRef,
    RegisteredModelRef,
    RenameRegisteredModel,
    ResolveModelUri,
    SearchModelVersions,
    SearchRegisteredModels,
    SetAlias,
    SetModelVersionTag,
    SetRegisteredModelTag,
    TransitionStage,
    UpdateModelVersion,
    UpdateRegisteredModel,
)
from tracking.core.auth import Permission, actor_name, permission_opt, visibility
from tracking.core.http import database
from tracking.core.wire import ok, read_json, read_query

Req = Request[Any, Any, Any]
R = Response[bytes]

# mlgate's own endpoints (not part of MLflow's protocol) live beside MLflow's prefixes.
MLGATE_API_PREFIX = "/api/2.0/mlgate"


def _actor(request: Req) -> str:
    # The authenticated user, or "anonymous" when authentication is off.
    return actor_name(request)


# --- permission declarations (checked by the shell's guard before a handler runs) -------------
MODEL_READ = permission_opt(Permission("registered_model", "read", "name"))
MODEL_EDIT = permission_opt(Permission("registered_model", "edit", "name"))
MODEL_DELETE = permission_opt(Permission("registered_model", "delete", "name"))
MODEL_SEARCH = permission_opt(Permission("registered_model", "read", filtered=True))
VERSION_READ = permission_opt(Permission("model_version", "read", "name"))
VERSION_EDIT = permission_opt(Permission("model_version", "edit", "name"))
# Moving an alias needs promote rights on that alias ("@champion").
ALIAS_PROMOTE = permission_opt(Permission("registered_model", "promote", "name", target="alias"))


def _page(key: str, items: list[Any], token: str | None) -> R:
    out: dict[str, Any] = {key: items}
    if token:
        out["next_page_token"] = token
    return ok(out)


# --- registered models -----------------------------------------------------------------------


@post(
    "/registered-models/create",
    status_code=200,
    opt=permission_opt(Permission("registered_model", "create", "name")),
)
async def create_registered_model(request: Req) -> R:
    body = await read_json(request, CreateRegisteredModel)
    async with database(request).write() as s:
        model = await service.create_registered_model(s, body, actor=_actor(request))
    return ok({"registered_model": model})


@get("/registered-models/get", opt=MODEL_READ)
async def get_registered_model(request: Req) -> R:
    q = read_query(request, RegisteredModelRef)
    async with database(request).read() as s:
        model = await service.get_registered_model(s, q.name)
    return ok({"registered_model": model})


@post(
    "/registered-models/rename",
    status_code=200,
    # A rename changes which name grants apply: manage rights on the model, create on the name.
    opt=permission_opt(
        Permission(
            "registered_model",
            "manage",
            "name",
            also=(Permission("registered_model", "create", "new_name"),),
        )
    ),
)
async def rename_registered_model(request: Req) -> R:
    body = await read_json(request, RenameRegisteredModel)
    async with database(request).write() as s:
        model = await service.rename_registered_model(s, body.name, body.new_name)
    return ok({"registered_model": model})


@patch("/registered-models/update", status_code=200, opt=MODEL_EDIT)
async def update_registered_model(request: Req) -> R:
    body = await read_json(request, UpdateRegisteredModel)
    async with database(request).write() as s:
        model = await service.update_registered_model(s, body.name, body.description)
    return ok({"registered_model": model})


@delete("/registered-models/delete", status_code=200, opt=MODEL_DELETE)
async def delete_registered_model(request: Req) -> R:
    body = await read_json(request, RegisteredModelRef)
    async with database(request).write() as s:
        await service.delete_registered_model(s, body.name, actor=_actor(request))
    return ok()


@get("/registered-models/search", opt=MODEL_SEARCH)
async def search_registered_models(request: Req) -> R:
    q = read_query(request, SearchRegisteredModels)
    async with database(request).read() as s:
        models, token = await service.search_registered_models(
            s, q, scope=visibility(request, "registered_model")
        )
    return _page("registered_models", models, token)


@post("/registered-models/set-tag", status_code=200, opt=MODEL_EDIT)
async def set_registered_model_tag(request: Req) -> R:
    body = await read_json(request, SetRegisteredModelTag)
    async with database(request).write() as s:
        await service.set_registered_model_tag(s, body.name, body.key, body.value)
    return ok()


@delete("/registered-models/delete-tag", status_code=200, opt=MODEL_EDIT)
async def delete_registered_model_tag(request: Req) -> R:
    body = await read_json(request, DeleteRegisteredModelTag)
    async with database(request).write() as s:
        await service.delete_registered_model_tag(s, body.name, body.key)
    return ok()


T = TypeVar("T")


async def _read_at_once(
    request: Req,
    fast: Callable[[Any], Awaitable[T | None]],
    full: Callable[[Any], Awaitable[T]],
) -> T:
    """The hot read on the driver connection (``fast``); the session path (``full``) only when
    it finds nothing, so errors and empty answers stay the session path's own."""
    db = database(request)
    async with db.driver_read() as r:
        found = await fast(r)
    if found is None:
        async with db.read() as s:
            found = await full(s)
    return found


async def _latest_versions(request: Req, body: GetLatestVersions) -> R:
    versions = await _read_at_once(
        request,
        lambda r: service.latest_versions_at_once(r, body.name, body.stages),
        lambda s: service.get_latest_versions(s, body.name, body.stages),
    )
    return ok({"model_versions": versions})


@post("/registered-models/get-latest-versions", status_code=200, opt=VERSION_READ)
async def get_latest_versions(request: Req) -> R:
    return await _latest_versions(request, await read_json(request, GetLatestVersions))


@get("/registered-models/get-latest-versions", opt=VERSION_READ)
async def get_latest_versions_get(request: Req) -> R:
    return await _latest_versions(request, read_query(request, GetLatestVersions))


@post("/registered-models/alias", status_code=200, opt=ALIAS_PROMOTE)
async def set_alias(request: Req) -> R:
    body = await read_json(request, SetAlias)
    async with database(request).write() as s:
        await service.set_alias(
            s, body.name, body.alias, body.version, actor=_actor(request), comment=body.comment
        )
    return ok()


@delete("/registered-models/alias", status_code=200, opt=ALIAS_PROMOTE)
async def delete_alias(request: Req) -> R:
    body = await read_json(request, DeleteAlias)
    async with database(request).write() as s:
        await service.delete_alias(
            s, body.name, body.alias, actor=_actor(request), comment=body.comment
        )
    return ok()


@get("/registered-models/alias", opt=VERSION_READ)
async def get_version_by_alias(request: Req) -> R:
    q = read_query(request, GetByAlias)
    version = await _read_at_once(
        request,
        lambda r: service.version_by_alias_at_once(r, q.name, q.alias),
        lambda s: service.get_version_by_alias(s, q.name, q.alias),
    )
    return ok({"model_version": version})


# --- model versions ----------------------------------------------------------------------------


@post(
    "/model-versions/create",
    status_code=200,
    # Registering exposes the source's files to the model's readers: the caller must be able
    # to read the runs and logged models the source names.
    opt=permission_opt(Permission("model_version", "edit", "name", sources=True)),
)
async def create_model_version(request: Req) -> R:
    body = await read_json(request, CreateModelVersion)
    db = database(request)
    # Check the request and freeze the files before the write transaction: copying and hashing
    # a large model must not hold the database's write lock (see registry.service.integrity).
    external: ExternalSources = request.app.state[EXTERNAL_STATE_KEY]
    async with db.read() as s:
        location = await service.model_version_location(s, body, external=external.prefixes)
    fingerprint = (
        None
        if location is None  # a prompt version (no files) or a copy (reuses its source's)
        else await service.freeze_version_files(artifact_storage(request), location, external)
    )
    async with db.write() as s:
        version = await service.create_model_version(
            s, body, actor=_actor(request), fingerprint=fingerprint, external=external.prefixes
        )
    return ok({"model_version": version})


@get("/model-versions/get", opt=VERSION_READ)
async def get_model_version(request: Req) -> R:
    q = read_query(request, ModelVersionRef)
    version = await _read_at_once(
        request,
        lambda r: service.model_version_at_once(r, q.name, q.version),
        lambda s: service.get_model_version(s, q.name, q.version),
    )
    return ok({"model_version": version})


@patch("/model-versions/update", status_code=200, opt=VERSION_EDIT)
async def update_model_version(request: Req) -> R:
    body = await read_json(request, UpdateModelVersion)
    async with database(request).write() as s:
        version = await service.update_model_version(s, body.name, body.version, body.description)
    return ok({"model_version": version})


@delete(
    "/model-versions/delete",
    status_code=200,
    opt=permission_opt(Permission("model_version", "delete", "name")),
)
async def delete_model_version(request: Req) -> R:
    body = await read_json(request, ModelVersionRef)
    async with database(request).write() as s:
        await service.delete_model_version(s, body.name, body.version, actor=_actor(request))
    return ok()


@get(
    "/model-versions/search",
    opt=permission_opt(Permission("model_version", "read", filtered=True)),
)
async def search_model_versions(request: Req) -> R:
    q = read_query(request, SearchModelVersions)
    async with database(request).read() as s:
        versions, token = await service.search_model_versions(
            s, q, scope=visibility(request, "registered_model")
        )
    return _page("model_versions", versions, token)


@post("/model-versions/set-tag", status_code=200, opt=VERSION_EDIT)
async def set_model_version_tag(request: Req) -> R:
    body = await read_json(request, SetModelVersionTag)
    async with database(request).write() as s:
        await service.set_model_version_tag(s, body.name, body.version, body.key, body.value)
    return ok()


@delete("/model-versions/delete-tag", status_code=200, opt=VERSION_EDIT)
async def delete_model_version_tag(request: Req) -> R:
    body = await read_json(request, DeleteModelVersionTag)
    async with database(request).write() as s:
        await service.delete_model_version_tag(s, body.name, body.version, body.key)
    return ok()


@post(
    "/model-versions/transition-stage",
    status_code=200,
    # Promote rights on the target stage; moving a version out of Staging or Production is
    # checked inside the transaction (the shell's pointer-move hook sees the current stage).
    opt=permission_opt(Permission("model_version", "promote", "name", target="stage")),
)
async def transition_stage(request: Req) -> R:
    body = await read_json(request, TransitionStage)
    async with database(request).write() as s:
        version = await service.transition_stage(
            s,
            body.name,
            body.version,
            body.stage,
            body.archive_existing_versions,
            actor=_actor(request),
            comment=body.comment,
        )
    return ok({"model_version": version})


@get("/model-versions/get-download-uri", opt=VERSION_READ)
async def get_download_uri(request: Req) -> R:
    q = read_query(request, ModelVersionRef)
    uri = await _read_at_once(
        request,
        lambda r: service.download_uri_at_once(r, q.name, q.version),
        lambda s: service.get_download_uri(s, q.name, q.version),
    )
    return ok({"artifact_uri": uri})


# --- pointer history (mlgate) --------------------------------------------------------------------


@get("/registered-models/history", opt=MODEL_READ)
async def pointer_history(request: Req) -> R:
    q = read_query(request, GetPointerHistory)
    async with database(request).read() as s:
        history, token = await service.pointer_history(
            s, q.name, q.pointer, q.max_results, q.page_token
        )
    return _page("events", history, token)


@get("/registered-models/pointer-at", opt=MODEL_READ)
async def pointer_at(request: Req) -> R:
    q = read_query(request, GetPointerAt)
    async with database(request).read() as s:
        answer = await service.pointer_at(s, q.name, q.pointer, q.timestamp)
    return ok(answer)


# --- resolve and files (mlgate) ----------------------------------------------------------------


@get(
    "/models/resolve",
    opt=permission_opt(Permission("model_version", "read", "uri", by_uri=True)),
)
async def resolve_model_uri(request: Req) -> R:
    q = read_query(request, ResolveModelUri)
    async with database(request).read() as s:
        resolved = await service.resolve_model_uri(s, q.uri)
    return ok(resolved)


@get("/model-versions/files", opt=VERSION_READ)
async def model_version_files(request: Req) -> R:
    q = read_query(request, GetModelVersionFiles)
    async with database(request).read() as s:
        files = await service.model_version_files(s, q.name, q.version, q.max_results, q.page_token)
    return ok(files)


# Mounted under each of MLflow's API prefixes.
ROUTE_HANDLERS = [
    create_registered_model,
    get_registered_model,
    rename_registered_model,
    update_registered_model,
    delete_registered_model,
    search_registered_models,
    set_registered_model_tag,
    delete_registered_model_tag,
    get_latest_versions,
    get_latest_versions_get,
    set_alias,
    delete_alias,
    get_version_by_alias,
    create_model_version,
    get_model_version,
    update_model_version,
    delete_model_version,
    search_model_versions,
    set_model_version_tag,
    delete_model_version_tag,
    transition_stage,
    get_download_uri,
]

# Mounted under MLGATE_API_PREFIX.
MLGATE_ROUTE_HANDLERS = [pointer_history, pointer_at, resolve_model_uri, model_version_files]
