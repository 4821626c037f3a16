"""Litestar handlers for MLflow's proxied-artifact API and the UI's artifact downloads.

Routes (each ``/api/2.0/mlflow-artifacts`` route also answers under ``/ajax-api/2.0/…``):

- ``PUT|GET|DELETE /api/2.0/mlflow-artifacts/artifacts/<path>``: upload, download, delete;
- ``GET /api/2.0/mlflow-artifacts/artifacts?path=<dir>``: one directory level, base names;
- ``POST /api/2.0/mlflow-artifacts/mpu/{create,complete,abort}/<dir>``: multipart uploads, whose
  parts the client PUTs to ``/api/2.0/mlflow-artifacts/mpu/upload-part/<path>`` (the URLs this
  server hands out in ``credentials``), so the parts stream through the proxy too;
- ``GET /api/2.0/mlflow/artifacts/list?run_id=&path=`` (and ``/ajax-api/…``): MLflow's run
  listing (ListArtifacts), mounted by the app beside the tracking routes;
- ``GET /get-artifact?run_uuid=&path=`` and
  ``GET /model-versions/get-artifact?name=&version=&path=`` (MLflow UI downloads).

The artifact path is taken from the *raw* request path and decoded exactly once: the router's
own path parameter has already been decoded and had ``//`` and trailing ``/`` collapsed, and a
second interpretation of the same string is what path-traversal bypasses feed on.
"""

from __future__ import annotations

import unicodedata
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import quote, urlencode

from litestar import Request, Response, Router, delete, get, post, put
from litestar.response import Stream
from litestar.types import ControllerRouterHandler
from sqlalchemy.ext.asyncio import AsyncSession

from registry.artifacts.paths import (
    ArtifactPath,
    client_file_name,
    decode_request_path,
    in_frozen_area,
    parse_artifact_path,
    parse_artifact_uri,
    run_artifact_root,
)
from registry.artifacts.schemas import (
    AbortMultipartUpload,
    CompleteMultipartUpload,
    CreateMultipartUpload,
    CreateMultipartUploadOut,
    FileInfoOut,
    GetModelVersionArtifactQuery,
    GetRunArtifactQuery,
    ListArtifactsOut,
    ListArtifactsQuery,
    ListRunArtifactsOut,
    ListRunArtifactsQuery,
    MultipartUploadCredential,
    UploadPartQuery,
)
from registry.artifacts.storage import (
    UNSUPPORTED_MULTIPART,
    ArtifactStorage,
    UploadedPart,
    guess_media_type,
)
from registry.artifacts.storage.base import MAX_PARTS
from registry.errors import FrozenAreaReadOnly
from tracking import service as tracking_service
from tracking.core.auth import Action, Permission, permission_opt
from tracking.core.errors import InvalidParameter, NotImplementedFeature, PermissionDenied
from tracking.core.http import database
from tracking.core.wire import JSON, ok, read_json, read_query

Req = Request[Any, Any, Any]
R = Response[bytes]

ARTIFACTS_PREFIXES = ("/api/2.0/mlflow-artifacts", "/ajax-api/2.0/mlflow-artifacts")
_API_ROOTS = (b"/api/2.0", b"/ajax-api/2.0")

# app.state keys. "artifacts" holds the ArtifactStorage built at start-up.
STORAGE_STATE_KEY = "artifacts"
# Optional ``async (path: ArtifactPath) -> None`` that raises (PermissionDenied, InvalidState…)
# to refuse a write or delete. For a write ``path`` is the file; for a delete it is a file or a
# directory prefix, so a guard protecting files must also refuse any prefix that contains them.
WRITE_GUARD_STATE_KEY = "artifact_write_guard"
# Optional ``async (session, name, version) -> ArtifactPath``: the store path holding a model
# version's files, for ``/model-versions/get-artifact``. Set by the registry.
MODEL_VERSION_ROOT_STATE_KEY = "model_version_artifact_root"

WriteGuard = Callable[[ArtifactPath], Awaitable[None]]
ModelVersionRootResolver = Callable[[AsyncSession, str, str], Awaitable[ArtifactPath]]


def artifact_storage(request: Req) -> ArtifactStorage:
    storage: ArtifactStorage = request.app.state[STORAGE_STATE_KEY]
    return storage


async def check_writable(request: Req, path: ArtifactPath) -> None:
    """Refuse a client write or delete at ``path``: always in the server's reserved area and
    the frozen area, and wherever the installed write guard says so."""
    if path.is_reserved or path.is_root:
        # The server's own files (signed audit checkpoints) sit apart from the database only
        # if no client can replace or delete them through the proxy.
        raise PermissionDenied(f"Artifact path '{path.posix or '/'}' is reserved for the server.")
    if in_frozen_area(path):
        raise FrozenAreaReadOnly(path.posix)
    guard: WriteGuard | None = request.app.state.get(WRITE_GUARD_STATE_KEY)
    if guard is not None:
        await guard(path)


