"""Release approvals: open, approve (the last one re-checks the gate and moves), reject, cancel.

Who may sign off comes from identity (the approver role on the model); separation of duties
is enforced here: the requester and the run's author never approve their own promotion. Both
are authenticated principals: the requester is whoever authenticated the promotion (a gate
secret or a token's user), never the ``requested_by`` text a caller merely claims, and the run
author is the run's ``user_id``, which the server sets to the authenticated user when
authentication is on.
"""

from __future__ import annotations

from typing import Any

import msgspec
from sqlalchemy.ext.asyncio import AsyncSession

from gates.approvals import final, store
from gates.approvals.duties import may_cancel, separation_of_duties
from gates.approvals.errors import (
    AlreadyApproved,
    ApprovalClosed,
    ApprovalNotFound,
    NotAnApprover,
    SeparationOfDuties,
)
from gates.approvals.schemas import (
    STATUSES,
    ApprovalActionOut,
    ApprovalOut,
    ApprovalResult,
)
from gates.attestations.keys import AttestationKeyring
from gates.attestations.service import attest_approval
from gates.policies import ports
from gates.policies import service as policies
from gates.policies import store as policy_store
from gates.policies.ports import Actor
from registry.artifacts.storage import ArtifactStorage
from tracking.core.auth import ResourceScope
from tracking.core.clock import now_ms
from tracking.core.errors import InvalidParameter, PermissionDenied
from tracking.core.wire import decode_page_token, encode_page_token

MAX_COMMENT = 10_000
MAX_ACTIONS_SHOWN = 1000


def effective_status(row: Any, now: int) -> str:
    return "expired" if row.status == "pending" and row.expires_at <= now else str(row.status)


def _out(
    row: Any, approved_by: list[str], now: int, actions: list[Any] | None = None
) -> ApprovalOut:
    return ApprovalOut(
        request_id=row.id,
        decision_id=row.decision_id,
        status=effective_status(row, now),
        model=row.model_name,
        version=str(row.version),
        target=row.target,
        policy_id=str(row.policy_id),
        required_approvals=row.required_approvals,
        approvals=len(approved_by),
        approved_by=approved_by,
        requested_by=row.requested_by,
        requester=row.requester,
        created_at=row.created_at,
        expires_at=row.expires_at,
        run_id=row.run_id,
        digest=row.digest,
        run_author=row.run_author,
        resolved_at=row.resolved_at,
        resolved_by=row.resolved_by,
        resolution=row.resolution,
        actions=[
            ApprovalActionOut(
                kind=a.kind, actor=a.actor, created_at=a.created_at, comment=a.comment
            )
            for a in actions or []
        ],
    )


async def _render(s: AsyncSession, row: Any, now: int, *, with_actions: bool = True) -> ApprovalOut:
    approved = (await store.approvers(s, [row.id]))[row.id]
    actions = await store.actions(s, row.id, MAX_ACTIONS_SHOWN) if with_actions else None
    return _out(row, approved, now, actions)


def _comment(text: str | None) -> str | None:
    if text is not None and len(text) > MAX_COMMENT:
        raise InvalidParameter(f"A comment may be at most {MAX_COMMENT} characters.")
    return text or None


async def _find(
    s: AsyncSession,
    request_id: str | None,
    *,
    lock: bool = False,
    scope: ResourceScope | None = None,
) -> Any:
    if not request_id:
        raise InvalidParameter("Missing value for required parameter 'request_id'.")
    row = await store.get_request(s, request_id, lock=lock, scope=scope)
    if row is None:
        raise ApprovalNotFound(request_id)
    return row


async def _event(
    s: AsyncSession, kind: str, out: ApprovalOut, actor: str, *, notify: bool = True, **extra: Any
) -> None:
    """The audit entry of an approval action, and (``notify``) its outbound event."""
    payload = {**msgspec.to_builtins(out), **extra}
    payload.pop("actions", None)
    if notify:
        await ports.emit_event(s, kind, payload)
    await ports.audit(s, kind, f"approval:{out.request_id}", payload, actor)


# --- opening -------------------------------------------------------------------------------------


