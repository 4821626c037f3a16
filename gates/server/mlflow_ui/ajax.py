"""The ``/ajax-api`` routes MLflow's UI calls that the MLflow client never does.

Each declares its permission like every other route and calls the domains' services; the
GenAI-only families (traces, evaluations, gateway, scorers, assistant, jobs...) answer 501
``NOT_IMPLEMENTED`` saying mlgate does not support them.
"""

from __future__ import annotations

import math
from typing import Any

import msgspec
from litestar import Request, Response, Router, get, post, route
from litestar.response import Stream
from litestar.types import ControllerRouterHandler

from gates.server.mlflow_ui.prefix import cross_site_refusal
from registry.artifacts.api import (
    RAW_BODY_OPT,
    artifact_storage,
    check_writable,
    get_run_artifact,
    stream_file,
)
from registry.artifacts.paths import ArtifactPath, parse_artifact_path, parse_artifact_uri
from tracking import service as tracking_service
from tracking.core.auth import PUBLIC, Permission, permission_opt
from tracking.core.errors import InvalidParameter, NotImplementedFeature, PermissionDenied
from tracking.core.http import API_PREFIXES, database
from tracking.core.wire import ok, read_json
from tracking.schemas import MetricOut
from tracking.validation import MAX_HISTORY_PAGE

Req = Request[Any, Any, Any]
R = Response[bytes]

AJAX_PREFIX = "/ajax-api/2.0/mlflow"
# MLflow's limits (mlflow/server/handlers.py).
MAX_BULK_RUNS = 100
MAX_INTERVAL_RESULTS = 2500
DEFAULT_INTERVAL_RESULTS = 2500

_RUNS = Permission("run", "read", ("run_id", "run_uuid"))
_RUN_IDS = Permission("run", "read", "run_ids")
_RUN_EDIT = Permission("run", "edit", ("run_uuid", "run_id"))
_MODEL = Permission("logged_model", "read", "model_id")


def _int_arg(request: Req, name: str) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise InvalidParameter(f"Invalid value {raw!r} for parameter '{name}' supplied.") from None
    if not -(2**63) <= value < 2**63:
        raise InvalidParameter(f"Invalid value {raw!r} for parameter '{name}' supplied.")
    return value


def _run_ids(request: Req, name: str) -> list[str]:
    run_ids = list(dict.fromkeys(v for v in request.query_params.getall(name, []) if v))
    if not run_ids:
        raise InvalidParameter(f"Missing value for required parameter '{name}'.")
    if len(run_ids) > MAX_BULK_RUNS:
        raise InvalidParameter(
            f"At most {MAX_BULK_RUNS} run ids may be requested at once; got {len(run_ids)}."
        )
    return run_ids


def _metric_key(request: Req) -> str:
    key = request.query_params.get("metric_key")
    if not key:
        raise InvalidParameter("Missing value for required parameter 'metric_key'.")
    return key


@get("/metrics/get-history-bulk", opt=permission_opt(Permission("run", "read", "run_id")))
async def get_metric_history_bulk(request: Req) -> R:
    run_ids = _run_ids(request, "run_id")
    key = _metric_key(request)
    limit = min(_int_arg(request, "max_results") or MAX_HISTORY_PAGE, MAX_HISTORY_PAGE)
    if limit < 1:
        raise InvalidParameter("max_results must be at least 1.")
    metrics: list[MetricOut] = []
    async with database(request).read() as s:
        for run_id in sorted(run_ids):
            points, _ = await tracking_service.metric_history(s, run_id, key, limit, None)
            # The bulk answers name each point's run (plain get-history does not).
            metrics.extend(msgspec.structs.replace(p, run_id=run_id) for p in points)
    return ok({"metrics": metrics})


def _step_window(request: Req) -> tuple[int | None, int | None]:
    start, end = _int_arg(request, "start_step"), _int_arg(request, "end_step")
    if (start is None) != (end is None):
        raise InvalidParameter(
            "If either start step or end step are specified, both must be specified."
        )
    if start is not None and end is not None and start > end:
        raise InvalidParameter(
            "end_step must be greater than start_step. "
            f"Found start_step={start} and end_step={end}."
        )
    return start, end


