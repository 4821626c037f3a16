"""Gate decisions: render, read (API and web UI), record and announce."""

from __future__ import annotations

import msgspec
from sqlalchemy.ext.asyncio import AsyncSession

from gates.approvals import store as approval_store
from gates.policies import ports, rules, store
from gates.policies.errors import DecisionNotFound
from gates.policies.models import GateDecision
from gates.policies.schemas import DecisionOut
from gates.policies.service.records import decision_out, new_id, page_limit
from tracking.core.auth import ResourceScope
from tracking.core.clock import now_ms
from tracking.core.errors import InvalidParameter
from tracking.core.wire import decode_page_token, encode_page_token


async def _approval_statuses(s: AsyncSession, found: list[GateDecision]) -> dict[str, str]:
    ids = [d.approval_request_id for d in found if d.approval_request_id]
    return await approval_store.current_statuses(s, ids, now_ms())


def _with_status(d: GateDecision, names: dict[int, str], statuses: dict[str, str]) -> DecisionOut:
    status = statuses.get(d.approval_request_id) if d.approval_request_id else None
    return decision_out(d, names.get(d.policy_id, ""), status)


async def render_decision(
    s: AsyncSession, d: GateDecision, *, policy_name: str | None = None
) -> DecisionOut:
    """``policy_name``: the deciding gate's name when the caller holds it (no lookup then)."""
    if policy_name is not None:
        names = {d.policy_id: policy_name}
    else:
        names = await store.policy_names(s, {d.policy_id})
    return _with_status(d, names, await _approval_statuses(s, [d]))


async def get_decision(
    s: AsyncSession, decision_id: str | None, *, scope: ResourceScope | None = None
) -> DecisionOut:
    """A decision by id; one about a model ``scope`` hides answers as not found."""
    if not decision_id:
        raise InvalidParameter("Missing value for required parameter 'decision_id'.")
    found = await store.get_decision(s, decision_id, scope=scope)
    if found is None or found.outcome == "evaluating":
        raise DecisionNotFound(decision_id)
    return await render_decision(s, found)


async def list_decisions(
    s: AsyncSession,
    model: str | None = None,
    target: str | None = None,
    max_results: int | None = None,
    page_token: str | None = None,
    *,
    scope: ResourceScope | None = None,
) -> tuple[list[DecisionOut], str | None]:
    """A page of decisions about the models ``scope`` lets through (None: all)."""
    limit = page_limit(max_results)
    canonical = rules.canonical_target(target) if target else None
    fingerprint = f"decisions:{model}:{canonical}"
    offset = decode_page_token(page_token, fingerprint)
    found = await store.list_decisions(
        s, model=model, target=canonical, offset=offset, limit=limit + 1, scope=scope
    )
    names = await store.policy_names(s, {d.policy_id for d in found})
    token = encode_page_token(offset + limit, fingerprint) if len(found) > limit else None
    statuses = await _approval_statuses(s, found[:limit])
    return [_with_status(d, names, statuses) for d in found[:limit]], token


async def announce_decision(s: AsyncSession, out: DecisionOut) -> None:
    """The gate.decided event and the audit entry, in the deciding transaction."""
    payload = msgspec.to_builtins(out)
    await ports.emit_event(s, "gate.decided", payload)
    await ports.audit(s, "gate.decided", f"model:{out.model}", payload, out.actor)


async def record_decision(s: AsyncSession, **values: object) -> DecisionOut:
    """Store a decision that needs no idempotency key (the re-evaluation of an approval)."""
    decision_id = new_id()
    await store.claim_decision(s, id=decision_id, created_at=now_ms(), **values)
    found = await store.get_decision(s, decision_id)
    assert found is not None
    return await render_decision(s, found)


async def decisions_for_version(
    s: AsyncSession, model: str, version: int, max_results: int | None = None
) -> list[DecisionOut]:
    """The gate decisions about one version of a model, newest first."""
    found = await store.decisions_for_version(s, model, version, page_limit(max_results))
    names = await store.policy_names(s, {d.policy_id for d in found})
    statuses = await _approval_statuses(s, found)
    return [_with_status(d, names, statuses) for d in found]


async def decisions_by_ids(s: AsyncSession, ids: list[str]) -> dict[str, DecisionOut]:
    """Several decisions by id (two queries), e.g. those of a page of approval requests."""
    found = await store.decisions_by_ids(s, ids)
    names = await store.policy_names(s, {d.policy_id for d in found})
    statuses = await _approval_statuses(s, found)
    return {d.id: _with_status(d, names, statuses) for d in found}
