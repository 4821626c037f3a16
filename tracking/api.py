"""Litestar controllers for MLflow's tracking REST API: parse, call the service, render."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, delete, get, patch, post

from tracking import service
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

# --- experiments -------------------------------------------------------------------------------


@post("/experiments/create", status_code=200)
async def create_experiment(request: Req) -> R:
    body = await read_json(request, CreateExperiment)
    async with database(request).write() as s:
        experiment_id = await service.create_experiment(s, body)
    return ok({"experiment_id": experiment_id})


@get("/experiments/get")
async def get_experiment(request: Req) -> R:
    q = read_query(request, GetExperiment)
    async with database(request).read() as s:
        experiment = await service.get_experiment(s, q.experiment_id)
    return ok({"experiment": experiment})


@get("/experiments/get-by-name")
async def get_experiment_by_name(request: Req) -> R:
    q = read_query(request, GetExperimentByName)
    async with database(request).read() as s:
        experiment = await service.get_experiment_by_name(s, q.experiment_name)
    return ok({"experiment": experiment})


async def _search_experiments(request: Req, body: SearchExperiments) -> R:
    async with database(request).read() as s:
        experiments, token = await service.search_experiments(s, body)
    out: dict[str, Any] = {"experiments": experiments}
    if token:
        out["next_page_token"] = token
    return ok(out)


@post("/experiments/search", status_code=200)
async def search_experiments(request: Req) -> R:
    return await _search_experiments(request, await read_json(request, SearchExperiments))


@get("/experiments/search")
async def search_experiments_get(request: Req) -> R:
    return await _search_experiments(request, read_query(request, SearchExperiments))


@post("/experiments/update", status_code=200)
async def update_experiment(request: Req) -> R:
    body = await read_json(request, UpdateExperiment)
    async with database(request).write() as s:
        await service.rename_experiment(s, body.experiment_id, body.new_name)
    return ok()


@post("/experiments/delete", status_code=200)
async def delete_experiment(request: Req) -> R:
    body = await read_json(request, ExperimentRef)
    async with database(request).write() as s:
        await service.delete_experiment(s, body.experiment_id)
    return ok()


@post("/experiments/restore", status_code=200)
async def restore_experiment(request: Req) -> R:
    body = await read_json(request, ExperimentRef)
    async with database(request).write() as s:
        await service.restore_experiment(s, body.experiment_id)
    return ok()


@post("/experiments/set-experiment-tag", status_code=200)
async def set_experiment_tag(request: Req) -> R:
    body = await read_json(request, SetExperimentTag)
    async with database(request).write() as s:
        await service.set_experiment_tag(s, body.experiment_id, body.key, body.value)
    return ok()


@post("/experiments/delete-experiment-tag", status_code=200)
async def delete_experiment_tag(request: Req) -> R:
    body = await read_json(request, DeleteExperimentTag)
    async with database(request).write() as s:
        await service.delete_experiment_tag(s, body.experiment_id, body.key)
    return ok()


# --- runs ----------------------------------------------------------------------------------------


@post("/runs/create", status_code=200)
async def create_run(request: Req) -> R:
    body = await read_json(request, CreateRun)
    async with database(request).write() as s:
        run = await service.create_run(s, body)
    return ok({"run": run})


@get("/runs/get")
async def get_run(request: Req) -> R:
    q = read_query(request, RunRef)
    async with database(request).read() as s:
        run = await service.get_run(s, q.id)
    return ok({"run": run})


@post("/runs/update", status_code=200)
async def update_run(request: Req) -> R:
    body = await read_json(request, UpdateRun)
    async with database(request).write() as s:
        info = await service.update_run(s, body)
    return ok({"run_info": info})


@post("/runs/delete", status_code=200)
async def delete_run(request: Req) -> R:
    body = await read_json(request, RunRef)
    async with database(request).write() as s:
        await service.delete_run(s, body.id)
    return ok()


@post("/runs/restore", status_code=200)
async def restore_run(request: Req) -> R:
    body = await read_json(request, RunRef)
    async with database(request).write() as s:
        await service.restore_run(s, body.id)
    return ok()


@post("/runs/log-metric", status_code=200)
async def log_metric(request: Req) -> R:
    body = await read_json(request, LogMetric)
    async with database(request).write() as s:
        await service.log_metric(s, body.run_id or body.run_uuid, body)
    return ok()


@post("/runs/log-parameter", status_code=200)
async def log_param(request: Req) -> R:
    body = await read_json(request, LogParam)
    async with database(request).write() as s:
        await service.log_param(s, body.run_id or body.run_uuid, body.key, body.value)
    return ok()


@post("/runs/set-tag", status_code=200)
async def set_tag(request: Req) -> R:
    body = await read_json(request, SetTag)
    async with database(request).write() as s:
        await service.set_tag(s, body.run_id or body.run_uuid, body.key, body.value)
    return ok()


@post("/runs/delete-tag", status_code=200)
async def delete_tag(request: Req) -> R:
    body = await read_json(request, DeleteTag)
    async with database(request).write() as s:
        await service.delete_tag(s, body.run_id, body.key)
    return ok()


@post("/runs/log-batch", status_code=200)
async def log_batch(request: Req) -> R:
    body = await read_json(request, LogBatch)
    async with database(request).write() as s:
        await service.log_batch(s, body)
    return ok()


@post("/runs/log-inputs", status_code=200)
async def log_inputs(request: Req) -> R:
    body = await read_json(request, LogInputs)
    async with database(request).write() as s:
        await service.log_inputs(s, body)
    return ok()


@post("/runs/outputs", status_code=200)
async def log_outputs(request: Req) -> R:
    body = await read_json(request, LogOutputs)
    async with database(request).write() as s:
        await service.log_outputs(s, body.run_id, body.models)
    return ok()


async def _search_runs(request: Req, body: SearchRuns) -> R:
    async with database(request).read() as s:
        runs, token = await service.search_runs(s, body)
    out: dict[str, Any] = {"runs": runs}
    if token:
        out["next_page_token"] = token
    return ok(out)


@post("/runs/search", status_code=200)
async def search_runs(request: Req) -> R:
    return await _search_runs(request, await read_json(request, SearchRuns))


@get("/runs/search")
async def search_runs_get(request: Req) -> R:
    return await _search_runs(request, read_query(request, SearchRuns))


@get("/metrics/get-history")
async def get_metric_history(request: Req) -> R:
    q = read_query(request, GetMetricHistory)
    async with database(request).read() as s:
        metrics, token = await service.metric_history(
            s, q.run_id or q.run_uuid, q.metric_key, q.max_results, q.page_token
        )
    out: dict[str, Any] = {"metrics": metrics}
    if token:
        out["next_page_token"] = token
    return ok(out)


# --- logged models -------------------------------------------------------------------------------


@post("/logged-models", status_code=200)
async def create_logged_model(request: Req) -> R:
    body = await read_json(request, CreateLoggedModel)
    async with database(request).write() as s:
        model = await service.create_logged_model(s, body)
    return ok({"model": model})


@get("/logged-models/{model_id:str}")
async def get_logged_model(request: Req, model_id: str) -> R:
    allow_deleted = request.query_params.get("allow_deleted", "").lower() == "true"
    async with database(request).read() as s:
        model = await service.get_logged_model(s, model_id, allow_deleted=allow_deleted)
    return ok({"model": model})


@patch("/logged-models/{model_id:str}", status_code=200)
async def finalize_logged_model(request: Req, model_id: str) -> R:
    body = await read_json(request, FinalizeLoggedModel)
    async with database(request).write() as s:
        model = await service.finalize_logged_model(s, model_id, body.status)
    return ok({"model": model})


@delete("/logged-models/{model_id:str}", status_code=200)
async def delete_logged_model(request: Req, model_id: str) -> R:
    async with database(request).write() as s:
        await service.delete_logged_model(s, model_id)
    return ok()


@patch("/logged-models/{model_id:str}/tags", status_code=200)
async def set_logged_model_tags(request: Req, model_id: str) -> R:
    body = await read_json(request, SetLoggedModelTags)
    async with database(request).write() as s:
        model = await service.set_logged_model_tags(s, model_id, body.tags)
    return ok({"model": model})


@delete("/logged-models/{model_id:str}/tags/{key:path}", status_code=200)
async def delete_logged_model_tag(request: Req, model_id: str, key: str) -> R:
    async with database(request).write() as s:
        await service.delete_logged_model_tag(s, model_id, key.lstrip("/"))
    return ok()


@post("/logged-models/{model_id:str}/params", status_code=200)
async def log_logged_model_params(request: Req, model_id: str) -> R:
    body = await read_json(request, LogLoggedModelParams)
    async with database(request).write() as s:
        await service.log_logged_model_params(s, model_id, body.params)
    return ok()


@post("/logged-models/search", status_code=200)
async def search_logged_models(request: Req) -> R:
    body = await read_json(request, SearchLoggedModels)
    async with database(request).read() as s:
        models, token = await service.search_logged_models(s, body)
    out: dict[str, Any] = {"models": models}
    if token:
        out["next_page_token"] = token
    return ok(out)


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
