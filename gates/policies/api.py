"""Litestar controllers for gate policies, secrets, decisions and the CI promotion webhook."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
from litestar import Request, Response, delete, get, post
from litestar.types import ASGIApp, Receive, Scope, Send

from gates.attestations.keys import ATTESTATION_KEYS_STATE_KEY
from gates.events.signing import SecretBox
from gates.policies import oidc_api, ports, promotion, service
from gates.policies.guard import OVERRIDE_HEADER, OverrideRequest, override_request
from gates.policies.schemas import (
    DecisionOut,
    DecisionRef,
    ListDecisions,
    ListPolicies,
    ListPolicyVersions,
    PolicyRef,
    PolicySpec,
    PromoteRequest,
    RevokeSecret,
    SecretRequest,
)
from gates.policies.signatures import parse_headers
from registry.artifacts.api import STORAGE_STATE_KEY
from tracking.core.auth import (
    ACCESS_ACTOR_SCOPE_KEY,
    ADMIN,
    PUBLIC,
    Permission,
    ResourceScope,
    permission_opt,
    visibility,
)
from tracking.core.errors import PermissionDenied, Unauthenticated
from tracking.core.http import database
from tracking.core.wire import JSON, decode_json, ok, read_json, read_query

Req = Request[Any, Any, Any]
R = Response[bytes]

# Where the gates API is mounted (beside MLflow's prefixes, like the registry's history API).
GATES_PATH = "/gates"
# Gates and decisions are read by anyone signed in, filtered inside each query to the models
# the caller may read (the guard's scope; admins and auth-off servers see everything). An
# object outside that scope answers 404 exactly as a missing one.
MODEL_SCOPED = permission_opt(Permission("registered_model", "read", filtered=True))


def model_scope(request: Req) -> ResourceScope | None:
    """The registered models the caller may read (None: all), as the guard computed it."""
    return visibility(request, "registered_model")


async def _admin(request: Req) -> str:
    actor = await ports.request_actor(request)
    if not actor.is_admin:
        raise PermissionDenied("Managing gates and their secrets requires the admin role.")
    return actor.name


def _page(key: str, items: list[Any], token: str | None) -> R:
    out: dict[str, Any] = {key: items}
    if token:
        out["next_page_token"] = token
    return ok(out)


# --- policies ------------------------------------------------------------------------------------


@post(f"{GATES_PATH}/create", status_code=200, opt=permission_opt(ADMIN))
async def create_gate(request: Req) -> R:
    body = await read_json(request, PolicySpec)
    actor = await _admin(request)
    async with database(request).write() as s:
        gate = await service.create_policy(s, body, actor=actor)
    return ok({"gate": gate})


@post(f"{GATES_PATH}/update", status_code=200, opt=permission_opt(ADMIN))
async def update_gate(request: Req) -> R:
    body = await read_json(request, PolicySpec)
    actor = await _admin(request)
    async with database(request).write() as s:
        gate, changed = await service.update_policy(s, body, actor=actor)
    return ok({"gate": gate, "changed": changed})


@get(f"{GATES_PATH}/get", opt=MODEL_SCOPED)
async def get_gate(request: Req) -> R:
    q = read_query(request, PolicyRef)
    async with database(request).read() as s:
        gate = await service.get_policy(s, q.name, scope=model_scope(request))
    return ok({"gate": gate})


@get(f"{GATES_PATH}/list", opt=MODEL_SCOPED)
async def list_gates(request: Req) -> R:
    q = read_query(request, ListPolicies)
    async with database(request).read() as s:
        gates, token = await service.list_policies(
            s, q.max_results, q.page_token, q.include_disabled, scope=model_scope(request)
        )
    return _page("gates", gates, token)


@get(f"{GATES_PATH}/versions", opt=MODEL_SCOPED)
async def list_gate_versions(request: Req) -> R:
    q = read_query(request, ListPolicyVersions)
    async with database(request).read() as s:
        versions, token = await service.list_policy_versions(
            s, q.name, q.max_results, q.page_token, scope=model_scope(request)
        )
    return _page("versions", versions, token)


async def _set_enabled(request: Req, enabled: bool) -> R:
    body = await read_json(request, PolicyRef)
    actor = await _admin(request)
    async with database(request).write() as s:
        gate = await service.set_enabled(s, body.name, enabled, actor=actor)
    return ok({"gate": gate})


@post(f"{GATES_PATH}/disable", status_code=200, opt=permission_opt(ADMIN))
async def disable_gate(request: Req) -> R:
    return await _set_enabled(request, False)


@post(f"{GATES_PATH}/enable", status_code=200, opt=permission_opt(ADMIN))
async def enable_gate(request: Req) -> R:
    return await _set_enabled(request, True)


@delete(f"{GATES_PATH}/delete", status_code=200, opt=permission_opt(ADMIN))
async def delete_gate(request: Req) -> R:
    # Decisions keep pointing at the policy's versions, so a delete disables the gate.
    return await _set_enabled(request, False)


# --- secrets -------------------------------------------------------------------------------------


def _secret_box(request: Req) -> SecretBox:
    """Gate secrets are sealed at rest under the same key as webhook subscription secrets."""
    return SecretBox(request.app.state["settings"].webhook_secret_key)


@post(f"{GATES_PATH}/secrets/add", status_code=200, opt=permission_opt(ADMIN))
async def add_secret(request: Req) -> R:
    body = await read_json(request, SecretRequest)
    actor = await _admin(request)
    async with database(request).write() as s:
        secret = await service.add_secret(s, body.gate, actor=actor, box=_secret_box(request))
    return ok({"secret": secret})


@post(f"{GATES_PATH}/secrets/rotate", status_code=200, opt=permission_opt(ADMIN))
async def rotate_secret(request: Req) -> R:
    body = await read_json(request, SecretRequest)
    actor = await _admin(request)
    async with database(request).write() as s:
        secret = await service.rotate_secret(
            s, body.gate, body.grace_seconds, actor=actor, box=_secret_box(request)
        )
    return ok({"secret": secret})


@post(f"{GATES_PATH}/secrets/revoke", status_code=200, opt=permission_opt(ADMIN))
async def revoke_secret(request: Req) -> R:
    body = await read_json(request, RevokeSecret)
    actor = await _admin(request)
    async with database(request).write() as s:
        secret = await service.revoke_secret(s, body.gate, body.secret_id, actor=actor)
    return ok({"secret": secret})


@get(f"{GATES_PATH}/secrets/list", opt=permission_opt(ADMIN))
async def list_secrets(request: Req) -> R:
    q = read_query(request, SecretRequest)
    await _admin(request)
    async with database(request).read() as s:
        secrets = await service.list_secrets(s, q.gate)
    return ok({"secrets": secrets})


# --- decisions and the webhook -------------------------------------------------------------------


@get(f"{GATES_PATH}/decisions/get", opt=MODEL_SCOPED)
async def get_decision(request: Req) -> R:
    q = read_query(request, DecisionRef)
    async with database(request).read() as s:
        decision = await service.get_decision(s, q.decision_id, scope=model_scope(request))
    return ok({"decision": decision})


@get(f"{GATES_PATH}/decisions/list", opt=MODEL_SCOPED)
async def list_decisions(request: Req) -> R:
    q = read_query(request, ListDecisions)
    async with database(request).read() as s:
        decisions, token = await service.list_decisions(
            s, q.model, q.target, q.max_results, q.page_token, scope=model_scope(request)
        )
    return _page("decisions", decisions, token)


def decision_response(decision: DecisionOut, *, replayed: bool = False) -> R:
    """200 passed (or approved since), 202 pending approval, 422 failed, 409 when the approval
    request it opened is closed (expired, rejected, cancelled, failed): the body is the
    decision record, and a refusal also carries MLflow's error fields so MLflow-style clients
    raise on it."""
    body: dict[str, Any] = msgspec.to_builtins(decision)
    headers = {"Idempotent-Replayed": "true"} if replayed else None
    status_now = decision.approval_status
    if decision.outcome == "pending_approval" and status_now in promotion.CLOSED_STATUSES:
        body["error_code"] = "APPROVAL_CLOSED"
        body["message"] = (
            f"Approval request {decision.approval_request_id} of {decision.model} -> "
            f"{decision.target} is {status_now} (decision {decision.decision_id}); nothing "
            'moved. Send the same request with "reopen": true to ask again.'
        )
        status = 409
    elif decision.outcome == "pending_approval" and status_now == "approved":
        status = 200
    elif decision.outcome == "failed":
        failed = [c.name for c in decision.checks if c.verdict == "fail"]
        body["error_code"] = "GATE_FAILED"
        body["message"] = (
            f"Gate '{decision.policy_name}' refused {decision.model} -> {decision.target}: "
            f"failed {', '.join(failed)} (decision {decision.decision_id})."
        )
        status = 422
    else:
        status = 202 if decision.outcome == "pending_approval" else 200
    return Response(
        content=msgspec.json.encode(body), status_code=status, media_type=JSON, headers=headers
    )


@post(f"{GATES_PATH}/promote", status_code=200, opt=permission_opt(PUBLIC))
async def promote(request: Req) -> R:
    raw = await request.body()
    body = decode_json(raw, PromoteRequest)
    signed = parse_headers(request.headers)
    token = oidc_api.oidc_token(request.headers) if signed is None else None
    bearer = None if signed is not None or token else await ports.bearer_actor(request)
    if signed is None and bearer is None and token is None:
        raise Unauthenticated(
            "Sign the request (webhook-id, webhook-timestamp, webhook-signature) with a gate "
            "secret, send the CI job's OIDC token as 'Authorization: Bearer <jwt>' to a gate "
            "that trusts its issuer, or send an API token as 'Authorization: Bearer <token>'."
        )
    oidc = None if token is None else await oidc_api.verify_oidc_caller(request, body, token)
    settings = request.app.state["settings"]
    storage = request.app.state.get(STORAGE_STATE_KEY)
    secret_box = _secret_box(request)
    # What needs no lock is read (and the files frozen) before the write transaction, which
    # then holds its connection for the writes only (see promotion.prepare).
    async with database(request).read() as s:
        prepared = await promotion.prepare(
            s,
            body,
            raw_body=raw,
            signed=signed,
            bearer=bearer,
            oidc=oidc,
            storage=storage,
            secret_box=secret_box,
        )
    async with database(request).write() as s:
        result = await promotion.promote(
            s,
            body,
            raw_body=raw,
            signed=signed,
            bearer=bearer,
            oidc=oidc,
            storage=storage,
            approval_ttl_hours=settings.approval_ttl_hours,
            secret_box=secret_box,
            attestations=request.app.state.get(ATTESTATION_KEYS_STATE_KEY),
            prepared=prepared,
        )
    if not result.replayed:
        # The signature or token was verified: name its gate secret or subject in the access line.
        request.scope[ACCESS_ACTOR_SCOPE_KEY] = result.decision.actor  # type: ignore[literal-required]
    return decision_response(result.decision, replayed=result.replayed)


# --- the dependency-free promote client --------------------------------------------------------

# Served as-is so a stock CI runner needs only curl and python3 (deploy/github-actions-promote.yml).
PROMOTE_CLIENT = Path(__file__).with_name("promote_client.py").read_bytes()


@get("/clients/promote.py", opt=permission_opt(PUBLIC))
async def promote_client() -> R:
    return Response(
        PROMOTE_CLIENT,
        media_type="text/x-python",  # Litestar adds "; charset=utf-8" to text types
        headers={"content-disposition": 'inline; filename="promote.py"'},
    )


# --- the override header -------------------------------------------------------------------------


def override_middleware(app: ASGIApp) -> ASGIApp:
    """Carry ``X-Mlgate-Override: <reason>`` to the pointer guard of this request."""
    header = OVERRIDE_HEADER.encode()

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for key, value in scope.get("headers", ()):
                if key.lower() == header:
                    reason = value.decode("utf-8", "replace")
                    token = override_request.set(OverrideRequest(reason, Request(scope, receive)))
                    try:
                        await app(scope, receive, send)
                    finally:
                        override_request.reset(token)
                    return
        await app(scope, receive, send)

    return middleware


ROUTE_HANDLERS = [
    create_gate,
    update_gate,
    get_gate,
    list_gates,
    list_gate_versions,
    disable_gate,
    enable_gate,
    delete_gate,
    add_secret,
    rotate_secret,
    revoke_secret,
    list_secrets,
    get_decision,
    list_decisions,
    promote,
    promote_client,
    *oidc_api.ROUTE_HANDLERS,
]