async def open_request(
    s: AsyncSession,
    *,
    decision_id: str,
    gate: policies.ResolvedGate,
    model: str,
    version: int,
    target: str,
    run_id: str | None,
    digest: str | None,
    requested_by: str,
    requester: str,
    run_author: str | None,
    ttl_hours: int,
) -> str:
    """Open the approval request of a decision (or return the pending one for this version)."""
    now = now_ms()
    existing = await store.pending_request_for(s, model, version, target, now)
    if existing is not None:
        return str(existing.id)
    request_id = policies.new_id()
    await store.insert_request(
        s,
        id=request_id,
        decision_id=decision_id,
        policy_id=gate.policy.id,
        policy_version_id=gate.version.id,
        model_name=model,
        version=version,
        target=target,
        run_id=run_id,
        digest=digest,
        required_approvals=gate.rules.required_approvals,
        status="pending",
        requested_by=requested_by,
        requester=requester,
        run_author=run_author,
        created_at=now,
        expires_at=now + ttl_hours * 3600 * 1000,
    )
    row = await _find(s, request_id)
    # The actor is the authenticated principal; ``requested_by`` stays a claim in the payload.
    await _event(s, "approval.requested", await _render(s, row, now, with_actions=False), requester)
    return request_id


# --- reading -------------------------------------------------------------------------------------


async def get_request(
    s: AsyncSession, request_id: str | None, *, scope: ResourceScope | None = None
) -> ApprovalOut:
    """A request by id; one on a model ``scope`` (None: all) hides answers as not found."""
    return await _render(s, await _find(s, request_id, scope=scope), now_ms())


async def find_visible(
    s: AsyncSession, request_id: str | None, scope: ResourceScope | None
) -> None:
    """Raise ApprovalNotFound, exactly as for a missing request, when the caller's ``scope``
    does not let them read the request's model: acting on it must not confirm it exists."""
    if scope is not None:
        await _find(s, request_id, scope=scope)


async def list_requests(
    s: AsyncSession,
    status: str | None = None,
    model: str | None = None,
    max_results: int | None = None,
    page_token: str | None = None,
    *,
    scope: ResourceScope | None = None,
) -> tuple[list[ApprovalOut], str | None]:
    """A page of requests on the models ``scope`` lets the caller read (None: all), filtered
    inside the query so pages stay full and page tokens stay right. The API and the web
    inbox both read through here."""
    if status and status not in STATUSES:
        raise InvalidParameter(f"Invalid status '{status}': use one of {', '.join(STATUSES)}.")
    limit = policies.page_limit(max_results)
    fingerprint = f"approvals:{status}:{model}"
    offset = decode_page_token(page_token, fingerprint)
    now = now_ms()
    rows = await store.list_requests(
        s, status=status, model=model, now=now, offset=offset, limit=limit + 1, scope=scope
    )
    token = encode_page_token(offset + limit, fingerprint) if len(rows) > limit else None
    page = rows[:limit]
    approved = await store.approvers(s, [r.id for r in page])
    return [_out(r, approved[r.id], now) for r in page], token


# --- actions -------------------------------------------------------------------------------------


async def _pending(s: AsyncSession, request_id: str | None, now: int) -> Any:
    row = await _find(s, request_id, lock=True)
    status = effective_status(row, now)
    if status != "pending":
        raise ApprovalClosed(row.id, status)
    return row


async def approve(
    s: AsyncSession,
    request_id: str | None,
    *,
    approver: str,
    comment: str | None = None,
    storage: ArtifactStorage | None = None,
    now: int | None = None,
    check_role: bool = True,
    attestations: AttestationKeyring | None = None,
) -> ApprovalResult:
    """Record ``approver``'s approval; the one that completes the count re-evaluates the gate
    (metrics, champion, and that the artifact digest is unchanged) and then moves the pointer
    in this transaction, or marks the request failed with the refusing decision. With
    ``attestations`` (the server's keyring) the move is attested in this transaction."""
    at = now_ms() if now is None else now
    row = await _pending(s, request_id, at)
    already = await _earlier_approvers(s, row, approver, check_role=check_role)
    await store.insert_action(
        s,
        request_id=row.id,
        kind="approve",
        actor=approver,
        comment=_comment(comment),
        created_at=at,
    )
    count = len(already) + 1
    completes = count >= row.required_approvals
    await _event(
        s,
        "approval.approved",
        await _render(s, row, at, with_actions=False),
        approver,
        final=completes,
    )
    if not completes:
        return ApprovalResult(await _render(s, row, at))
    policy_version = await policy_store.get_policy_version_by_id(s, row.policy_version_id)
    assert policy_version is not None
    decision = await final.reevaluate(s, row, policy_version, count, approver, storage)
    await final.execute_or_fail(s, row, policy_version, decision, approver, at)
    if attestations is not None and decision.outcome == "passed":  # --- ATTEST (issue 17)
        await attest_approval(s, attestations, decision, row, [*already, approver])
    row = await _find(s, row.id)
    out = await _render(s, row, at)
    # Subscribers learn the outcome from gate.decided; the audit log records the execution.
    kind = "approval.executed" if decision.outcome == "passed" else "approval.failed"
    await _event(s, kind, out, approver, notify=False, decision_id=decision.decision_id)
    return ApprovalResult(out, decision)


