"""Litestar controllers for MLflow's tracking REST API: parse, call the service, render."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, delete, get, patch, post

from tracking import service
from tracking.core.auth import Permission, current_principal, permission_opt, visibility
from tracking.core.group_commit import GroupFailed
from tracking.core.http import database
from tracking.core.wire import ok, read_json, read_query
from tracking.schemas import (
    CreateExperiment,
    CreateLoggedModel,
    CreateRun,
    DeleteExperimentTag,
    DeleteTag,
    ExperimentRef,
    FinalizeLoggedModel,
    GetExperiment,
    GetExperimentByName,
    GetMetricHistory,
    LogBatch,
    LogInputs,
    LogLoggedModelParams,
    LogMetric,
    LogOutputs,
    LogParam,
    RunRef,
    SearchExperiments,
    SearchLoggedModels,
    SearchRuns,
    SetExperimentTag,
    SetLoggedModelTags,
    SetTag,
    UpdateExperiment,
    UpdateRun,
)

Req = Request[Any, Any, Any]
R = Response[bytes]

# Bulk routes whose legitimate bodies exceed the general JSON cap (MLGATE_MAX_JSON_BODY).
LOG_BATCH_MAX_BODY = 4 * 1024 * 1024
LOG_INPUTS_MAX_BODY = 24 * 1024 * 1024

# --- permission declarations (checked by the shell's guard before a handler runs) -------------
# Each locator mirrors exactly the field the handler reads, in the same order.
_RUN = ("run_id", "run_uuid")
EXPERIMENT_READ = permission_opt(Permission("experiment", "read", "experiment_id"))
EXPERIMENT_EDIT = permission_opt(Permission("experiment", "edit", "experiment_id"))
EXPERIMENT_DELETE = permission_opt(Permission("experiment", "delete", "experiment_id"))
EXPERIMENT_SEARCH = permission_opt(Permission("experiment", "read", filtered=True))
RUN_READ = permission_opt(Permission("run", "read", _RUN))
RUN_EDIT = permission_opt(Permission("run", "edit", _RUN))
RUN_DELETE = permission_opt(Permission("run", "delete", _RUN))
# Handlers that read ``body.run_id`` only.
RUN_ID_EDIT = permission_opt(Permission("run", "edit", "run_id"))
LOGGED_MODEL_READ = permission_opt(Permission("logged_model", "read", "model_id"))
LOGGED_MODEL_EDIT = permission_opt(Permission("logged_model", "edit", "model_id"))
LOGGED_MODEL_DELETE = permission_opt(Permission("logged_model", "delete", "model_id"))
# Metrics logged with a model_id are also written to that logged model.
_METRIC_MODELS = Permission("logged_model", "edit", "model_id", optional=True)
_BATCH_MODELS = Permission("logged_model", "edit", "metrics[].model_id", optional=True)
# Linking a logged model to a run (input or output) needs read access to that model.
_LINKED_MODELS = Permission("logged_model", "read", "models[].model_id", optional=True)


def _user_tag_value(request: Req, key: str | None, value: str | None) -> str | None:
    """With auth on, the ``mlflow.user`` tag always names the authenticated caller."""
    principal = current_principal(request)
    if principal is not None and key == service.USER_TAG:
        return principal.name
    return value


def _page(key: str, items: list[Any], token: str | None) -> dict[str, Any]:
    """One page of a list answer. An empty list is left out, as mlflow server (protobuf JSON)
    leaves out empty repeated fields: no results answer ``{}``."""
    out: dict[str, Any] = {key: items} if items else {}
    if token:
        out["next_page_token"] = token
    return out


# --- experiments -------------------------------------------------------------------------------


@post(
    "/experiments/create",
    status_code=200,
    opt=permission_opt(Permission("experiment", "create", "name", by_name=True)),
)
async def create_experiment(request: Req) -> R:
    body = await read_json(request, CreateExperiment)
    async with database(request).write() as s:
        experiment_id = await service.create_experiment(s, body)
    return ok({"experiment_id": experiment_id})


@get("/experiments/get", opt=EXPERIMENT_READ)
async def get_experiment(request: Req) -> R:
    q = read_query(request, GetExperiment)
    async with database(request).read() as s:
        experiment = await service.get_experiment(s, q.experiment_id)
    return ok({"experiment": experiment})


@get(
    "/experiments/get-by-name",
    opt=permission_opt(Permission("experiment", "read", "experiment_name", by_name=True)),
)
async def get_experiment_by_name(request: Req) -> R:
    q = read_query(request, GetExperimentByName)
    async with database(request).read() as s:
        experiment = await service.get_experiment_by_name(s, q.experiment_name)
    return ok({"experiment": experiment})


async def _search_experiments(request: Req, body: SearchExperiments) -> R:
    async with database(request).read() as s:
        experiments, token = await service.search_experiments(
            s, body, scope=visibility(request, "experiment")
        )
    return ok(_page("experiments", experiments, token))


@post("/experiments/search", status_code=200, opt=EXPERIMENT_SEARCH)
async def search_experiments(request: Req) -> R:
    return await _search_experiments(request, await read_json(request, SearchExperiments))


@get("/experiments/search", opt=EXPERIMENT_SEARCH)
async def search_experiments_get(request: Req) -> R:
    return await _search_experiments(request, read_query(request, SearchExperiments))


@post(
    "/experiments/update",
    status_code=200,
    # A rename changes which name grants apply: it needs manage rights on the experiment and
    # create rights on the new name.
    opt=permission_opt(
        Permission(
            "experiment",
            "manage",
            "experiment_id",
            also=(Permission("experiment", "create", "new_name", by_name=True),),
        )
    ),
)
async def update_experiment(request: Req) -> R:
    body = await read_json(request, UpdateExperiment)
    async with database(request).write() as s:
        await service.rename_experiment(s, body.experiment_id, body.new_name)
    return ok()


@post("/experiments/delete", status_code=200, opt=EXPERIMENT_DELETE)
async def delete_experiment(request: Req) -> R:
    body = await read_json(request, ExperimentRef)
    async with database(request).write() as s:
        await service.delete_experiment(s, body.experiment_id)
    return ok()


@post("/experiments/restore", status_code=200, opt=EXPERIMENT_DELETE)
async def restore_experiment(request: Req) -> R:
    body = await read_json(request, ExperimentRef)
    async with database(request).write() as s:
        await service.restore_experiment(s, body.experiment_id)
    return ok()


@post("/experiments/set-experiment-tag", status_code=200, opt=EXPERIMENT_EDIT)
async def set_experiment_tag(request: Req) -> R:
    body = await read_json(request, SetExperimentTag)
    async with database(request).write() as s:
        await service.set_experiment_tag(s, body.experiment_id, body.key, body.value)
    return ok()


@post("/experiments/delete-experiment-tag", status_code=200, opt=EXPERIMENT_EDIT)
async def delete_experiment_tag(request: Req) -> R:
    body = await read_json(request, DeleteExperimentTag)
    async with database(request).write() as s:
        await service.delete_experiment_tag(s, body.experiment_id, body.key)
    return ok()


# --- runs ----------------------------------------------------------------------------------------


@post(
    "/runs/create",
    status_code=200,
    # No experiment_id means the Default experiment "0", as in the handler.
    opt=permission_opt(Permission("experiment", "edit", "experiment_id", default="0")),
)
async def create_run(request: Req) -> R:
    body = await read_json(request, CreateRun)
    principal = current_principal(request)
    new = service.check_new_run(body, principal.name if principal else None)
    db = database(request)
    # One statement on the driver; the session only to say why no active experiment took it.
    async with db.driver_write() as w:
        run = await service.create_run_at_once(w, new)
    if run is None:
        async with db.write() as s:
            run = await service.start_checked_run(s, new)
    return ok({"run": run})


@get("/runs/get", opt=RUN_READ)
async def get_run(request: Req) -> R:
    q = read_query(request, RunRef)
    db = database(request)
    # On the driver; the session only to name the error when there is no such run.
    async with db.driver_read() as r:
        run: Any = await service.get_run_at_once(r, q.id)
    if run is None:
        async with db.read() as s:
            run = await service.get_run(s, q.id)
    return ok({"run": run})


@post("/runs/update", status_code=200, opt=RUN_EDIT)
async def update_run(request: Req) -> R:
    body = await read_json(request, UpdateRun)
    async with database(request).write() as s:
        info = await service.update_run(s, body)
    return ok({"run_info": info})


@post("/runs/delete", status_code=200, opt=RUN_DELETE)
async def delete_run(request: Req) -> R:
    body = await read_json(request, RunRef)
    async with database(request).write() as s:
        await service.delete_run(s, body.id)
    return ok()


@post("/runs/restore", status_code=200, opt=RUN_DELETE)
async def restore_run(request: Req) -> R:
    body = await read_json(request, RunRef)
    async with database(request).write() as s:
        await service.restore_run(s, body.id)
    return ok()


@post(
    "/runs/log-metric",
    status_code=200,
    opt=permission_opt(Permission("run", "edit", _RUN, also=(_METRIC_MODELS,))),
)
async def log_metric(request: Req) -> R:
    body = await read_json(request, LogMetric)
    run_id = body.run_id or body.run_uuid
    db = database(request)
    writes = _metric_writes(request)
    if writes is not None:
        try:
            done = await service.log_metric_grouped(writes, run_id, body)
        except GroupFailed:
            writes = None  # this write alone, on the usual path (it reports its own error)
    if writes is None:
        async with db.driver_write() as w:
            done = await service.log_metric_at_once(w, run_id, body)
    if not done:
        async with db.write() as s:
            await service.log_metric(s, run_id, body)
    return ok()


# Where the composition root keeps this app's group commit of metric writes.
METRIC_WRITES_STATE_KEY = "metric_writes"


def _metric_writes(request: Req) -> service.MetricWrites | None:
    """The app's group commit of metric writes (PostgreSQL; None on SQLite, or when the app was
    built without one): concurrent log-metric and metrics-only log-batch requests of this
    process share a statement and its commit (tracking.core.group_commit). The app's lifespan
    makes it, beside the database it writes to."""
    writes: service.MetricWrites | None = request.app.state.get(METRIC_WRITES_STATE_KEY)
    return writes


@post("/runs/log-parameter", status_code=200, opt=RUN_EDIT)
async def log_param(request: Req) -> R:
    body = await read_json(request, LogParam)
    async with database(request).write() as s:
        await service.log_param(s, body.run_id or body.run_uuid, body.key, body.value)
    return ok()


@post("/runs/set-tag", status_code=200, opt=RUN_EDIT)
async def set_tag(request: Req) -> R:
    body = await read_json(request, SetTag)
    async with database(request).write() as s:
        value = _user_tag_value(request, body.key, body.value)
        await service.set_tag(s, body.run_id or body.run_uuid, body.key, value)
    return ok()


@post("/runs/delete-tag", status_code=200, opt=RUN_ID_EDIT)
async def delete_tag(request: Req) -> R:
    body = await read_json(request, DeleteTag)
    async with database(request).write() as s:
        await service.delete_tag(s, body.run_id, body.key)
    return ok()


@post(
    "/runs/log-batch",
    status_code=200,
    opt=permission_opt(Permission("run", "edit", "run_id", also=(_BATCH_MODELS,))),
    # A full batch (1000 metrics, 100 params of 6000 characters, 100 tags of 8000) is ~1.5 MB.
    request_max_body_size=LOG_BATCH_MAX_BODY,
)
async def log_batch(request: Req) -> R:
    body = await read_json(request, LogBatch)
    for tag in body.tags:
        tag.value = _user_tag_value(request, tag.key, tag.value)
    db = database(request)
    if body.metrics and not body.params and not body.tags:
        # Metrics only (what autologging and training loops send): one statement on the
        # driver, no session; anything else, or a refusal to explain, takes the full path.
        writes = _metric_writes(request)
        if writes is not None:
            try:
                if await service.log_batch_grouped(writes, body):
                    return ok()
            except GroupFailed:
                writes = None
        if writes is None:
            async with db.driver_write() as w:
                if await service.log_batch_at_once(w, body):
                    return ok()
    async with db.write() as s:
        await service.log_batch(s, body)
    return ok()


@post(
    "/runs/log-inputs",
    status_code=200,
    opt=permission_opt(Permission("run", "edit", "run_id", also=(_LINKED_MODELS,))),
    # MLflow allows dataset schemas up to 1 MB and profiles up to 16 MB.
    request_max_body_size=LOG_INPUTS_MAX_BODY,
)
async def log_inputs(request: Req) -> R:
    body = await read_json(request, LogInputs)
    async with database(request).write() as s:
        await service.log_inputs(s, body)
    return ok()


@post(
    "/runs/outputs",
    status_code=200,
    opt=permission_opt(Permission("run", "edit", "run_id", also=(_LINKED_MODELS,))),
)
async def log_outputs(request: Req) -> R:
    body = await read_json(request, LogOutputs)
    async with database(request).write() as s:
        await service.log_outputs(s, body.run_id, body.models)
    return ok()


async def _search_runs(request: Req, body: SearchRuns) -> R:
    db = database(request)
    scope = visibility(request, "experiment")
    # The query and the page's runs on the driver; the session only to refuse a bad request.
    async with db.driver_read() as r:
        found: tuple[list[Any], str | None] | None
        found = await service.search_runs_at_once(r, body, scope=scope)
    if found is None:
        async with db.read() as s:
            found = await service.search_runs(s, body, scope=scope)
    runs, token = found
    return ok(_page("runs", runs, token))


@post("/runs/search", status_code=200, opt=EXPERIMENT_SEARCH)
async def search_runs(request: Req) -> R:
    return await _search_runs(request, await read_json(request, SearchRuns))


@get("/runs/search", opt=EXPERIMENT_SEARCH)
async def search_runs_get(request: Req) -> R:
    return await _search_runs(request, read_query(request, SearchRuns))


@get("/metrics/get-history", opt=RUN_READ)
async def get_metric_history(request: Req) -> R:
    q = read_query(request, GetMetricHistory)
    run_id = q.run_id or q.run_uuid
    db = database(request)
    # One statement on the driver; the session for a refusal, a missing run or an empty page.
    async with db.driver_read() as r:
        found: tuple[list[Any], str | None] | None
        found = await service.metric_history_at_once(
            r, run_id, q.metric_key, q.max_results, q.page_token
        )
    if found is None:
        async with db.read() as s:
            found = await service.metric_history(
                s, run_id, q.metric_key, q.max_results, q.page_token
            )
    metrics, token = found
    return ok(_page("metrics", metrics, token))


# --- logged models -------------------------------------------------------------------------------


@post(
    "/logged-models",
    status_code=200,
    opt=permission_opt(
        Permission(
            "experiment",
            "edit",
            "experiment_id",
            also=(Permission("run", "read", "source_run_id", optional=True),),
        )
    ),
)
async def create_logged_model(request: Req) -> R:
    body = await read_json(request, CreateLoggedModel)
    async with database(request).write() as s:
        model = await service.create_logged_model(s, body)
    return ok({"model": model})


@get("/logged-models/{model_id:str}", opt=LOGGED_MODEL_READ)
async def get_logged_model(request: Req, model_id: str) -> R:
    allow_deleted = request.query_params.get("allow_deleted", "").lower() == "true"
    async with database(request).read() as s:
        model = await service.get_logged_model(s, model_id, allow_deleted=allow_deleted)
    return ok({"model": model})


@patch("/logged-models/{model_id:str}", status_code=200, opt=LOGGED_MODEL_EDIT)
async def finalize_logged_model(request: Req, model_id: str) -> R:
    body = await read_json(request, FinalizeLoggedModel)
    async with database(request).write() as s:
        model = await service.finalize_logged_model(s, model_id, body.status)
    return ok({"model": model})


@delete("/logged-models/{model_id:str}", status_code=200, opt=LOGGED_MODEL_DELETE)
async def delete_logged_model(request: Req, model_id: str) -> R:
    async with database(request).write() as s:
        await service.delete_logged_model(s, model_id)
    return ok()


@patch("/logged-models/{model_id:str}/tags", status_code=200, opt=LOGGED_MODEL_EDIT)
async def set_logged_model_tags(request: Req, model_id: str) -> R:
    body = await read_json(request, SetLoggedModelTags)
    async with database(request).write() as s:
        await service.set_logged_model_tags(s, model_id, body.tags)
    return ok()  # mlflow server answers {} here (the client reads nothing back)


@delete("/logged-models/{model_id:str}/tags/{key:path}", status_code=200, opt=LOGGED_MODEL_EDIT)
async def delete_logged_model_tag(request: Req, model_id: str, key: str) -> R:
    async with database(request).write() as s:
        await service.delete_logged_model_tag(s, model_id, key.lstrip("/"))
    return ok()


@post("/logged-models/{model_id:str}/params", status_code=200, opt=LOGGED_MODEL_EDIT)
async def log_logged_model_params(request: Req, model_id: str) -> R:
    body = await read_json(request, LogLoggedModelParams)
    async with database(request).write() as s:
        await service.log_logged_model_params(s, model_id, body.params)
    return ok()


@post("/logged-models/search", status_code=200, opt=EXPERIMENT_SEARCH)
async def search_logged_models(request: Req) -> R:
    body = await read_json(request, SearchLoggedModels)
    async with database(request).read() as s:
        models, token = await service.search_logged_models(
            s, body, scope=visibility(request, "experiment")
        )
    return ok(_page("models", models, token))


ROUTE_HANDLERS = [
    create_experiment,
    get_experiment,
    get_experiment_by_name,
    search_experiments,
    search_experiments_get,
    update_experiment,
    delete_experiment,
    restore_experiment,
    set_experiment_tag,
    delete_experiment_tag,
    create_run,
    get_run,
    update_run,
    delete_run,
    restore_run,
    log_metric,
    log_param,
    set_tag,
    delete_tag,
    log_batch,
    log_inputs,
    log_outputs,
    search_runs,
    search_runs_get,
    get_metric_history,
    create_logged_model,
    search_logged_models,
    get_logged_model,
    finalize_logged_model,
    delete_logged_model,
    set_logged_model_tags,
    delete_logged_model_tag,
    log_logged_model_params,
]
