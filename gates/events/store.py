"""Every SQL statement of the events domain: outbox, subscriptions, deliveries, attempts."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    String,
    Table,
    Text,
    and_,
    bindparam,
    delete,
    exists,
    func,
    insert,
    or_,
    select,
    text,
    true,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from gates.events.models import (
    OutboxEvent,
    WebhookDelivery,
    WebhookDeliveryAttempt,
    WebhookSubscription,
    WebhookSubscriptionEvent,
)
from tracking.core.db import dialect_name
from tracking.core.driver import DriverRows, Prebuilt

_E = cast(Table, OutboxEvent.__table__)
_S = cast(Table, WebhookSubscription.__table__)
_SE = cast(Table, WebhookSubscriptionEvent.__table__)
_D = cast(Table, WebhookDelivery.__table__)
_A = cast(Table, WebhookDeliveryAttempt.__table__)

OPEN_STATUSES = ("pending", "failed")


def _rowcount(result: Any) -> int:
    return int(result.rowcount or 0)


# --- outbox --------------------------------------------------------------------------------------


async def insert_event(
    s: AsyncSession,
    *,
    event_id: str,
    type_: str,
    model_name: str | None,
    payload: str,
    created_at: int,
) -> int:
    stmt = _insert_event_stmt(event_id, type_, model_name, payload, created_at)
    return int((await s.execute(stmt)).scalar_one())


def _insert_event_stmt(
    event_id: str, type_: str, model_name: str | None, payload: str, created_at: int
) -> Any:
    """The event's INSERT, returning its pk."""
    return (
        insert(_E)
        .values(
            event_id=event_id,
            type=type_,
            model_name=model_name,
            payload=payload,
            created_at=created_at,
        )
        .returning(_E.c.id)
    )


def _subscribers_select(event_type: str, model_name: str | None) -> Any:
    model_filter: Any = _S.c.model_name.is_(None)
    if model_name is not None:
        model_filter = or_(model_filter, _S.c.model_name == model_name)
    return (
        select(_S.c.id, _S.c.created_at)
        .join(_SE, _SE.c.subscription_id == _S.c.id)
        .where(
            _SE.c.event_type == event_type,
            # An automatically disabled subscription keeps queueing (see auto_disable).
            or_(_S.c.status == "active", _S.c.auto_disabled_at.is_not(None)),
            _S.c.deleted_at.is_(None),
            model_filter,
        )
    )


async def subscribers_of(s: AsyncSession, event_type: str, model_name: str | None) -> list[str]:
    """Active subscriptions that receive ``event_type`` (about ``model_name``), oldest first."""
    stmt = _subscribers_select(event_type, model_name).order_by(_S.c.created_at, _S.c.id)
    return [str(r.id) for r in (await s.execute(stmt))]


async def insert_event_for_subscribers(
    s: AsyncSession,
    *,
    event_id: str,
    type_: str,
    model_name: str | None,
    payload: str,
    created_at: int,
) -> tuple[int, list[str]]:
    """:func:`insert_event` and :func:`subscribers_of` in one statement (PostgreSQL: the
    insert as a data-modifying CTE); (the event's pk, its subscribers, oldest first)."""
    if dialect_name(s) != "postgresql":
        pk = await insert_event(
            s,
            event_id=event_id,
            type_=type_,
            model_name=model_name,
            payload=payload,
            created_at=created_at,
        )
        return pk, await subscribers_of(s, type_, model_name)
    event = _insert_event_stmt(event_id, type_, model_name, payload, created_at).cte("event")
    subs = _subscribers_select(type_, model_name).subquery("subs")
    stmt = (
        select(event.c.id, subs.c.id.label("subscription_id"))
        .select_from(event.outerjoin(subs, true()))
        .order_by(subs.c.created_at, subs.c.id)
    )
    rows = (await s.execute(stmt)).all()
    return int(rows[0].id), [str(r.subscription_id) for r in rows if r.subscription_id]


