"""Litestar controllers: watch a pointer, report what a replica runs, desired versus actual."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get, post

from gates.deployments import service
from gates.deployments.schemas import DeploymentsQuery, ReportBody, WatchQuery
from gates.deployments.watch import WATCH_LIMIT_STATE_KEY, WatchLimit, wait_for_move
from tracking.core.auth import Permission, actor_name, permission_opt
from tracking.core.http import database
from tracking.core.wire import ok, read_json, read_query

Req = Request[Any, Any, Any]
R = Response[bytes]

MODEL_READ = permission_opt(Permission("registered_model", "read", "name"))
# Reporting feeds drift events and the desired-versus-actual view, so it needs more than read:
# the editor role on the model (what registering its versions needs), never a body claim.
MODEL_EDIT = permission_opt(Permission("registered_model", "edit", "name"))


def _watch_limit(request: Req) -> WatchLimit:
    limit: WatchLimit = request.app.state[WATCH_LIMIT_STATE_KEY]
    return limit


@get("/watch", opt=MODEL_READ)
async def watch(request: Req) -> R:
    """Long-poll ``models:/name/Stage`` or ``models:/name@alias`` until it moves."""
    q = read_query(request, WatchQuery)
    target = service.parse_target(q.stage, q.alias)
    timeout = service.watch_timeout(q.timeout)
    with _watch_limit(request).slot():
        state, moved = await wait_for_move(
            database(request),
            q.name,
            target,
            if_none_match=request.headers.get("if-none-match"),
            since=q.since,
            wait_seconds=timeout,
        )
    etag = service.etag_of(state, target)
    if not moved:
        return Response(content=b"", status_code=304, headers={"ETag": etag})
    response = ok(service.watch_out(state, target))
    response.headers["ETag"] = etag
    response.headers["Cache-Control"] = "no-store"
    return response


@post("/deployments/report", status_code=200, opt=MODEL_EDIT)
async def report(request: Req) -> R:
    body = await read_json(request, ReportBody)
    drift_after_ms = int(request.app.state["settings"].drift_after_seconds * 1000)
    async with database(request).write() as s:
        out = await service.report(
            s, body, actor=actor_name(request), drift_after_ms=drift_after_ms
        )
    return ok({"deployment": out})


@get("/deployments", opt=MODEL_READ)
async def deployments(request: Req) -> R:
    q = read_query(request, DeploymentsQuery)
    async with database(request).read() as s:
        found = await service.deployments_of(s, q.name, q.deployment)
    return ok({"deployments": found})


# Mounted under MLGATE_API_PREFIX.
MLGATE_ROUTE_HANDLERS = [watch, report, deployments]
