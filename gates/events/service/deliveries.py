"""The delivery log: list deliveries and their attempts, redeliver, and MLflow's test send."""

from __future__ import annotations

import time
import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from gates.audit import service as audit
from gates.events import store
from gates.events.config import EventsConfig
from gates.events.envelope import mlflow_request
from gates.events.errors import DeliveryInFlight, DeliveryNotFound
from gates.events.schemas import Delivery, DeliveryAttempt, WebhookEventIn, WebhookTestResult
from gates.events.sender import PinnedSender
from gates.events.service.subscriptions import test_result, webhook_test_target
from gates.events.signing import SecretUnavailable
from tracking.core.clock import now_ms
from tracking.core.db import Database
from tracking.core.errors import InvalidParameter, InvalidState
from tracking.core.wire import decode_page_token, encode_page_token

DELIVERY_STATUSES = ("pending", "failed", "succeeded", "dead")
DEFAULT_PAGE = 100
MAX_PAGE = 1000
MAX_ATTEMPTS_SHOWN = 100


def delivery_out(row: Any) -> Delivery:
    open_ = row.status in store.OPEN_STATUSES
    return Delivery(
        delivery_id=row.delivery_id,
        event_id=row.event_id,
        event_type=row.event_type,
        subscription_id=row.subscription_id,
        status=row.status,
        attempts=row.attempts,
        total_attempts=row.total_attempts,
        created_at=row.created_at,
        updated_at=row.updated_at,
        next_attempt_at=row.next_attempt_at if open_ else None,
        last_status_code=row.last_status_code,
        last_error=row.last_error,
        delivered_at=row.delivered_at,
    )


def attempt_out(row: Any) -> DeliveryAttempt:
    return DeliveryAttempt(
        attempt=row.attempt,
        started_at=row.started_at,
        duration_ms=row.duration_ms,
        url=row.url,
        status_code=row.status_code,
        error=row.error,
        response_body=row.response_body,
    )


async def list_deliveries(
    s: AsyncSession,
    *,
    subscription_id: str | None,
    status: str | None,
    max_results: int | None,
    page_token: str | None,
) -> tuple[list[Delivery], str | None]:
    """Newest first, filtered by subscription and status, in pages of at most 1000."""
    if status is not None and status.lower() not in DELIVERY_STATUSES:
        raise InvalidParameter(
            f"Invalid status {status!r}: use one of {', '.join(DELIVERY_STATUSES)}."
        )
    status = status.lower() if status else None
    limit = DEFAULT_PAGE if max_results is None else max_results
    if limit < 1 or limit > MAX_PAGE:
        raise InvalidParameter(f"max_results must be between 1 and {MAX_PAGE}.")
    fingerprint = f"deliveries:{subscription_id}:{status}"
    # The token carries the last id seen (a keyset cursor), stable while deliveries are added.
    before = decode_page_token(page_token, fingerprint) if page_token else None
    rows = await store.list_deliveries(
        s, subscription_id=subscription_id, status=status, before_id=before, limit=limit + 1
    )
    token = encode_page_token(rows[limit - 1].id, fingerprint) if len(rows) > limit else None
    return [delivery_out(r) for r in rows[:limit]], token


async def get_delivery(s: AsyncSession, delivery_id: str) -> tuple[Delivery, list[DeliveryAttempt]]:
    row = await store.get_delivery(s, delivery_id)
    if row is None:
        raise DeliveryNotFound(delivery_id)
    attempts = await store.attempts_of(s, row.id, MAX_ATTEMPTS_SHOWN)
    return delivery_out(row), [attempt_out(a) for a in attempts]


async def redeliver(s: AsyncSession, delivery_id: str, *, actor: str) -> Delivery:
    """Send a delivery again, with the same delivery id and a fresh attempt budget; audited.

    Works on any delivery (dead, failed or even succeeded); it goes out in its place in the
    subscription's order, i.e. before newer deliveries that are still open.
    """
    row = await store.get_delivery(s, delivery_id)
    if row is None:
        raise DeliveryNotFound(delivery_id)
    if await store.get_subscription(s, row.subscription_id) is None:
        raise InvalidState(
            f"Delivery {delivery_id} belongs to a deleted subscription; it cannot be redelivered."
        )
    if not await store.requeue(s, row.id, now_ms()):
        raise DeliveryInFlight(delivery_id)
    await audit.append(
        s,
        "delivery.redelivered",
        f"subscription:{row.subscription_id}",
        {"delivery_id": row.delivery_id},
        actor,
    )
    found = await store.get_delivery(s, delivery_id)
    return delivery_out(found)


async def test_webhook(
    db: Database, webhook_id: str, event: WebhookEventIn | None, *, config: EventsConfig
) -> WebhookTestResult:
    """MLflow's ``test_webhook``: send the event's example payload now and report the answer.

    A probe, not an event: it bypasses the outbox, but goes through the same SSRF checks and
    signature as real deliveries.
    """
    async with db.read() as s:
        url, event_type, payload, sealed = await webhook_test_target(s, webhook_id, event)
    try:
        secret = config.secrets.open(sealed) if sealed else None
    except SecretUnavailable as exc:
        return test_result(None, None, str(exc))
    body, headers = mlflow_request(
        delivery_id=str(uuid.uuid4()),
        event_type=event_type,
        payload=payload,
        created_at=now_ms(),
        secret=secret,
        now_s=int(time.time()),
    )
    sender = PinnedSender(config.allowlist, config.timeout)
    try:
        outcome = await sender.post(url, body, headers)
    finally:
        await sender.aclose()
    return test_result(outcome.status_code, outcome.response_body, outcome.error)


async def latest_delivery_of(s: AsyncSession, subscription_ids: list[str]) -> dict[str, Delivery]:
    """Each subscription's newest delivery (absent when it has none), in one query."""
    rows = await store.latest_deliveries(s, subscription_ids)
    return {str(r.subscription_id): delivery_out(r) for r in rows}
