"""The artifact browser of runs (and, through ``browse``/``serve_raw``, of logged models): one
directory level at a time, file previews, streamed downloads.

Security, in the order a request meets it:

- the guard checks read access to the owner's experiment (``Permission("run", "read")``, or
  ``Permission("logged_model", "read")`` in ``pages/logged_models.py``);
- the owner's own recorded ``artifact_uri`` is resolved to a folder of mlgate's store below its
  experiment, or nothing is browsed at all (``run_artifact_root``): a recorded URI is never
  followed anywhere else;
- the user's ``path`` is parsed once by the proxy's canonicaliser (no '..', absolute paths,
  backslashes, control characters, second-layer percent-encoding) and only that canonical
  value reaches the storage backend, which also refuses symlinks leaving the store;
- files are served inline only for a few image types; everything else (HTML and SVG
  included) is an ``application/octet-stream`` attachment with ``nosniff`` and a sandboxing CSP,
  so an uploaded artifact can never run as a page of this origin (stored XSS).
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml
from litestar import Request, Response, get
from litestar.response import Stream

from gates.server.web.render import page, with_query
from registry.artifacts.api import artifact_storage, content_disposition
from registry.artifacts.paths import ArtifactPath, parse_artifact_path, run_artifact_root
from registry.artifacts.storage import ArtifactEntry, ArtifactStorage
from tracking import service as tracking_service
from tracking.core.auth import Permission, permission_opt, visibility
from tracking.core.errors import InvalidParameter, PermissionDenied, ResourceNotFound
from tracking.core.http import database
from tracking.schemas import LoggedModelOut, SearchLoggedModels

Req = Request[Any, Any, Any]

RUN_READ = permission_opt(Permission("run", "read", "run_id"))
# Logged models listed for a run (a run logging more is rare; the API pages through all).
RUN_LOGGED_MODELS = 20
_RUN_ID = re.compile(r"^[0-9a-fA-F]{32}$")

# Previews show at most this much of a text file (the rest is a download away).
TEXT_PREVIEW_BYTES = 256 * 1024
# JSON up to this size is parsed and pretty-printed; larger files are previewed as text.
JSON_PARSE_BYTES = 1024 * 1024
LIST_PAGE = 500
MAX_SUMMARY_VALUE = 200

# The only types served inline: raster images a browser never executes. SVG is left out on
# purpose: it can carry script (stored XSS through an artifact, as in MLflow's history).
INLINE_IMAGE_TYPES = {
    "png": "image/png",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "gif": "image/gif",
    "webp": "image/webp",
}
TEXT_SUFFIXES = frozenset(
    {
        "txt", "log", "py", "csv", "tsv", "yaml", "yml", "md", "rst", "ini", "cfg", "toml",
        "conf", "sh", "sql", "r", "ipynb", "jsonl", "xml", "html", "htm", "svg", "js", "css",
        "properties", "env", "lock", "gitignore", "dockerfile", "tf", "scala", "java", "go",
    }
)  # fmt: skip
TEXT_NAMES = frozenset(
    {
        "MLmodel", "requirements.txt", "conda.yaml", "python_env.yaml", "Dockerfile",
        "LICENSE", "README", "Makefile", "Procfile", "MANIFEST",
    }
)  # fmt: skip
# Inline responses of the raw route: nothing may run, nothing may embed it elsewhere.
RAW_CSP = "default-src 'none'; sandbox"


def _suffix(name: str) -> str:
    return name.rpartition(".")[2].lower() if "." in name else ""


def preview_kind(name: str) -> str:
    """How a file is previewed: 'mlmodel', 'json', 'image', 'text' or 'none' (download only)."""
    if name == "MLmodel":
        return "mlmodel"
    suffix = _suffix(name)
    if suffix == "json":
        return "json"
    if suffix in INLINE_IMAGE_TYPES:
        return "image"
    if name in TEXT_NAMES or suffix in TEXT_SUFFIXES:
        return "text"
    return "none"


@dataclass
class Preview:
    kind: str
    size: int
    text: str = ""
    truncated: bool = False
    note: str = ""
    flavors: list[dict[str, Any]] = field(default_factory=list)
    model_info: list[tuple[str, str]] = field(default_factory=list)


def _parse_user_path(raw: str | None, *, allow_root: bool) -> ArtifactPath:
    """The one parse of the user's ``path`` (already percent-decoded once by the router)."""
    if raw is None or raw == "":
        if allow_root:
            return ArtifactPath.root()
        raise InvalidParameter("Missing value for required parameter 'path'.")
    return parse_artifact_path(raw, allow_root=allow_root)