def _build_event_for_subscribers(dialect: str) -> Any:
    """:func:`insert_event_for_subscribers`'s statement for an event about one model, with
    parameters (PostgreSQL; elsewhere the INSERT alone, and :data:`SUBSCRIBERS_OF_MODEL`)."""
    event = (
        insert(_E)
        .values(
            event_id=bindparam("event_id", type_=String),
            type=bindparam("type", type_=String),
            model_name=bindparam("model_name", type_=String),
            payload=bindparam("payload", type_=Text),
            created_at=bindparam("created_at", type_=BigInteger),
        )
        .returning(_E.c.id)
    )
    if dialect != "postgresql":
        return event
    cte = event.cte("event")
    subs = _subscribers_of_model().subquery("subs")
    return (
        select(cte.c.id, subs.c.id.label("subscription_id"))
        .select_from(cte.outerjoin(subs, true()))
        .order_by(subs.c.created_at, subs.c.id)
    )


def _subscribers_of_model() -> Any:
    return _subscribers_select(
        bindparam("type", type_=String),  # type: ignore[arg-type]
        bindparam("model_name", type_=String),  # type: ignore[arg-type]
    )


EVENT_FOR_SUBSCRIBERS = Prebuilt(_build_event_for_subscribers)
SUBSCRIBERS_OF_MODEL = Prebuilt(
    lambda _d: _subscribers_of_model().order_by(_S.c.created_at, _S.c.id)
)


async def insert_model_event_on_driver(
    r: DriverRows, *, event_id: str, type_: str, model_name: str, payload: str, created_at: int
) -> tuple[int, list[str]]:
    """:func:`insert_event_for_subscribers` for an event about ``model_name``, prebuilt, on the
    driver of the caller's transaction (``session_rows``)."""
    params = {
        "event_id": event_id,
        "type": type_,
        "model_name": model_name,
        "payload": payload,
        "created_at": created_at,
    }
    rows = await r.all(EVENT_FOR_SUBSCRIBERS, params)
    if r.dialect == "postgresql":
        return int(rows[0][0]), [str(sub) for _pk, sub in rows if sub]
    subs = await r.all(SUBSCRIBERS_OF_MODEL, {"type": type_, "model_name": model_name})
    return int(rows[0][0]), [str(sub) for sub, _created in subs]


# Several events in one statement (PostgreSQL; see gates.events.service.outbox.batched): the
# events are inserted in the arrays' order (ORDER BY the ordinality, so their ids follow it) and
# each comes back with its subscribers, oldest first, as :data:`EVENT_FOR_SUBSCRIBERS` gives
# one event's. The subscribers' filter is :func:`_subscribers_select`'s, per event.
_PG_EVENTS_FOR_SUBSCRIBERS = text("""
    WITH event AS (
        INSERT INTO outbox_events (event_id, type, model_name, payload, created_at)
        SELECT e.event_id, e.type, e.model_name, e.payload, e.created_at
        FROM unnest(CAST(:event_ids AS VARCHAR[]), CAST(:types AS VARCHAR[]),
                    CAST(:model_names AS VARCHAR[]), CAST(:payloads AS TEXT[]),
                    CAST(:created_ats AS BIGINT[]))
             WITH ORDINALITY AS e(event_id, type, model_name, payload, created_at, n)
        ORDER BY e.n
        RETURNING id, event_id, type, model_name
    )
    SELECT event.event_id, event.id, subs.id AS subscription_id
    FROM event LEFT OUTER JOIN LATERAL (
        SELECT s.id, s.created_at
        FROM webhook_subscriptions AS s
        JOIN webhook_subscription_events AS se ON se.subscription_id = s.id
        WHERE se.event_type = event.type
          AND (s.status = 'active' OR s.auto_disabled_at IS NOT NULL)
          AND s.deleted_at IS NULL
          AND (s.model_name IS NULL OR s.model_name = event.model_name)
    ) AS subs ON true
    ORDER BY event.id, subs.created_at, subs.id
""")
PG_EVENTS_FOR_SUBSCRIBERS = Prebuilt(lambda _dialect: _PG_EVENTS_FOR_SUBSCRIBERS)


