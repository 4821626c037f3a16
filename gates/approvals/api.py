"""Litestar controllers for release approvals (list, get, approve, reject, cancel, comment)."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get, post

from gates.approvals import service
from gates.approvals.schemas import ApprovalAct, ApprovalRef, ApprovalResult, ListApprovals
from gates.attestations.keys import ATTESTATION_KEYS_STATE_KEY
from gates.policies import ports
from gates.policies.api import decision_response
from registry.artifacts.api import STORAGE_STATE_KEY
from tracking.core.auth import Permission, ResourceScope, permission_opt, visibility
from tracking.core.errors import Unauthenticated
from tracking.core.http import database
from tracking.core.wire import ok, read_json, read_query

Req = Request[Any, Any, Any]
R = Response[bytes]

APPROVALS_PATH = "/approvals"
# Any signed-in caller, scoped to the models they may read: a request on another model is
# listed nowhere and answers 404 to get, approve, reject, cancel and comment, as a missing one.
MODEL_SCOPED = permission_opt(Permission("registered_model", "read", filtered=True))


def model_scope(request: Req) -> ResourceScope | None:
    """The registered models the caller may read (None: all), as the guard computed it."""
    return visibility(request, "registered_model")


def _result(result: ApprovalResult) -> R:
    if result.decision is not None and result.decision.outcome == "failed":
        # The final approval's re-evaluation refused: answer like a refusing gate.
        return decision_response(result.decision)
    return ok(result)


@get(f"{APPROVALS_PATH}/list", opt=MODEL_SCOPED)
async def list_approvals(request: Req) -> R:
    q = read_query(request, ListApprovals)
    async with database(request).read() as s:
        items, token = await service.list_requests(
            s, q.status, q.model, q.max_results, q.page_token, scope=model_scope(request)
        )
    out: dict[str, Any] = {"approval_requests": items}
    if token:
        out["next_page_token"] = token
    return ok(out)


@get(f"{APPROVALS_PATH}/get", opt=MODEL_SCOPED)
async def get_approval(request: Req) -> R:
    q = read_query(request, ApprovalRef)
    async with database(request).read() as s:
        item = await service.get_request(s, q.request_id, scope=model_scope(request))
    return ok({"approval_request": item})


@post(f"{APPROVALS_PATH}/approve", status_code=200, opt=MODEL_SCOPED)
async def approve(request: Req) -> R:
    body = await read_json(request, ApprovalAct)
    actor = await ports.request_actor(request)
    if ports.auth_enabled(request) and not actor.authenticated:
        raise Unauthenticated("Approving needs an authenticated user.")
    async with database(request).write() as s:
        await service.find_visible(s, body.request_id, model_scope(request))
        result = await service.approve(
            s,
            body.request_id,
            approver=actor.name,
            comment=body.comment,
            storage=request.app.state.get(STORAGE_STATE_KEY),
            check_role=ports.auth_enabled(request),
            attestations=request.app.state.get(ATTESTATION_KEYS_STATE_KEY),
        )
    return _result(result)


@post(f"{APPROVALS_PATH}/reject", status_code=200, opt=MODEL_SCOPED)
async def reject(request: Req) -> R:
    body = await read_json(request, ApprovalAct)
    actor = await ports.request_actor(request)
    async with database(request).write() as s:
        await service.find_visible(s, body.request_id, model_scope(request))
        result = await service.reject(
            s,
            body.request_id,
            actor=actor,
            comment=body.comment,
            check_role=ports.auth_enabled(request),
        )
    return _result(result)


@post(f"{APPROVALS_PATH}/cancel", status_code=200, opt=MODEL_SCOPED)
async def cancel(request: Req) -> R:
    body = await read_json(request, ApprovalAct)
    actor = await ports.request_actor(request)
    async with database(request).write() as s:
        await service.find_visible(s, body.request_id, model_scope(request))
        result = await service.cancel(s, body.request_id, actor=actor, comment=body.comment)
    return _result(result)


@post(f"{APPROVALS_PATH}/comment", status_code=200, opt=MODEL_SCOPED)
async def comment(request: Req) -> R:
    body = await read_json(request, ApprovalAct)
    actor = await ports.request_actor(request)
    async with database(request).write() as s:
        result = await service.add_comment(
            s,
            body.request_id,
            actor=actor,
            comment=body.comment,
            scope=model_scope(request),
            check_role=ports.auth_enabled(request),
        )
    return _result(result)


ROUTE_HANDLERS = [list_approvals, get_approval, approve, reject, cancel, comment]