def _path_after(request: Req, marker: bytes) -> ArtifactPath:
    """The artifact path following ``marker`` in the raw request path, parsed once."""
    raw: bytes | None = request.scope.get("raw_path")
    if raw is None:  # not every ASGI server sends raw_path; re-encode the decoded path
        raw = quote(request.scope["path"], safe="/").encode("ascii")
    # Some ASGI clients (httpx's test transport) leave the query string in raw_path; a literal
    # '?' always starts the query, so it is never part of the path.
    raw = raw.partition(b"?")[0]
    at = raw.find(marker)
    root_path = request.scope.get("root_path", "").encode("latin-1", "replace")
    if at < 0 or raw[:at] not in {*_API_ROOTS, *(root_path + r for r in _API_ROOTS)}:
        # The fixed part of the URL was spelled unusually (percent-encoded, doubled slashes):
        # refuse rather than guess where the artifact path starts.
        raise InvalidParameter("Malformed artifact URL: the route prefix must be sent verbatim.")
    return parse_artifact_path(decode_request_path(raw[at + len(marker) :]), dot_segments=True)


# Route opt keys: where a route's artifact path starts in the raw URL, and "the body is raw
# bytes, streamed" (exempt from the JSON content-type rule and the JSON body cap).
ARTIFACT_MARKER_OPT = "artifact_marker"
RAW_BODY_OPT = "raw_body"


def _artifact_opt(action: Action, marker: bytes | None, **extra: Any) -> dict[str, Any]:
    return permission_opt(Permission("artifact", action), **{ARTIFACT_MARKER_OPT: marker}, **extra)


def requested_artifact_path(request: Req) -> ArtifactPath:
    """The store path a proxy request names, parsed exactly as its handler parses it.

    The shell's guard authorizes on it (its first segment is the experiment id), so the guard
    and the handler can never disagree about which file is meant.
    """
    marker = request.route_handler.opt.get(ARTIFACT_MARKER_OPT)
    if marker is None:  # the directory listing: ?path=<dir>
        return _listed_path(read_query(request, ListArtifactsQuery).path)
    return _path_after(request, marker)


def _listed_path(raw: str | None) -> ArtifactPath:
    """The directory a ``?path=`` listing names; absent or empty is the store's root."""
    return (
        parse_artifact_path(raw, allow_root=True, dot_segments=True) if raw else ArtifactPath.root()
    )


# RFC 7230 token characters: a file name made only of these goes out unquoted, as MLflow's.
_TOKEN_CHARS = frozenset(
    "!#$%&'*+-.0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ^_`abcdefghijklmnopqrstuvwxyz|~"
)