async def insert_events_on_driver(
    r: DriverRows, events: Sequence[Mapping[str, Any]]
) -> dict[str, tuple[int, list[str]]]:
    """Several events (``event_id``, ``type``, ``model_name``, ``payload``, ``created_at``)
    in one statement on the driver of the caller's transaction (PostgreSQL only), in order;
    each event's (pk, subscribers, oldest first) by event id."""
    rows = await r.all(
        PG_EVENTS_FOR_SUBSCRIBERS,
        {
            "event_ids": [e["event_id"] for e in events],
            "types": [e["type"] for e in events],
            "model_names": [e["model_name"] for e in events],
            "payloads": [e["payload"] for e in events],
            "created_ats": [e["created_at"] for e in events],
        },
    )
    out: dict[str, tuple[int, list[str]]] = {}
    for event_id, pk, sub in rows:
        _, subs = out.setdefault(str(event_id), (int(pk), []))
        if sub:
            subs.append(str(sub))
    return out


async def insert_deliveries(s: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        await s.execute(insert(_D), list(rows))


async def get_event(s: AsyncSession, pk: int) -> Any:
    return (await s.execute(select(_E).where(_E.c.id == pk))).one_or_none()


# --- subscriptions -------------------------------------------------------------------------------


async def insert_subscription(s: AsyncSession, values: dict[str, Any]) -> None:
    await s.execute(insert(_S).values(**values))


async def set_subscription_events(
    s: AsyncSession, subscription_id: str, event_types: Iterable[str]
) -> None:
    await s.execute(delete(_SE).where(_SE.c.subscription_id == subscription_id))
    rows = [{"subscription_id": subscription_id, "event_type": t} for t in event_types]
    if rows:
        await s.execute(insert(_SE), rows)


async def get_subscription(
    s: AsyncSession, subscription_id: str, *, flavor: str | None = None, lock: bool = False
) -> Any:
    stmt = select(_S).where(_S.c.id == subscription_id, _S.c.deleted_at.is_(None))
    if flavor is not None:
        stmt = stmt.where(_S.c.flavor == flavor)
    if lock and dialect_name(s) == "postgresql":
        stmt = stmt.with_for_update()
    return (await s.execute(stmt)).one_or_none()


async def list_subscriptions(
    s: AsyncSession, *, flavor: str | None, offset: int, limit: int
) -> list[Any]:
    """Newest first, as MLflow lists webhooks."""
    stmt = select(_S).where(_S.c.deleted_at.is_(None))
    if flavor is not None:
        stmt = stmt.where(_S.c.flavor == flavor)
    stmt = stmt.order_by(_S.c.created_at.desc(), _S.c.id.desc()).offset(offset).limit(limit)
    return list((await s.execute(stmt)).all())


async def events_of(s: AsyncSession, subscription_ids: Sequence[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = defaultdict(list)
    if not subscription_ids:
        return out
    result = await s.execute(
        select(_SE.c.subscription_id, _SE.c.event_type)
        .where(_SE.c.subscription_id.in_(list(subscription_ids)))
        .order_by(_SE.c.subscription_id, _SE.c.event_type)
    )
    for sub_id, event_type in result:
        out[str(sub_id)].append(str(event_type))
    return out


async def update_subscription(s: AsyncSession, subscription_id: str, **values: Any) -> None:
    await s.execute(update(_S).where(_S.c.id == subscription_id).values(**values))


async def close_open_deliveries(
    s: AsyncSession, subscription_id: str, *, now: int, reason: str
) -> None:
    """Deliveries a deleted subscription will never get are dead, not pending forever."""
    await s.execute(
        update(_D)
        .where(_D.c.subscription_id == subscription_id, _D.c.status.in_(OPEN_STATUSES))
        .values(status="dead", last_error=reason, updated_at=now)
    )


async def note_success(s: AsyncSession, subscription_id: str) -> None:
    """An attempt succeeded: the subscription is not failing (a no-op when it was not)."""
    await s.execute(
        update(_S)
        .where(_S.c.id == subscription_id, _S.c.failing_since.is_not(None))
        .values(failing_since=None)
    )


async def note_failure(s: AsyncSession, subscription_id: str, now: int) -> None:
    """An attempt failed: start the failing run unless one is already going."""
    await s.execute(
        update(_S)
        .where(_S.c.id == subscription_id, _S.c.failing_since.is_(None))
        .values(failing_since=now)
    )


async def auto_disable(
    s: AsyncSession, subscription_id: str, *, now: int, failing_before: int, reason: str
) -> bool:
    """Disable an active subscription failing since ``failing_before`` or earlier.

    The guarded UPDATE gives each failing run one disabling (and one event), whichever
    replica recorded the attempt.
    """
    result = await s.execute(
        update(_S)
        .where(
            _S.c.id == subscription_id,
            _S.c.status == "active",
            _S.c.deleted_at.is_(None),
            _S.c.failing_since.is_not(None),
            _S.c.failing_since <= failing_before,
        )
        .values(status="disabled", auto_disabled_at=now, disabled_reason=reason, updated_at=now)
    )
    return _rowcount(result) == 1


# --- the worker's queue --------------------------------------------------------------------------


def _claimable(now: int) -> Any:
    """Deliveries due now that are the oldest open one of their subscription (order)."""
    earlier = _D.alias("earlier")
    return and_(
        _D.c.status.in_(OPEN_STATUSES),
        _D.c.next_attempt_at <= now,
        or_(_D.c.claimed_until.is_(None), _D.c.claimed_until < now),
        _S.c.status == "active",
        _S.c.deleted_at.is_(None),
        ~exists().where(
            earlier.c.subscription_id == _D.c.subscription_id,
            earlier.c.status.in_(OPEN_STATUSES),
            earlier.c.id < _D.c.id,
        ),
    )


async def any_claimable(s: AsyncSession, now: int) -> bool:
    stmt = select(_D.c.id).join(_S, _S.c.id == _D.c.subscription_id).where(_claimable(now)).limit(1)
    return (await s.execute(stmt)).first() is not None


async def claim(
    s: AsyncSession, *, now: int, lease_until: int, worker: str, limit: int
) -> list[int]:
    """Take up to ``limit`` subscription heads for ``worker`` until ``lease_until``.

    PostgreSQL: ``FOR UPDATE SKIP LOCKED`` lets replicas claim side by side, and the lease
    re-check after a lock wait keeps a head from being claimed twice. SQLite: the write
    transaction (BEGIN IMMEDIATE) already excludes every other process.
    """
    stmt = (
        select(_D.c.id)
        .join(_S, _S.c.id == _D.c.subscription_id)
        .where(_claimable(now))
        .order_by(_D.c.id)
        .limit(limit)
    )
    if dialect_name(s) == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True, of=_D)
    ids = [int(r) for r in (await s.execute(stmt)).scalars()]
    if ids:
        await s.execute(
            update(_D)
            .where(_D.c.id.in_(ids))
            .values(claimed_until=lease_until, claimed_by=worker, updated_at=now)
        )
    return ids


async def load_for_delivery(s: AsyncSession, ids: Sequence[int]) -> list[Any]:
    stmt = (
        select(
            _D.c.id,
            _D.c.delivery_id,
            _D.c.attempts,
            _D.c.total_attempts,
            _E.c.event_id,
            _E.c.type.label("event_type"),
            _E.c.payload,
            _E.c.created_at.label("event_created_at"),
            _E.c.model_name,
            _S.c.id.label("subscription_id"),
            _S.c.flavor,
            _S.c.url,
            _S.c.secret,
            _S.c.previous_secret,
            _S.c.previous_secret_expires_at,
        )
        .join(_E, _E.c.id == _D.c.event_pk)
        .join(_S, _S.c.id == _D.c.subscription_id)
        .where(_D.c.id.in_(list(ids)))
        .order_by(_D.c.id)
    )
    return list((await s.execute(stmt)).all())


async def finish_attempt(
    s: AsyncSession, delivery_pk: int, worker: str, values: dict[str, Any]
) -> bool:
    """Record an attempt's outcome on the delivery, if ``worker`` still holds it."""
    result = await s.execute(
        update(_D)
        .where(_D.c.id == delivery_pk, _D.c.claimed_by == worker)
        .values(
            attempts=_D.c.attempts + 1,
            total_attempts=_D.c.total_attempts + 1,
            claimed_until=None,
            claimed_by=None,
            **values,
        )
    )
    return _rowcount(result) == 1


async def insert_attempt(s: AsyncSession, values: dict[str, Any]) -> None:
    await s.execute(insert(_A).values(**values))


# --- the delivery log ----------------------------------------------------------------------------


def _delivery_columns() -> list[Any]:
    return [
        _D.c.id,
        _D.c.delivery_id,
        _D.c.subscription_id,
        _D.c.status,
        _D.c.attempts,
        _D.c.total_attempts,
        _D.c.next_attempt_at,
        _D.c.claimed_until,
        _D.c.last_status_code,
        _D.c.last_error,
        _D.c.created_at,
        _D.c.updated_at,
        _D.c.delivered_at,
        _E.c.event_id,
        _E.c.type.label("event_type"),
    ]


async def list_deliveries(
    s: AsyncSession,
    *,
    subscription_id: str | None,
    status: str | None,
    before_id: int | None,
    limit: int,
) -> list[Any]:
    """Newest first; ``before_id`` is the keyset cursor of the previous page."""
    stmt = select(*_delivery_columns()).join(_E, _E.c.id == _D.c.event_pk)
    if subscription_id is not None:
        stmt = stmt.where(_D.c.subscription_id == subscription_id)
    if status is not None:
        stmt = stmt.where(_D.c.status == status)
    if before_id is not None:
        stmt = stmt.where(_D.c.id < before_id)
    stmt = stmt.order_by(_D.c.id.desc()).limit(limit)
    return list((await s.execute(stmt)).all())


async def get_delivery(s: AsyncSession, delivery_id: str) -> Any:
    stmt = (
        select(*_delivery_columns())
        .join(_E, _E.c.id == _D.c.event_pk)
        .where(_D.c.delivery_id == delivery_id)
    )
    return (await s.execute(stmt)).one_or_none()


async def attempts_of(s: AsyncSession, delivery_pk: int, limit: int) -> list[Any]:
    """The newest ``limit`` attempts, oldest first."""
    stmt = select(_A).where(_A.c.delivery_pk == delivery_pk).order_by(_A.c.id.desc()).limit(limit)
    return list(reversed((await s.execute(stmt)).all()))


async def requeue(s: AsyncSession, delivery_pk: int, now: int) -> bool:
    """Make a delivery due now with a fresh attempt budget, unless a worker holds it."""
    result = await s.execute(
        update(_D)
        .where(
            _D.c.id == delivery_pk,
            or_(_D.c.claimed_until.is_(None), _D.c.claimed_until < now),
        )
        .values(
            status="pending",
            attempts=0,
            next_attempt_at=now,
            claimed_until=None,
            claimed_by=None,
            updated_at=now,
        )
    )
    return _rowcount(result) == 1


async def requeue_dead(s: AsyncSession, subscription_id: str, now: int) -> int:
    """Every dead delivery of a subscription due now with a fresh budget; returns how many.

    Dead deliveries are never claimed (an outcome clears the claim), so none is in flight.
    """
    result = await s.execute(
        update(_D)
        .where(_D.c.subscription_id == subscription_id, _D.c.status == "dead")
        .values(
            status="pending",
            attempts=0,
            next_attempt_at=now,
            claimed_until=None,
            claimed_by=None,
            updated_at=now,
        )
    )
    return _rowcount(result)


async def count_deliveries(s: AsyncSession, subscription_id: str, status: str) -> int:
    result = await s.execute(
        select(func.count())
        .select_from(_D)
        .where(_D.c.subscription_id == subscription_id, _D.c.status == status)
    )
    return int(result.scalar_one())


async def latest_deliveries(s: AsyncSession, subscription_ids: Sequence[str]) -> list[Any]:
    """The newest delivery of each listed subscription, in one query (the webhooks page)."""
    if not subscription_ids:
        return []
    newest = (
        select(func.max(_D.c.id).label("id"))
        .where(_D.c.subscription_id.in_(list(subscription_ids)))
        .group_by(_D.c.subscription_id)
        .subquery()
    )
    stmt = (
        select(*_delivery_columns())
        .join(_E, _E.c.id == _D.c.event_pk)
        .where(_D.c.id.in_(select(newest.c.id)))
    )
    return list((await s.execute(stmt)).all())


async def delivery_counts(s: AsyncSession) -> dict[str, int]:
    """Deliveries per status, for /metrics (grouped on the indexed status column)."""
    rows = await s.execute(select(_D.c.status, func.count()).group_by(_D.c.status))
    return {status: int(count) for status, count in rows}


async def oldest_open_delivery(s: AsyncSession) -> int | None:
    """Creation time (epoch ms) of the oldest delivery still to be made, for /metrics."""
    return cast(
        int | None,
        await s.scalar(select(func.min(_D.c.created_at)).where(_D.c.status.in_(OPEN_STATUSES))),
    )
