"""Litestar controllers for a gate's OIDC trusts (admin), and reading a CI token off a request."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from litestar import Request, Response, get, post

from gates.policies import oidc_trusts, ports
from gates.policies.jwks import OIDC_KEYS_STATE_KEY, IssuerKeys
from gates.policies.oidc import looks_like_jwt
from gates.policies.promotion import validate_request
from gates.policies.schemas import OidcTrustRef, OidcTrustSpec, PromoteRequest
from tracking.core.auth import ADMIN, permission_opt
from tracking.core.errors import PermissionDenied
from tracking.core.http import database
from tracking.core.wire import ok, read_json, read_query

Req = Request[Any, Any, Any]
R = Response[bytes]
OIDC_PATH = "/gates/oidc"


async def _admin(request: Req) -> str:
    actor = await ports.request_actor(request)
    if not actor.is_admin:
        raise PermissionDenied("Managing a gate's OIDC trust requires the admin role.")
    return actor.name


@post(f"{OIDC_PATH}/add", status_code=200, opt=permission_opt(ADMIN))
async def add_trust(request: Req) -> R:
    body = await read_json(request, OidcTrustSpec)
    actor = await _admin(request)
    loopback = request.app.state["settings"].oidc_allow_http_loopback
    async with database(request).write() as s:
        trust = await oidc_trusts.add_trust(s, body, actor=actor, allow_http_loopback=loopback)
    return ok({"trust": trust})


@post(f"{OIDC_PATH}/remove", status_code=200, opt=permission_opt(ADMIN))
async def remove_trust(request: Req) -> R:
    body = await read_json(request, OidcTrustRef)
    actor = await _admin(request)
    async with database(request).write() as s:
        trust = await oidc_trusts.remove_trust(s, body.gate, body.trust_id, actor=actor)
    return ok({"trust": trust})


@get(f"{OIDC_PATH}/list", opt=permission_opt(ADMIN))
async def list_trusts(request: Req) -> R:
    q = read_query(request, OidcTrustRef)
    await _admin(request)
    async with database(request).read() as s:
        trusts = await oidc_trusts.list_trusts(s, q.gate)
    return ok({"trusts": trusts})


def oidc_token(headers: Mapping[str, str]) -> str | None:
    """The JWT of ``Authorization: Bearer <jwt>``, or None (no header, or an mlgate token)."""
    header = headers.get("authorization") or ""
    scheme, _, credentials = header.strip().partition(" ")
    credentials = credentials.strip()
    if scheme.lower() == "bearer" and looks_like_jwt(credentials):
        return credentials
    return None


async def verify_oidc_caller(
    request: Req, body: PromoteRequest, token: str
) -> oidc_trusts.OidcCaller:
    """Check a promote request's CI token against the trusts of the gate it asks, before the
    deciding transaction (fetching an issuer's keys must not hold a database transaction)."""
    model, target = validate_request(body)
    async with database(request).read() as s:
        trusts = await oidc_trusts.trusts_for(s, model, target)
    keys: IssuerKeys = request.app.state[OIDC_KEYS_STATE_KEY]
    return await oidc_trusts.verify_token(token, trusts, keys)


ROUTE_HANDLERS = [add_trust, remove_trust, list_trusts]
