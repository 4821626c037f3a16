"""The two GraphQL operations MLflow's UI sends for classic ML pages, answered from services.

MLflow's experiment and run pages ask ``graphql`` for ``MlflowGetExperimentQuery`` and
``GetRun``. mlgate runs no GraphQL engine: it recognises these operations by name and answers
their fixed field sets (the UI's queries are compiled into its bundle), in MLflow's shape:
numbers that are int64 on the wire as strings, ``__typename`` on every object, and a failed
lookup as ``{"data": {<field>: null}, "errors": [<message>]}``. Any other operation is refused
with 501 ``NOT_IMPLEMENTED``.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, Response, post

from gates.identity.policy import visible_scope
from gates.server.mlflow_ui.prefix import GRAPHQL_PATH
from gates.server.security import Authorizer
from registry import service as registry_service
from registry.schemas import SearchModelVersions
from tracking import service as tracking_service
from tracking.core.auth import AUTHENTICATED, Permission, current_principal, permission_opt
from tracking.core.errors import MlflowError, NotImplementedFeature
from tracking.core.http import database
from tracking.core.wire import ok, read_json
from tracking.schemas import ExperimentOut, RunOut

Req = Request[Any, Any, Any]
# How many of a run's model versions the run page lists.
MAX_RUN_VERSIONS = 100


class GraphQLRequest(msgspec.Struct):
    operationName: str | None = None  # GraphQL's own field name
    variables: dict[str, Any] = {}
    query: str | None = None


def _s(value: int | None) -> str | None:
    return None if value is None else str(value)


def _tags(items: Any, typename: str) -> list[dict[str, Any]]:
    return [{"__typename": typename, "key": t.key, "value": t.value} for t in items]


def _experiment(e: ExperimentOut) -> dict[str, Any]:
    return {
        "__typename": "MlflowExperiment",
        "artifactLocation": e.artifact_location,
        "creationTime": _s(e.creation_time),
        "effectiveTraceArchivalRetention": "",
        "experimentId": e.experiment_id,
        "lastUpdateTime": _s(e.last_update_time),
        "lifecycleStage": e.lifecycle_stage,
        "name": e.name,
        "tags": _tags(e.tags, "MlflowExperimentTag"),
    }


def _run(run: RunOut, experiment: ExperimentOut, versions: list[Any]) -> dict[str, Any]:
    return {
        "__typename": "MlflowRunExtension",
        "info": _run_info(run),
        "experiment": _experiment(experiment),
        "modelVersions": [
            {
                "__typename": "MlflowModelVersion",
                "name": v.name,
                "source": v.source,
                "status": v.status,
                "version": v.version,
            }
            for v in versions
        ],
        "data": _run_data(run),
        "inputs": _run_inputs(run),
        "outputs": {
            "__typename": "MlflowRunOutputs",
            "modelOutputs": [
                {"__typename": "MlflowModelOutput", "modelId": m.model_id, "step": str(m.step)}
                for m in (run.outputs.model_outputs if run.outputs is not None else ())
            ],
        },
    }


def _run_info(run: RunOut) -> dict[str, Any]:
    info = run.info
    return {
        "__typename": "MlflowRunInfo",
        "artifactUri": info.artifact_uri,
        "endTime": _s(info.end_time),
        "experimentId": info.experiment_id,
        "lifecycleStage": info.lifecycle_stage,
        "runName": info.run_name,
        "runUuid": info.run_uuid,
        "startTime": _s(info.start_time),
        "status": info.status,
        "userId": info.user_id,
    }


def _run_data(run: RunOut) -> dict[str, Any]:
    return {
        "__typename": "MlflowRunData",
        "metrics": [
            {
                "__typename": "MlflowMetricExtension",
                "key": m.key,
                "step": str(m.step),
                "timestamp": str(m.timestamp),
                "value": m.value,
            }
            for m in run.data.metrics
        ],
        "params": _tags(run.data.params, "MlflowParam"),
        "tags": _tags(run.data.tags, "MlflowRunTag"),
    }


def _run_inputs(run: RunOut) -> dict[str, Any]:
    return {
        "__typename": "MlflowRunInputs",
        "datasetInputs": [
            {
                "__typename": "MlflowDatasetInput",
                "dataset": {
                    "__typename": "MlflowDataset",
                    "digest": d.dataset.digest,
                    "name": d.dataset.name,
                    "profile": d.dataset.profile,
                    "schema": d.dataset.schema,
                    "source": d.dataset.source,
                    "sourceType": d.dataset.source_type,
                },
                "tags": _tags(d.tags, "MlflowInputTag"),
            }
            for d in run.inputs.dataset_inputs
        ],
        "modelInputs": [
            {"__typename": "MlflowModelInput", "modelId": m.model_id}
            for m in run.inputs.model_inputs
        ],
    }


async def _check(request: Req, permission: Permission, value: str) -> None:
    """The same check the REST route for this object makes (nothing with auth off or admin)."""
    principal = current_principal(request)
    settings = request.app.state["settings"]
    if not settings.auth or principal is None or principal.is_admin:
        return
    await Authorizer(request, principal).check_value(permission, value)


def _model_scope(request: Req) -> Any:
    principal = current_principal(request)
    if not request.app.state["settings"].auth or principal is None or principal.is_admin:
        return None
    return visible_scope(principal.grants, "registered_model")


def _argument(variables: dict[str, Any], outer: str, inner: str) -> str:
    """``variables[outer][inner]`` as text ("" when absent or not a string or number)."""
    holder = variables.get(outer)
    value = holder.get(inner) if isinstance(holder, dict) else None
    return str(value) if isinstance(value, str | int) and not isinstance(value, bool) else ""


async def _get_experiment(request: Req, variables: dict[str, Any]) -> dict[str, Any]:
    experiment_id = _argument(variables, "input", "experimentId")
    await _check(request, Permission("experiment", "read"), experiment_id)
    async with database(request).read() as s:
        experiment = await tracking_service.get_experiment(s, experiment_id)
    return {
        "__typename": "MlflowGetExperimentResponse",
        "apiError": None,
        "experiment": _experiment(experiment),
    }


async def _get_run(request: Req, variables: dict[str, Any]) -> dict[str, Any]:
    run_id = _argument(variables, "data", "runId")
    await _check(request, Permission("run", "read"), run_id)
    async with database(request).read() as s:
        run = await tracking_service.get_run(s, run_id)
        experiment = await tracking_service.get_experiment(s, run.info.experiment_id)
        versions, _ = await registry_service.search_model_versions(
            s,
            SearchModelVersions(
                filter=f"run_id = '{run.info.run_uuid}'", max_results=MAX_RUN_VERSIONS
            ),
            scope=_model_scope(request),
        )
    return {
        "__typename": "MlflowGetRunResponse",
        "apiError": None,
        "run": _run(run, experiment, versions),
    }


OPERATIONS = {
    "MlflowGetExperimentQuery": ("mlflowGetExperiment", _get_experiment),
    "GetRun": ("mlflowGetRun", _get_run),
}


@post(GRAPHQL_PATH, status_code=200, opt=permission_opt(AUTHENTICATED), include_in_schema=False)
async def graphql(request: Req) -> Response[bytes]:
    body = await read_json(request, GraphQLRequest)
    found = OPERATIONS.get(body.operationName or "")
    if found is None:
        raise NotImplementedFeature(
            f"GraphQL operation {body.operationName!r} is not supported by mlgate (only the "
            "classic ML pages' MlflowGetExperimentQuery and GetRun are)."
        )
    field, answer = found
    try:
        data = await answer(request, body.variables)
    except MlflowError as exc:
        if exc.status_code >= 500:
            raise
        return ok({"data": {field: None}, "errors": [exc.message]})
    return ok({"data": {field: data}, "errors": None})