def _page_number(raw: str | None) -> int:
    if raw is None or raw == "":
        return 1
    if not raw.isdigit() or not 1 <= int(raw) <= 1_000_000:
        raise InvalidParameter(f"Invalid page {raw[:50]!r}: use a positive whole number.")
    return int(raw)


async def _run_and_root(
    request: Req, run_id: str, *, with_models: bool = False
) -> tuple[Any, ArtifactPath | None, list[LoggedModelOut]]:
    async with database(request).read() as s:
        run = await tracking_service.get_run(s, run_id)
        models = await logged_models_of_run(request, s, run) if with_models else []
    return run, run_artifact_root(run.info.experiment_id, run.info.artifact_uri), models


async def logged_models_of_run(request: Req, s: Any, run: Any) -> list[LoggedModelOut]:
    """The logged models whose source is ``run``, in the run's experiment (as MLflow's UI
    looks them up), newest first, at most ``RUN_LOGGED_MODELS``."""
    run_id = run.info.run_id
    if not _RUN_ID.match(run_id):
        return []
    found, _ = await tracking_service.search_logged_models(
        s,
        SearchLoggedModels(
            experiment_ids=[run.info.experiment_id],
            filter=f"source_run_id = '{run_id}'",
            max_results=RUN_LOGGED_MODELS,
        ),
        scope=visibility(request, "experiment"),
    )
    return found


async def _guarded(coro: Any) -> Any:
    """Storage calls: a path resolving outside the store (a symlink) is a bad request."""
    try:
        return await coro
    except PermissionDenied as exc:
        raise InvalidParameter(exc.message) from None


async def read_head(storage: ArtifactStorage, path: ArtifactPath, cap: int) -> tuple[bytes, int]:
    """At most ``cap`` bytes from the start of a file, and its full size; the rest is not read."""
    reader = await _guarded(storage.open(path))
    chunks = reader.__aiter__()
    buffer = bytearray()
    try:
        while len(buffer) < cap:
            try:
                chunk = await chunks.__anext__()
            except StopAsyncIteration:
                break
            buffer += chunk[: cap - len(buffer)]
    finally:
        await chunks.aclose()  # type: ignore[attr-defined,unused-ignore]
        await reader.aclose()
    return bytes(buffer), reader.size


def _decode(data: bytes, *, complete: bool) -> str:
    # A cut in the middle of a UTF-8 sequence is not an error: the rest was not read.
    return codecs.getincrementaldecoder("utf-8")("replace").decode(data, final=complete)


def _pretty_json(data: bytes) -> str | None:
    """Indented JSON, or None when ``data`` is not JSON (deep nesting included)."""
    try:
        parsed = json.loads(data.decode("utf-8"))
        return json.dumps(parsed, indent=2, ensure_ascii=False)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None


def _scalar(value: Any) -> str | None:
    """A short text for a YAML scalar; containers are summarised, never expanded (aliases)."""
    if isinstance(value, bool | int | float | str) or value is None:
        text = "" if value is None else str(value)
        return text if len(text) <= MAX_SUMMARY_VALUE else text[:MAX_SUMMARY_VALUE] + "…"
    if isinstance(value, dict):
        return f"{{{len(value)} keys}}"
    if isinstance(value, list):
        return f"[{len(value)} items]"
    return None


def summarise_mlmodel(text: str) -> tuple[list[dict[str, Any]], list[tuple[str, str]], str]:
    """The flavors of an MLmodel file (loader, library versions...), its top-level facts, and a
    note when it could not be read as YAML."""
    try:
        doc = yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError, ValueError):
        return [], [], "The file is not valid YAML; shown as text."
    if not isinstance(doc, dict):
        return [], [], "The file is not a YAML mapping; shown as text."
    info: list[tuple[str, str]] = []
    for key in ("artifact_path", "run_id", "model_uuid", "model_id", "utc_time_created"):
        if key in doc:
            shown = _scalar(doc[key])
            if shown is not None:
                info.append((key, shown))
    for key in ("mlflow_version", "databricks_runtime"):
        if key in doc:
            shown = _scalar(doc[key])
            if shown is not None:
                info.append((key, shown))
    if isinstance(doc.get("signature"), dict):
        parts = [k for k in ("inputs", "outputs", "params") if doc["signature"].get(k)]
        info.append(("signature", ", ".join(parts) or "empty"))
    flavors: list[dict[str, Any]] = []
    raw_flavors = doc.get("flavors")
    if isinstance(raw_flavors, dict):
        for name, spec in list(raw_flavors.items())[:20]:
            facts: list[tuple[str, str]] = []
            if isinstance(spec, dict):
                for key, value in list(spec.items())[:30]:
                    shown = _scalar(value)
                    if shown is not None:
                        facts.append((str(key), shown))
            flavors.append({"name": str(name), "facts": facts})
    return flavors, info, ""


