"""The approvals inbox: release approval requests with their decision record and champion
comparison, and the approve / reject forms (acting through the approvals service exactly as
the JSON API does)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from litestar import Request, Response, get, post
from sqlalchemy.ext.asyncio import AsyncSession

from gates.approvals import service
from gates.approvals.duties import may_cancel, separation_of_duties
from gates.approvals.schemas import STATUSES, ApprovalOut
from gates.attestations.keys import ATTESTATION_KEYS_STATE_KEY
from gates.policies import ports
from gates.policies import service as policies
from gates.policies.schemas import DecisionOut
from gates.server.web.pages.registry_pages import (
    Comparison,
    comparison,
    load_runs,
    metric_directions,
    model_url,
    operator_of,
    query_text,
    version_url,
)
from gates.server.web.render import page, redirect_with_flash, with_query
from registry.artifacts.api import RAW_BODY_OPT, STORAGE_STATE_KEY
from registry.service.registered_models import current_holders
from tracking.core.auth import (
    Permission,
    Principal,
    ResourceScope,
    current_principal,
    permission_opt,
    visibility,
)
from tracking.core.errors import MlflowError, Unauthenticated
from tracking.core.http import database

Req = Request[Any, Any, Any]

INBOX_PAGE = 20
MAX_COMMENT_FORM = 10_000
# The same scope as the JSON API (gates.approvals.api): any signed-in user, shown only the
# requests on models they may read, filtered inside the query.
INBOX = permission_opt(Permission("registered_model", "read", filtered=True))
ACT = permission_opt(Permission("registered_model", "read", filtered=True), **{RAW_BODY_OPT: True})


@dataclass(slots=True)
class Card:
    request: ApprovalOut
    decision: DecisionOut | None
    comparison: Comparison
    can_act: bool
    model_href: str
    version_href: str
    can_cancel: bool = False
    # Why separation of duties bars this caller from approving (the buttons are not shown).
    barred: str | None = None


async def _who_may_act(
    s: AsyncSession, r: Any, actor: ports.Actor, check_role: bool
) -> tuple[bool, str | None]:
    """Whether the inbox offers approve/reject to ``actor`` and, if duties bar them, why."""
    barred = separation_of_duties(
        actor.name,
        requester=r.requester,
        run_author=r.run_author,
        run_id=r.run_id,
        version=r.version,
    )
    can_act = (
        r.status == "pending"
        and barred is None
        and await service.may_approve(s, actor, r.model, r.target, check_role=check_role)
    )
    return can_act, barred if r.status == "pending" else None


async def inbox_data(
    s: AsyncSession,
    principal: Principal | None,
    actor: ports.Actor,
    check_role: bool,
    status: str | None,
    model: str | None,
    page_token: str | None,
    *,
    scope: ResourceScope | None = None,
) -> tuple[list[Card], str | None]:
    """One page of cards on the models ``scope`` lets the caller read (None: all): a fixed
    number of queries however many requests it holds."""
    found, token = await service.list_requests(
        s, status, model, INBOX_PAGE, page_token, scope=scope
    )
    decisions = await policies.decisions_by_ids(s, [r.decision_id for r in found])
    holders = await current_holders(s, [(r.model, r.target) for r in found])
    bound = await policies.policies_for_models(s, sorted({r.model for r in found}))
    runs = await load_runs(
        s,
        principal,
        [*(r.run_id for r in found), *(h.run_id for h in holders.values())],
    )
    cards = []
    for r in found:
        gate = next(
            (b.policy for b in bound.get(r.model, []) if b.policy.policy_id == r.policy_id), None
        )
        holder = holders.get((r.model, r.target))
        can_act, barred = await _who_may_act(s, r, actor, check_role)
        cards.append(
            Card(
                request=r,
                decision=decisions.get(r.decision_id),
                comparison=comparison(
                    r.target,
                    r.version,
                    runs.get(r.run_id) if r.run_id else None,
                    holder,
                    runs,
                    metric_directions(gate.rules if gate else None),
                ),
                model_href=model_url(r.model),
                version_href=version_url(r.model, r.version),
                can_cancel=r.status == "pending" and may_cancel(actor, r.requester),
                can_act=can_act,
                barred=barred,
            )
        )
    return cards, token


@get("/approvals", opt=INBOX, include_in_schema=False)
async def inbox(request: Req) -> Response[Any]:
    status = query_text(request, "status", 32) or "pending"
    if status == "all":
        status = ""
    model = query_text(request, "model", 300) or None
    token = query_text(request, "page_token") or None
    cards: list[Card] = []
    next_token = None
    error = None
    try:
        async with database(request).read() as s:
            cards, next_token = await inbox_data(
                s,
                current_principal(request),
                await ports.request_actor(request),
                ports.auth_enabled(request),
                status or None,
                model,
                token,
                scope=visibility(request, "registered_model"),
            )
    except MlflowError as exc:
        if exc.status_code >= 500:
            raise
        error = exc.message
    return page(
        request,
        "approvals.html",
        status_code=400 if error else 200,
        cards=cards,
        status=status or "all",
        statuses=(*STATUSES, "all"),
        model=model or "",
        error=error,
        next_url=(
            with_query("/approvals", status=status or "all", model=model, page_token=next_token)
            if next_token
            else None
        ),
        operator_of=operator_of,
        version_url=version_url,
    )


def _back(request: Req, kind: str, message: str, request_id: str) -> Response[Any]:
    anchor = quote(request_id, safe="")
    return redirect_with_flash(request, f"/approvals#approval-{anchor}", kind, message)


async def _comment(request: Req) -> str | None:
    form = await request.form()
    value = form.get("comment")
    if not isinstance(value, str):
        return None
    return value.strip()[:MAX_COMMENT_FORM] or None


@post("/approvals/{request_id:str}/approve", opt=ACT, include_in_schema=False, status_code=303)
async def approve(request: Req, request_id: str) -> Response[Any]:
    comment = await _comment(request)
    # The same actor, role check and storage as POST /api/2.0/mlgate/approvals/approve.
    actor = await ports.request_actor(request)
    if ports.auth_enabled(request) and not actor.authenticated:
        raise Unauthenticated("Approving needs an authenticated user.")
    try:
        async with database(request).write() as s:
            await service.find_visible(s, request_id, visibility(request, "registered_model"))
            result = await service.approve(
                s,
                request_id,
                approver=actor.name,
                comment=comment,
                storage=request.app.state.get(STORAGE_STATE_KEY),
                check_role=ports.auth_enabled(request),
                attestations=request.app.state.get(ATTESTATION_KEYS_STATE_KEY),
            )
    except MlflowError as exc:
        if exc.status_code >= 500:
            raise
        return _back(request, "error", exc.message, request_id)
    out = result.approval_request
    decision = result.decision
    if decision is not None and decision.outcome == "failed":
        failed = ", ".join(c.name for c in decision.checks if c.verdict == "fail")
        return _back(
            request,
            "error",
            f"The gate re-checked version {out.version} and refused it ({failed}); nothing moved.",
            request_id,
        )
    if decision is not None:
        message = f"Approved: {out.model} version {out.version} moved to {out.target}."
    else:
        message = (
            f"Approval recorded ({out.approvals} of {out.required_approvals}) for "
            f"{out.model} version {out.version} -> {out.target}."
        )
    return _back(request, "notice", message, request_id)


@post("/approvals/{request_id:str}/reject", opt=ACT, include_in_schema=False, status_code=303)
async def reject(request: Req, request_id: str) -> Response[Any]:
    comment = await _comment(request)
    actor = await ports.request_actor(request)
    try:
        async with database(request).write() as s:
            await service.find_visible(s, request_id, visibility(request, "registered_model"))
            result = await service.reject(
                s,
                request_id,
                actor=actor,
                comment=comment,
                check_role=ports.auth_enabled(request),
            )
    except MlflowError as exc:
        if exc.status_code >= 500:
            raise
        return _back(request, "error", exc.message, request_id)
    out = result.approval_request
    return _back(
        request,
        "notice",
        f"Rejected: {out.model} version {out.version} -> {out.target}.",
        request_id,
    )


@post("/approvals/{request_id:str}/cancel", opt=ACT, include_in_schema=False, status_code=303)
async def cancel(request: Req, request_id: str) -> Response[Any]:
    comment = await _comment(request)
    # The same actor, scope and rule (the requester or an admin) as POST .../approvals/cancel.
    actor = await ports.request_actor(request)
    try:
        async with database(request).write() as s:
            await service.find_visible(s, request_id, visibility(request, "registered_model"))
            result = await service.cancel(s, request_id, actor=actor, comment=comment)
    except MlflowError as exc:
        if exc.status_code >= 500:
            raise
        return _back(request, "error", exc.message, request_id)
    out = result.approval_request
    return _back(
        request,
        "notice",
        f"Cancelled: the request to move {out.model} version {out.version} to {out.target}.",
        request_id,
    )


ROUTE_HANDLERS = [inbox, approve, reject, cancel]
