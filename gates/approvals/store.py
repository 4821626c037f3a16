"""Every SQL statement of the approvals domain."""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from gates.approvals.models import ApprovalAction, ApprovalRequest
from tracking.core.auth import ResourceScope
from tracking.core.db import dialect_insert, dialect_name
from tracking.search.sql import scope_predicate


async def insert_request(s: AsyncSession, **values: Any) -> None:
    await s.execute(dialect_insert(s)(ApprovalRequest).values(**values))


async def get_request(
    s: AsyncSession, request_id: str, *, lock: bool = False, scope: ResourceScope | None = None
) -> Any:
    """The request ``request_id``; None also when it is on a model ``scope`` hides."""
    stmt = select(ApprovalRequest).where(ApprovalRequest.id == request_id)
    if scope is not None:
        stmt = stmt.where(scope_predicate(scope, ApprovalRequest.model_name))
    if lock and dialect_name(s) == "postgresql":
        stmt = stmt.with_for_update()
    result = await s.execute(stmt.execution_options(populate_existing=True))
    return result.scalar_one_or_none()


async def pending_request_for(
    s: AsyncSession, model: str, version: int, target: str, now: int
) -> Any:
    stmt = select(ApprovalRequest).where(
        ApprovalRequest.model_name == model,
        ApprovalRequest.version == version,
        ApprovalRequest.target == target,
        ApprovalRequest.status == "pending",
        ApprovalRequest.expires_at > now,
    )
    return (await s.execute(stmt.limit(1))).scalar_one_or_none()


async def current_statuses(s: AsyncSession, request_ids: list[str], now: int) -> dict[str, str]:
    """Each request's status as of ``now`` (a pending one past its deadline is expired)."""
    if not request_ids:
        return {}
    stmt = select(ApprovalRequest.id, ApprovalRequest.status, ApprovalRequest.expires_at).where(
        ApprovalRequest.id.in_(request_ids)
    )
    return {
        rid: ("expired" if status == "pending" and expires_at <= now else status)
        for rid, status, expires_at in await s.execute(stmt)
    }


async def update_request(s: AsyncSession, request_id: str, **values: Any) -> None:
    await s.execute(
        update(ApprovalRequest).where(ApprovalRequest.id == request_id).values(**values)
    )


async def insert_action(s: AsyncSession, **values: Any) -> None:
    await s.execute(dialect_insert(s)(ApprovalAction).values(**values))


async def approvers(s: AsyncSession, request_ids: list[str]) -> dict[str, list[str]]:
    """Who approved each request, in order (one query for a whole page)."""
    if not request_ids:
        return {}
    stmt = (
        select(ApprovalAction.request_id, ApprovalAction.actor)
        .where(ApprovalAction.request_id.in_(request_ids), ApprovalAction.kind == "approve")
        .order_by(ApprovalAction.id)
    )
    out: dict[str, list[str]] = {r: [] for r in request_ids}
    for request_id, actor in await s.execute(stmt):
        out[request_id].append(actor)
    return out


async def actions(s: AsyncSession, request_id: str, limit: int) -> list[ApprovalAction]:
    stmt = (
        select(ApprovalAction)
        .where(ApprovalAction.request_id == request_id)
        .order_by(ApprovalAction.id)
        .limit(limit)
    )
    return list((await s.execute(stmt)).scalars())


async def count_actions(s: AsyncSession, request_id: str) -> int:
    stmt = select(func.count()).where(ApprovalAction.request_id == request_id)
    return int((await s.execute(stmt)).scalar_one())


async def list_requests(
    s: AsyncSession,
    *,
    status: str | None,
    model: str | None,
    now: int,
    offset: int,
    limit: int,
    scope: ResourceScope | None = None,
) -> list[ApprovalRequest]:
    """Requests newest first, on the models ``scope`` lets through (None: all)."""
    stmt = select(ApprovalRequest).order_by(ApprovalRequest.created_at.desc(), ApprovalRequest.id)
    if status == "pending":
        stmt = stmt.where(ApprovalRequest.status == "pending", ApprovalRequest.expires_at > now)
    elif status == "expired":
        # Expired either by the sweep (stored) or by the clock before the sweep got to it.
        stmt = stmt.where(
            or_(
                ApprovalRequest.status == "expired",
                and_(ApprovalRequest.status == "pending", ApprovalRequest.expires_at <= now),
            )
        )
    elif status:
        stmt = stmt.where(ApprovalRequest.status == status)
    if model:
        stmt = stmt.where(ApprovalRequest.model_name == model)
    if scope is not None:
        stmt = stmt.where(scope_predicate(scope, ApprovalRequest.model_name))
    return list((await s.execute(stmt.offset(offset).limit(limit))).scalars())


async def due_for_expiry(s: AsyncSession, now: int, limit: int) -> list[str]:
    """Ids of pending requests whose time ran out, oldest deadline first."""
    stmt = (
        select(ApprovalRequest.id)
        .where(ApprovalRequest.status == "pending", ApprovalRequest.expires_at <= now)
        .order_by(ApprovalRequest.expires_at)
        .limit(limit)
    )
    return list((await s.execute(stmt)).scalars())


async def mark_expired(s: AsyncSession, request_id: str, now: int, actor: str) -> bool:
    """Close one request as expired; False when another replica (or an approver) got there
    first: the status guard makes the sweep safe to run on every replica at once."""
    result = await s.execute(
        update(ApprovalRequest)
        .where(
            ApprovalRequest.id == request_id,
            ApprovalRequest.status == "pending",
            ApprovalRequest.expires_at <= now,
        )
        .values(status="expired", resolved_at=now, resolved_by=actor, resolution="expired")
    )
    return int(getattr(result, "rowcount", 0) or 0) == 1


async def count_open(s: AsyncSession, now: int) -> int:
    """Approval requests still waiting for a decision (pending and not expired), for /metrics."""
    stmt = select(func.count()).where(
        ApprovalRequest.status == "pending", ApprovalRequest.expires_at > now
    )
    return int(await s.scalar(stmt) or 0)
