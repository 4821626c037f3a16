"""The delivery worker: every replica runs one; claims make sure each delivery has one owner.

Loop: find subscription heads that are due (a cheap read first, so idle replicas never take
SQLite's write lock), claim as many as there are free send slots under a lease in one short
write transaction, and start each send as its own task, outside any transaction, that records
its outcome when it ends. The loop never waits for a send: a receiver that never answers holds
one slot until the timeout and delays only its own subscription, while every other
subscription's next delivery is claimed as soon as its previous one is recorded.

A crash mid-send leaves the lease to expire and another worker retries: at least once, never
lost. Per subscription only the oldest open delivery is ever claimable (and a claimed head
keeps it so), so a subscriber sees events in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

from gates.events import store
from gates.events.config import EventsConfig
from gates.events.envelope import mlflow_request, mlgate_request
from gates.events.sender import MAX_REDIRECTS, PinnedSender, SendOutcome
from gates.events.service.subscriptions import record_subscription_health
from gates.events.signing import SecretUnavailable
from tracking.core.background import PollingLoop
from tracking.core.clock import now_ms
from tracking.core.db import Database

log = logging.getLogger("mlgate.webhooks")

ERROR_LEN = 2000


class DeliveryWorker(PollingLoop):
    task_name = "mlgate-webhook-worker"

    def __init__(self, db: Database, config: EventsConfig, *, worker_id: str | None = None) -> None:
        super().__init__(config.poll_interval, log)
        self.db = db
        self.config = config
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.sender = PinnedSender(config.allowlist, config.timeout)
        # Long enough for every hop of one attempt to time out, with margin.
        self.lease_ms = int((config.timeout * (MAX_REDIRECTS + 1) + 30) * 1000)
        self._in_flight: set[asyncio.Task[None]] = set()

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    async def stop(self) -> None:
        await super().stop()
        # Sends cut short here are retried by whichever worker finds their lease expired.
        tasks = list(self._in_flight)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.sender.aclose()

    async def run_once(self) -> int:
        """Claim due heads for the free send slots and start them; returns how many."""
        free = self.config.concurrency - len(self._in_flight)
        if free <= 0:
            return 0
        now = now_ms()
        async with self.db.read() as s:
            if not await store.any_claimable(s, now):
                return 0
        async with self.db.write() as s:
            ids = await store.claim(
                s, now=now, lease_until=now + self.lease_ms, worker=self.worker_id, limit=free
            )
            rows = await store.load_for_delivery(s, ids) if ids else []
        for row in rows:
            task = asyncio.create_task(self._deliver_logged(row), name="mlgate-webhook-send")
            self._in_flight.add(task)
            task.add_done_callback(self._finished)
        return len(rows)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        # The subscription's next delivery (or a queued one waiting for a slot) may be due.
        self.wake()

    async def _deliver_logged(self, row: Any) -> None:
        try:
            await self._deliver(row)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # Its lease runs out and a later poll retries it.
            log.error("webhook delivery %s failed: %r", row.delivery_id, exc)

    def _request(self, row: Any, now_s: int) -> tuple[bytes, dict[str, str]]:
        payload = json.loads(row.payload)
        box = self.config.secrets
        if row.flavor == "mlflow":
            return mlflow_request(
                delivery_id=row.delivery_id,
                event_type=row.event_type,
                payload=payload,
                created_at=row.event_created_at,
                secret=box.open(row.secret) if row.secret else None,
                now_s=now_s,
            )
        secrets = [box.open(row.secret)] if row.secret else []
        if row.previous_secret and (row.previous_secret_expires_at or 0) > now_s * 1000:
            secrets.append(box.open(row.previous_secret))
        return mlgate_request(
            delivery_id=row.delivery_id,
            event_id=row.event_id,
            event_type=row.event_type,
            payload=payload,
            created_at=row.event_created_at,
            secrets=secrets,
            attempt=row.total_attempts + 1,
            now_s=now_s,
        )

    async def _deliver(self, row: Any) -> None:
        started = now_ms()
        try:
            body, headers = self._request(row, int(time.time()))
        except SecretUnavailable as exc:
            outcome = SendOutcome(url=row.url, duration_ms=0, error=str(exc))
        else:
            outcome = await self.sender.post(row.url, body, headers)
        await self._record(row, started, outcome)

    async def _record(self, row: Any, started: int, outcome: SendOutcome) -> None:
        now = now_ms()
        values: dict[str, Any] = {
            "last_status_code": outcome.status_code,
            "updated_at": now,
        }
        if outcome.ok:
            values.update(status="succeeded", delivered_at=now, last_error=None)
        else:
            error = outcome.error or f"HTTP {outcome.status_code}"
            values["last_error"] = error[:ERROR_LEN]
            failed = row.attempts + 1
            delay = self.config.retry_delay_ms(failed)
            if delay is None:
                values["status"] = "dead"
                log.warning(
                    "webhook delivery %s to %s is dead after %d attempts: %s",
                    row.delivery_id,
                    url_origin(row.url),
                    failed,
                    error.replace(row.url, url_origin(row.url)),
                )
            else:
                values.update(status="failed", next_attempt_at=now + delay)
        async with self.db.write() as s:
            owned = await store.finish_attempt(s, row.id, self.worker_id, values)
            await store.insert_attempt(
                s,
                {
                    "delivery_pk": row.id,
                    "attempt": row.total_attempts + 1,
                    "started_at": started,
                    "duration_ms": outcome.duration_ms,
                    "url": outcome.url[:2000],
                    "status_code": outcome.status_code,
                    "error": outcome.error[:ERROR_LEN] if outcome.error else None,
                    "response_body": outcome.response_body,
                },
            )
            if owned:
                # Otherwise another worker took it over after our lease ran out: its outcome
                # is the one that counts.
                await record_subscription_health(
                    s, row.subscription_id, ok=outcome.ok, now=now, config=self.config
                )


def url_origin(url: str) -> str:
    """``scheme://host:port/…`` of a subscriber URL, for logs: chat and incident webhooks
    carry their credential in the path or query, which must never reach a log line."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}/…"