async def _earlier_approvers(
    s: AsyncSession, row: Any, approver: str, *, check_role: bool
) -> list[str]:
    """Who approved ``row`` before; raises when ``approver`` may not approve it (now)."""
    barred = separation_of_duties(
        approver,
        requester=row.requester,
        run_author=row.run_author,
        run_id=row.run_id,
        version=row.version,
    )
    if barred is not None:
        raise SeparationOfDuties(barred)
    # With authentication off there are no grants: any named user may sign off (separation of
    # duties above still holds).
    if check_role and not await ports.can_approve(s, approver, row.model_name, row.target):
        raise NotAnApprover(approver, row.model_name, row.target)
    already = (await store.approvers(s, [row.id]))[row.id]
    if approver in already:
        raise AlreadyApproved(row.id, approver)
    return already


async def reject(
    s: AsyncSession,
    request_id: str | None,
    *,
    actor: Actor,
    comment: str | None = None,
    check_role: bool = True,
) -> ApprovalResult:
    """An approver (or an admin) refuses the promotion; nothing moves."""
    at = now_ms()
    row = await _pending(s, request_id, at)
    allowed = actor.is_admin or not check_role
    if not allowed and not await ports.can_approve(s, actor.name, row.model_name, row.target):
        raise NotAnApprover(actor.name, row.model_name, row.target)
    await store.insert_action(
        s,
        request_id=row.id,
        kind="reject",
        actor=actor.name,
        comment=_comment(comment),
        created_at=at,
    )
    await store.update_request(
        s, row.id, status="rejected", resolved_at=at, resolved_by=actor.name, resolution=comment
    )
    out = await _render(s, await _find(s, row.id), at)
    await _event(s, "approval.rejected", out, actor.name)
    return ApprovalResult(out)


async def cancel(
    s: AsyncSession, request_id: str | None, *, actor: Actor, comment: str | None = None
) -> ApprovalResult:
    """The requester (or an admin) withdraws the request."""
    at = now_ms()
    row = await _pending(s, request_id, at)
    if not may_cancel(actor, row.requester):
        raise PermissionDenied("Only the requester or an admin can cancel an approval request.")
    await store.insert_action(
        s,
        request_id=row.id,
        kind="cancel",
        actor=actor.name,
        comment=_comment(comment),
        created_at=at,
    )
    await store.update_request(
        s, row.id, status="cancelled", resolved_at=at, resolved_by=actor.name, resolution=comment
    )
    out = await _render(s, await _find(s, row.id), at)
    await _event(s, "approval.cancelled", out, actor.name)
    return ApprovalResult(out)


async def add_comment(
    s: AsyncSession,
    request_id: str | None,
    *,
    actor: Actor,
    comment: str | None,
    scope: ResourceScope | None = None,
    check_role: bool = True,
) -> ApprovalResult:
    """Comment on a request: needs the approver role on its model and target (as approving
    does) or admin; a request on a model the caller cannot read (``scope``) is not found."""
    if not comment:
        raise InvalidParameter("Missing value for required parameter 'comment'.")
    at = now_ms()
    row = await _find(s, request_id, scope=scope)
    if not await may_approve(s, actor, row.model_name, row.target, check_role=check_role):
        raise NotAnApprover(actor.name, row.model_name, row.target)
    if await store.count_actions(s, row.id) >= MAX_ACTIONS_SHOWN:
        raise InvalidParameter(f"A request holds at most {MAX_ACTIONS_SHOWN} actions.")
    await store.insert_action(
        s,
        request_id=row.id,
        kind="comment",
        actor=actor.name,
        comment=_comment(comment),
        created_at=at,
    )
    out = await _render(s, row, at)
    await _event(s, "approval.commented", out, actor.name, comment=comment)
    return ApprovalResult(out)