def _header_word(value: str) -> str:
    if value and _TOKEN_CHARS.issuperset(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _content_disposition(name: str) -> str:
    """``attachment; filename=…`` as mlflow server words it: the name as a token or quoted
    string, plus an RFC 5987 UTF-8 ``filename*`` (and an ASCII fallback) for non-ASCII names.
    Names never hold control characters (the path parser refuses them)."""
    if name.isascii():
        return f"attachment; filename={_header_word(name)}"
    fallback = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    encoded = quote(name, safe="!#$&+-.^_`|~")
    return (
        f"attachment; filename={_header_word(fallback or 'download')}; filename*=UTF-8''{encoded}"
    )


async def _stream_file(request: Req, path: ArtifactPath) -> Stream:
    reader = await artifact_storage(request).open(path)

    async def body() -> AsyncIterator[bytes]:
        try:
            async for chunk in reader:
                yield chunk
        finally:
            await reader.aclose()

    media_type = guess_media_type(path.name)
    return Stream(
        body(),
        status_code=200,
        media_type=media_type,
        headers={
            # Set here so no charset is appended: mlflow server sends the bare type.
            "Content-Type": media_type,
            "Content-Length": str(reader.size),
            # Downloads are attachments with no sniffing: an uploaded .html or .svg must not
            # run as a page on the server's origin (stored XSS through artifacts).
            "Content-Disposition": _content_disposition(path.name),
            "X-Content-Type-Options": "nosniff",
        },
    )


# --- /api/2.0/mlflow-artifacts/artifacts -----------------------------------------------------

_ARTIFACTS = b"/mlflow-artifacts/artifacts/"
_MPU_CREATE = b"/mlflow-artifacts/mpu/create/"
_MPU_PART = b"/mlflow-artifacts/mpu/upload-part/"
_MPU_COMPLETE = b"/mlflow-artifacts/mpu/complete/"
_MPU_ABORT = b"/mlflow-artifacts/mpu/abort/"


@get("/artifacts", opt=_artifact_opt("read", None))
async def list_artifacts(request: Req) -> R:
    path = _listed_path(read_query(request, ListArtifactsQuery).path)
    entries = await artifact_storage(request).list(path)
    files = [FileInfoOut(e.name, e.is_dir, None if e.is_dir else e.file_size) for e in entries]
    return ok(ListArtifactsOut(files=files))


@get("/artifacts/{path:path}", opt=_artifact_opt("read", _ARTIFACTS))
async def download_artifact(request: Req, path: str) -> Stream:
    return await _stream_file(request, _path_after(request, _ARTIFACTS))


@put(
    "/artifacts/{path:path}",
    status_code=200,
    request_max_body_size=None,
    opt=_artifact_opt("edit", _ARTIFACTS, **{RAW_BODY_OPT: True}),
)
async def upload_artifact(request: Req, path: str) -> R:
    artifact = _path_after(request, _ARTIFACTS)
    await check_writable(request, artifact)
    await artifact_storage(request).put(artifact, request.stream())
    return ok()


@delete("/artifacts/{path:path}", status_code=200, opt=_artifact_opt("delete", _ARTIFACTS))
async def delete_artifact(request: Req, path: str) -> R:
    artifact = _path_after(request, _ARTIFACTS)
    await check_writable(request, artifact)
    await artifact_storage(request).delete(artifact)
    return ok()


# --- /api/2.0/mlflow-artifacts/mpu -----------------------------------------------------------


def _multipart_storage(request: Req) -> ArtifactStorage:
    storage = artifact_storage(request)
    if not storage.supports_multipart:
        # This exact message makes the client fall back to a single streamed PUT.
        raise NotImplementedFeature(UNSUPPORTED_MULTIPART)
    return storage


def _require(value: str | None, name: str) -> str:
    if not value:
        raise InvalidParameter(f"Missing value for required parameter '{name}'.")
    return value


@post("/mpu/create/{path:path}", status_code=200, opt=_artifact_opt("edit", _MPU_CREATE))
async def create_multipart_upload(request: Req, path: str) -> R:
    storage = _multipart_storage(request)
    directory = _path_after(request, _MPU_CREATE)
    body = await read_json(request, CreateMultipartUpload)
    target = directory.joinpath(client_file_name(_require(body.path, "path")))
    num_parts = 1 if body.num_parts is None else body.num_parts
    if not 1 <= num_parts <= MAX_PARTS:
        raise InvalidParameter(f"num_parts must be between 1 and {MAX_PARTS}, got {num_parts}.")
    await check_writable(request, target)
    upload_id = await storage.create_multipart(target)
    # Part URLs point back at this proxy, so the bucket never has to be reachable by clients.
    # The upload id (128 random bits locally, S3's own id on S3) is what authorises a part.
    base = str(request.base_url).rstrip("/")
    quoted = "/".join(quote(part, safe="") for part in target.parts)
    credentials = [
        MultipartUploadCredential(
            url=f"{base}{ARTIFACTS_PREFIXES[0]}/mpu/upload-part/{quoted}?"
            + urlencode({"upload_id": upload_id, "part_number": n}),
            part_number=n,
        )
        for n in range(1, num_parts + 1)
    ]
    return ok(CreateMultipartUploadOut(upload_id=upload_id, credentials=credentials))


@put(
    "/mpu/upload-part/{path:path}",
    status_code=200,
    request_max_body_size=None,
    opt=_artifact_opt("edit", _MPU_PART, **{RAW_BODY_OPT: True}),
)
async def upload_multipart_part(request: Req, path: str) -> R:
    storage = _multipart_storage(request)
    target = _path_after(request, _MPU_PART)
    q = read_query(request, UploadPartQuery)
    upload_id = _require(q.upload_id, "upload_id")
    if q.part_number is None:
        raise InvalidParameter("Missing value for required parameter 'part_number'.")
    etag = await storage.upload_part(target, upload_id, q.part_number, request.stream())
    return Response(content=b"{}", status_code=200, media_type=JSON, headers={"ETag": etag})


@post("/mpu/complete/{path:path}", status_code=200, opt=_artifact_opt("edit", _MPU_COMPLETE))
async def complete_multipart_upload(request: Req, path: str) -> R:
    storage = _multipart_storage(request)
    directory = _path_after(request, _MPU_COMPLETE)
    body = await read_json(request, CompleteMultipartUpload)
    target = directory.joinpath(client_file_name(_require(body.path, "path")))
    upload_id = _require(body.upload_id, "upload_id")
    parts = [UploadedPart(p.part_number, p.etag or "") for p in body.parts]
    await check_writable(request, target)
    await storage.complete_multipart(target, upload_id, parts)
    return ok()


@post("/mpu/abort/{path:path}", status_code=200, opt=_artifact_opt("edit", _MPU_ABORT))
async def abort_multipart_upload(request: Req, path: str) -> R:
    storage = _multipart_storage(request)
    directory = _path_after(request, _MPU_ABORT)
    body = await read_json(request, AbortMultipartUpload)
    target = directory.joinpath(client_file_name(_require(body.path, "path")))
    await storage.abort_multipart(target, _require(body.upload_id, "upload_id"))
    return ok()


# --- MLflow's run artifact listing (ListArtifacts) --------------------------------------------


@get("/artifacts/list", opt=permission_opt(Permission("run", "read", ("run_id", "run_uuid"))))
async def list_run_artifacts(request: Req) -> R:
    """One directory level of a run's artifacts, paths relative to the run's artifact root.

    Like mlflow server: a missing directory (or a file) lists as nothing, ``page_token`` is
    ignored, and ``root_uri`` is the run's artifact URI. The path is canonicalised once ('.'
    dropped, '..' refused); the listing names the canonical path (mlflow server echoes the
    path as sent, ``sub/./b.json``).
    """
    q = read_query(request, ListRunArtifactsQuery)
    run_id = _require(q.run_id or q.run_uuid, "run_id")
    relative = _listed_path(q.path)
    async with database(request).read() as session:
        run = await tracking_service.get_run(session, run_id)
    # Only a location inside mlgate's store below the run's own experiment is ever opened.
    root = run_artifact_root(run.info.experiment_id, run.info.artifact_uri)
    entries = await artifact_storage(request).list(root.joinpath(relative)) if root else []
    files = [
        FileInfoOut(
            "/".join((*relative.parts, e.name)), e.is_dir, None if e.is_dir else e.file_size
        )
        for e in entries
    ]
    return ok(ListRunArtifactsOut(root_uri=run.info.artifact_uri, files=files))


# --- UI downloads ----------------------------------------------------------------------------


@get(
    "/get-artifact",
    opt=permission_opt(Permission("run", "read", ("run_id", "run_uuid"))),
)
async def get_run_artifact(request: Req) -> Stream:
    q = read_query(request, GetRunArtifactQuery)
    run_id = _require(q.run_id or q.run_uuid, "run_id")
    relative = parse_artifact_path(_require(q.path, "path"), dot_segments=True)
    async with database(request).read() as session:
        run = await tracking_service.get_run(session, run_id)
    root = parse_artifact_uri(run.info.artifact_uri)
    return await _stream_file(request, root.joinpath(relative))


@get(
    "/model-versions/get-artifact",
    opt=permission_opt(Permission("model_version", "read", "name")),
)
async def get_model_version_artifact(request: Req) -> Stream:
    q = read_query(request, GetModelVersionArtifactQuery)
    name = _require(q.name, "name")
    version = _require(q.version, "version")
    relative = parse_artifact_path(_require(q.path, "path"), dot_segments=True)
    resolve: ModelVersionRootResolver | None = request.app.state.get(MODEL_VERSION_ROOT_STATE_KEY)
    if resolve is None:
        raise NotImplementedFeature("Model version artifact downloads are not available yet.")
    async with database(request).read() as session:
        root = await resolve(session, name, version)
    return await _stream_file(request, root.joinpath(relative))


# Relative to each of ARTIFACTS_PREFIXES.
ARTIFACT_ROUTE_HANDLERS: list[ControllerRouterHandler] = [
    list_artifacts,
    download_artifact,
    upload_artifact,
    delete_artifact,
    create_multipart_upload,
    upload_multipart_part,
    complete_multipart_upload,
    abort_multipart_upload,
]
# Relative to each of MLflow's API prefixes (tracking.core.http.API_PREFIXES), beside the
# tracking routes: MLflow's run listing (ListArtifacts).
RUN_ARTIFACT_ROUTE_HANDLERS: list[ControllerRouterHandler] = [list_run_artifacts]
# At the server root, where MLflow's UI asks for them.
ARTIFACT_UI_ROUTE_HANDLERS: list[ControllerRouterHandler] = [
    get_run_artifact,
    get_model_version_artifact,
]


def artifact_routes() -> list[ControllerRouterHandler]:
    """Fresh routers for one app: the proxy under both prefixes, plus the UI downloads."""
    return [
        *(
            Router(path=prefix, route_handlers=ARTIFACT_ROUTE_HANDLERS)
            for prefix in ARTIFACTS_PREFIXES
        ),
        *ARTIFACT_UI_ROUTE_HANDLERS,
    ]


def content_disposition(name: str, *, inline: bool = False) -> str:
    """The Content-Disposition serving ``name``: ``attachment`` unless ``inline``, RFC 5987 name."""
    value = _content_disposition(name)
    return "inline" + value.removeprefix("attachment") if inline else value


async def stream_file(request: Req, path: ArtifactPath) -> Stream:
    """Download one stored file as an attachment (for the shell's MLflow UI routes)."""
    return await _stream_file(request, path)