async def build_preview(storage: ArtifactStorage, path: ArtifactPath, size: int) -> Preview:
    kind = preview_kind(path.name)
    if kind in ("none", "image"):
        return Preview(kind=kind, size=size)
    if kind == "json" and size <= JSON_PARSE_BYTES:
        data, size = await read_head(storage, path, JSON_PARSE_BYTES)
        pretty = _pretty_json(data)
        if pretty is not None:
            cut = len(pretty) > TEXT_PREVIEW_BYTES
            return Preview("json", size, pretty[:TEXT_PREVIEW_BYTES], truncated=cut)
        head = data[:TEXT_PREVIEW_BYTES]
        cut = len(data) > len(head)
        text = _decode(head, complete=not cut)
        return Preview("text", size, text, truncated=cut, note="Not valid JSON; shown as text.")
    note = ""
    if kind == "json":
        kind, note = "text", "Too large to pretty-print; shown as text."
    data, size = await read_head(storage, path, TEXT_PREVIEW_BYTES)
    truncated = size > len(data)
    text = _decode(data, complete=not truncated)
    preview = Preview(kind=kind, size=size, text=text, truncated=truncated, note=note)
    if kind == "mlmodel":
        if truncated:
            preview.note = "Too large to summarise; shown as text."
        else:
            preview.flavors, preview.model_info, preview.note = summarise_mlmodel(text)
    return preview


@dataclass(frozen=True, slots=True)
class ArtifactOwner:
    """What a browser page is about: a run or a logged model, its root and its page links.

    ``root`` is None when the owner's recorded location is not a folder of mlgate's store
    (then nothing is listed or served). ``base`` is the browser's own URL.
    """

    base: str
    title: str
    artifact_uri: str
    root: ArtifactPath | None
    back: list[tuple[str, str]]
    missing: str  # how a missing path is named in a 404 ("run <id>", "logged model <id>")
    # Other file sets of the same owner (a run's logged models): (label, browser URL).
    related: list[tuple[str, str]] = field(default_factory=list)

    @property
    def raw(self) -> str:
        return f"{self.base}/raw"


def _crumbs(base: str, relative: ArtifactPath) -> list[tuple[str, str]]:
    crumbs = [("artifacts", base)]
    for i in range(len(relative.parts)):
        prefix = ArtifactPath(relative.parts[: i + 1])
        crumbs.append((relative.parts[i], with_query(base, path=prefix.posix)))
    return crumbs


def _rows(base: str, folder: ArtifactPath, entries: list[ArtifactEntry]) -> list[dict[str, Any]]:
    rows = []
    for entry in entries:
        target = folder.joinpath(ArtifactPath((entry.name,))).posix
        rows.append(
            {
                "name": entry.name,
                "is_dir": entry.is_dir,
                "size": entry.file_size,
                "path": target,
                "href": with_query(base, path=target),
                "download": None
                if entry.is_dir
                else with_query(f"{base}/raw", path=target, download=1),
            }
        )
    return rows


def _empty_context(
    owner: ArtifactOwner, relative: ArtifactPath, page_number: int
) -> dict[str, Any]:
    return {
        "owner": owner,
        "crumbs": _crumbs(owner.base, relative),
        "relative": relative.posix,
        "outside": owner.root is None,
        "entries": [],
        "folder": "",
        "selected": None,
        "preview": None,
        "raw_url": None,
        "download_url": None,
        "page_number": page_number,
        "prev_url": None,
        "next_url": None,
        "total": 0,
        "parent_url": None,
    }


async def _listing(
    storage: ArtifactStorage, owner: ArtifactOwner, folder: ArtifactPath, selected: str, page: int
) -> dict[str, Any]:
    """One page of a folder's entries, with the pager's and the parent's links."""
    assert owner.root is not None
    entries = await _guarded(storage.list(owner.root.joinpath(folder)))
    start = (page - 1) * LIST_PAGE
    found: dict[str, Any] = {
        "entries": _rows(owner.base, folder, entries[start : start + LIST_PAGE]),
        "folder": folder.posix,
        "total": len(entries),
        "parent_url": None
        if folder.is_root
        else with_query(owner.base, path=folder.parent.posix or None),
    }
    if page > 1:
        found["prev_url"] = with_query(
            owner.base, path=selected, page=page - 1 if page > 2 else None
        )
    if start + LIST_PAGE < len(entries):
        found["next_url"] = with_query(owner.base, path=selected, page=page + 1)
    return found