# --- break-glass (database-direct) ---------------------------------------------------------------

BREAK_GLASS_PREFIX = "break-glass:"
MAX_BREAK_GLASS_REASON = 1000


async def break_glass(
    s: AsyncSession,
    request_id: str | None,
    *,
    approve: bool,
    claimed_admin: str,
    reason: str,
    check_admin: bool = True,
) -> ApprovalResult:
    """Close a request from the database side, when the server cannot be used.

    Whoever runs this holds the database credentials, so the named admin is only a claim: it
    must name an enabled administrator (``check_admin``, with authentication on), and it is
    recorded as ``break-glass:<name>``. A break-glass action is never an approval: it does not
    count toward the quorum, and an approve is an override that moves the version without the
    missing approvals. It is written to the audit trail as ``approval.break_glass``."""
    text = _break_glass_reason(reason)
    if check_admin and not await ports.is_active_admin(s, claimed_admin):
        raise PermissionDenied(f"Break-glass is for administrators; '{claimed_admin}' is not one.")
    at = now_ms()
    row = await _pending(s, request_id, at)
    actor = f"{BREAK_GLASS_PREFIX}{claimed_admin}"
    verb = "approve" if approve else "reject"
    counted = len((await store.approvers(s, [row.id]))[row.id])
    await store.insert_action(
        s,
        request_id=row.id,
        kind="break_glass",
        actor=actor,
        comment=_comment(f"{verb}: {text}"),
        created_at=at,
    )
    resolution = (
        f"break-glass {verb} from the database by (claimed) admin '{claimed_admin}' with "
        f"{counted}/{row.required_approvals} approvals: {text}"
    )
    if approve:
        await final.break_glass_move(s, row, actor)
    await store.update_request(
        s,
        row.id,
        status="approved" if approve else "rejected",
        resolved_at=at,
        resolved_by=actor,
        resolution=resolution,
    )
    out = await _render(s, await _find(s, row.id), at)
    await _event(
        s,
        "approval.break_glass",
        out,
        actor,
        break_glass=True,
        action=verb,
        reason=text,
        claimed_admin=claimed_admin,
        counted_approvals=counted,
    )
    return ApprovalResult(out)


def _break_glass_reason(reason: str | None) -> str:
    text = (reason or "").strip()
    if not text or len(text) > MAX_BREAK_GLASS_REASON:
        raise InvalidParameter(
            f"Break-glass needs a reason of 1 to {MAX_BREAK_GLASS_REASON} characters."
        )
    return text


# --- rights --------------------------------------------------------------------------------------


async def may_approve(
    s: AsyncSession, actor: Actor, model: str, target: str, *, check_role: bool = True
) -> bool:
    """Whether ``actor``'s role lets them approve or reject a request on ``model`` -> ``target``
    (read-only; the same role rule as :func:`approve`'s NotAnApprover check, from the
    principal's loaded grants). Separation of duties and the request's state are checked
    only when acting, so the requester still sees the buttons and gets the refusal."""
    if not check_role or actor.is_admin:
        return True
    return await ports.can_promote(s, actor, model, target)


# --- expiry --------------------------------------------------------------------------------------

EXPIRY_ACTOR = "system"
EXPIRY_BATCH = 100


async def any_due_for_expiry(s: AsyncSession, *, now: int | None = None) -> bool:
    return bool(await store.due_for_expiry(s, now_ms() if now is None else now, 1))


async def expire_due(s: AsyncSession, *, now: int | None = None, limit: int = EXPIRY_BATCH) -> int:
    """Close requests whose time ran out, each with its ``approval.expired`` event and audit
    entry in the same transaction. Returns how many this call closed."""
    at = now_ms() if now is None else now
    closed = 0
    for request_id in await store.due_for_expiry(s, at, limit):
        if not await store.mark_expired(s, request_id, at, EXPIRY_ACTOR):
            continue
        out = await _render(s, await _find(s, request_id), at, with_actions=False)
        await _event(s, "approval.expired", out, EXPIRY_ACTOR)
        closed += 1
    return closed