@get("/metrics/get-history-bulk-interval", opt=permission_opt(_RUN_IDS))
async def get_metric_history_bulk_interval(request: Req) -> R:
    """Each run's history of one metric, at most ``max_results`` points per run.

    A history that fits is returned whole; a longer one is min/max-bucketed in SQL (so spikes
    survive) and its points carry no wall-clock time (timestamp 0).
    """
    run_ids = _run_ids(request, "run_ids")
    key = _metric_key(request)
    limit = _int_arg(request, "max_results") or DEFAULT_INTERVAL_RESULTS
    if not 1 <= limit <= MAX_INTERVAL_RESULTS:
        raise InvalidParameter(f"max_results must be between 1 and {MAX_INTERVAL_RESULTS}.")
    start, end = _step_window(request)
    metrics: list[MetricOut] = []
    async with database(request).read() as s:
        for run_id in run_ids:
            points, more = await tracking_service.metric_history(s, run_id, key, limit, None)
            if more:
                points = [
                    MetricOut(key=key, value=_finite(v), timestamp=0, step=step, run_id=run_id)
                    for series in await tracking_service.metric_series(s, [run_id], [key], limit)
                    for step, v in zip(series.steps, series.values, strict=True)
                ]
            metrics.extend(
                msgspec.structs.replace(p, run_id=run_id)
                for p in points
                if start is None or end is None or start <= p.step <= end
            )
    return ok({"metrics": metrics})


def _finite(value: float) -> float | str:
    return value if math.isfinite(value) else ("NaN" if math.isnan(value) else str(value))


class SearchDatasetsBody(msgspec.Struct):
    experiment_ids: list[str | int] = []


@post(
    "/experiments/search-datasets",
    status_code=200,
    opt=permission_opt(Permission("experiment", "read", "experiment_ids")),
)
async def search_datasets(request: Req) -> R:
    body = await read_json(request, SearchDatasetsBody)
    async with database(request).read() as s:
        summaries = await tracking_service.search_dataset_summaries(s, body.experiment_ids)
    return ok({"dataset_summaries": summaries} if summaries else {})


async def _run_root(request: Req, run_id: str | None) -> tuple[str, ArtifactPath]:
    if not run_id:
        raise InvalidParameter("Missing value for required parameter 'run_id'.")
    async with database(request).read() as s:
        run = await tracking_service.get_run(s, run_id)
    return run.info.artifact_uri, parse_artifact_uri(run.info.artifact_uri)


async def _listing(request: Req, root_uri: str, root: ArtifactPath, relative: str | None) -> R:
    inner = parse_artifact_path(relative, allow_root=True) if relative else None
    directory = root.joinpath(inner) if inner is not None and not inner.is_root else root
    prefix = f"{inner.posix}/" if inner is not None and not inner.is_root else ""
    entries = await artifact_storage(request).list(directory)
    files = [
        {"path": prefix + e.name, "is_dir": e.is_dir}
        | ({} if e.is_dir or e.file_size is None else {"file_size": e.file_size})
        for e in entries
    ]
    return ok({"root_uri": root_uri, "files": files} if files else {"root_uri": root_uri})


@get("/artifacts/list", opt=permission_opt(_RUNS))
async def list_run_artifacts(request: Req) -> R:
    """MLflow's ListArtifacts: one level below ``path`` of the run's artifact root."""
    q = request.query_params
    root_uri, root = await _run_root(request, q.get("run_id") or q.get("run_uuid"))
    return await _listing(request, root_uri, root, q.get("path"))


@post(
    "/upload-artifact",
    status_code=200,
    request_max_body_size=None,
    opt=permission_opt(_RUN_EDIT, **{RAW_BODY_OPT: True}),
)
async def upload_run_artifact(request: Req) -> R:
    # A raw-body POST is a "simple" request a page on another site can send without a CORS
    # preflight, so this route checks where it comes from on every prefix, not only /mlflow/.
    refusal = cross_site_refusal(request.scope)
    if refusal is not None:
        raise PermissionDenied(f"Refused a cross-site artifact upload: {refusal}")
    q = request.query_params
    _, root = await _run_root(request, q.get("run_uuid") or q.get("run_id"))
    relative = q.get("path")
    if not relative:
        raise InvalidParameter("Missing value for required parameter 'path'.")
    target = root.joinpath(parse_artifact_path(relative))
    await check_writable(request, target)
    await artifact_storage(request).put(target, request.stream())
    return ok()


async def _model_root(request: Req, model_id: str) -> tuple[str, ArtifactPath]:
    async with database(request).read() as s:
        model = await tracking_service.get_logged_model(s, model_id)
    return model.info.artifact_uri, parse_artifact_uri(model.info.artifact_uri)