async def browse(request: Req, owner: ArtifactOwner) -> Response[Any]:
    """The browser page of ``owner``'s files at the request's ``path`` (a folder or a file).

    The user's path is parsed once and joined to the owner's root; nothing else is looked up.
    """
    relative = _parse_user_path(request.query_params.get("path"), allow_root=True)
    page_number = _page_number(request.query_params.get("page"))
    context = _empty_context(owner, relative, page_number)
    if owner.root is None:
        return page(request, "artifacts.html", **context)
    storage = artifact_storage(request)
    target = owner.root.joinpath(relative)
    stat = None if relative.is_root else await _guarded(storage.stat(target))
    if not relative.is_root and stat is None:
        raise ResourceNotFound(f"No artifact '{relative.posix}' in {owner.missing}.")
    is_dir = relative.is_root or (stat is not None and stat.is_dir)
    folder = relative if is_dir else relative.parent
    if not is_dir:
        assert stat is not None
        context["selected"] = relative.posix
        context["preview"] = await build_preview(storage, target, stat.size or 0)
        context["raw_url"] = with_query(owner.raw, path=relative.posix)
        context["download_url"] = with_query(owner.raw, path=relative.posix, download=1)
    selected = folder.posix if is_dir else relative.posix
    context.update(await _listing(storage, owner, folder, selected, page_number))
    return page(request, "artifacts.html", **context)


async def serve_raw(request: Req, root: ArtifactPath | None, outside: str) -> Stream:
    """One file below ``root``, streamed: inline only for raster images, else an attachment."""
    relative = _parse_user_path(request.query_params.get("path"), allow_root=False)
    download = request.query_params.get("download") not in (None, "", "0", "false")
    if root is None:
        raise InvalidParameter(outside)
    reader = await _guarded(artifact_storage(request).open(root.joinpath(relative)))
    image_type = INLINE_IMAGE_TYPES.get(_suffix(relative.name))
    inline = image_type is not None and not download

    async def body() -> AsyncIterator[bytes]:
        try:
            async for chunk in reader:
                yield chunk
        finally:
            await reader.aclose()

    return Stream(
        body(),
        status_code=200,
        media_type=image_type if inline else "application/octet-stream",
        headers={
            "Content-Length": str(reader.size),
            "Content-Disposition": content_disposition(relative.name, inline=inline),
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": RAW_CSP,
        },
    )


def _run_owner(
    run: Any, root: ArtifactPath | None, models: Sequence[LoggedModelOut]
) -> ArtifactOwner:
    info = run.info
    name = info.run_name or info.run_id
    return ArtifactOwner(
        base=f"/runs/{info.run_id}/artifacts",
        title=name,
        artifact_uri=info.artifact_uri,
        root=root,
        back=[
            (f"Experiment {info.experiment_id}", f"/experiments/{info.experiment_id}"),
            (f"Run {name}", f"/runs/{info.run_id}"),
        ],
        missing=f"run {info.run_id}",
        related=[
            (
                f"{m.info.name} ({m.info.model_id})",
                f"/logged-models/{m.info.model_id}/artifacts",
            )
            for m in models
        ],
    )


@get("/runs/{run_id:str}/artifacts", opt=RUN_READ, include_in_schema=False)
async def artifact_browser(request: Req, run_id: str) -> Response[Any]:
    # The path is checked before the run is looked up: a bad path is a 400 whoever asks.
    _parse_user_path(request.query_params.get("path"), allow_root=True)
    _page_number(request.query_params.get("page"))
    run, root, models = await _run_and_root(request, run_id, with_models=True)
    return await browse(request, _run_owner(run, root, models))


@get("/runs/{run_id:str}/artifacts/raw", opt=RUN_READ, include_in_schema=False)
async def artifact_raw(request: Req, run_id: str) -> Stream:
    _parse_user_path(request.query_params.get("path"), allow_root=False)
    _, root, _ = await _run_and_root(request, run_id)
    outside = f"Run {run_id}'s artifacts are stored outside mlgate; they are not served here."
    return await serve_raw(request, root, outside)


ROUTE_HANDLERS = [artifact_browser, artifact_raw]