@get("/logged-models/{model_id:str}/artifacts/files", opt=permission_opt(_MODEL))
async def get_logged_model_artifact(request: Req, model_id: str) -> Stream:
    relative = request.query_params.get("artifact_file_path")
    if not relative:
        raise InvalidParameter("Missing value for required parameter 'artifact_file_path'.")
    _, root = await _model_root(request, model_id)
    return await stream_file(request, root.joinpath(parse_artifact_path(relative)))


@get("/logged-models/{model_id:str}/artifacts/directories", opt=permission_opt(_MODEL))
async def list_logged_model_artifacts(request: Req, model_id: str) -> R:
    root_uri, root = await _model_root(request, model_id)
    return await _listing(
        request, root_uri, root, request.query_params.get("artifact_directory_path")
    )


# --- what the UI probes at start-up, and what mlgate does not do -------------------------------


@get("/ui-telemetry", opt=permission_opt(PUBLIC))
async def ui_telemetry_config() -> R:
    # mlgate sends nothing anywhere: the UI's telemetry stays off.
    return ok({"disable_ui_events": [], "disable_ui_telemetry": True, "ui_rollout_percentage": 0})


@post("/ui-telemetry", status_code=200, opt=permission_opt(PUBLIC))
async def ui_telemetry_records() -> R:
    return ok({"status": "disabled"})


_ALL_METHODS: list[Any] = ["GET", "POST", "PUT", "PATCH", "DELETE"]


@route(
    ["/", "/{rest:path}"],
    http_method=_ALL_METHODS,
    opt=permission_opt(PUBLIC),
    include_in_schema=False,
)
async def not_supported(request: Req, rest: str | None = None) -> R:
    raise NotImplementedFeature(
        f"{request.url.path} belongs to MLflow's GenAI features (traces, evaluations, "
        "gateway, scorers, prompt optimisation, assistant, jobs), which are not supported by "
        "mlgate."
    )


# Families of the UI's routes that are GenAI-only (answered by not_supported).
GENAI_PREFIXES = (
    "/ajax-api/2.0/mlflow/traces",
    "/ajax-api/2.0/mlflow/get-trace-artifact",
    "/ajax-api/2.0/mlflow/gateway-proxy",
    "/ajax-api/2.0/mlflow/runs/create-promptlab-run",
    "/ajax-api/2.0/agents",
    "/ajax-api/2.0/sql",
    "/ajax-api/3.0/mlflow/traces",
    "/ajax-api/3.0/mlflow/get-trace-artifact",
    "/ajax-api/3.0/mlflow/assistant",
    "/ajax-api/3.0/mlflow/gateway",
    "/ajax-api/3.0/mlflow/genai",
    "/ajax-api/3.0/mlflow/scorer",
    "/ajax-api/3.0/mlflow/scorers",
    "/ajax-api/3.0/mlflow/issues",
    "/ajax-api/3.0/mlflow/label-schemas",
    "/ajax-api/3.0/mlflow/review-queues",
    "/ajax-api/3.0/mlflow/mcp-servers",
    "/ajax-api/3.0/mlflow/datasets",
    "/ajax-api/3.0/mlflow/demo",
    "/ajax-api/3.0/mlflow/jobs",
    "/ajax-api/3.0/jobs",
    "/ajax-api/4.0",
)

# Routes the UI needs under /ajax-api/2.0/mlflow only.
AJAX_ONLY_HANDLERS: list[ControllerRouterHandler] = [
    get_metric_history_bulk,
    get_metric_history_bulk_interval,
    search_datasets,
    upload_run_artifact,
    get_run_artifact,
    get_logged_model_artifact,
    list_logged_model_artifacts,
]


def ajax_routes(existing_paths: frozenset[str]) -> list[ControllerRouterHandler]:
    """Fresh routers for one app. ``artifacts/list`` is added (under both API prefixes) only
    when the domains do not already serve it."""
    routers: list[ControllerRouterHandler] = [
        Router(path=AJAX_PREFIX, route_handlers=AJAX_ONLY_HANDLERS),
        Router(
            path="/ajax-api/3.0/mlflow", route_handlers=[ui_telemetry_config, ui_telemetry_records]
        ),
    ]
    if "/artifacts/list" not in existing_paths:
        routers.extend(
            Router(path=prefix, route_handlers=[list_run_artifacts]) for prefix in API_PREFIXES
        )
    for prefix in GENAI_PREFIXES:
        routers.append(Router(path=prefix, route_handlers=[not_supported]))
    return routers
