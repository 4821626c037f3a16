"""The background sweep that closes approval requests whose time ran out.

Every replica runs it; the status guard in the UPDATE gives each request exactly one closer,
so each expiry emits one ``approval.expired`` event and one audit entry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from gates.approvals import service
from tracking.core.db import Database

log = logging.getLogger("mlgate.approvals")


class ApprovalExpirySweep:
    def __init__(self, db: Database, interval_seconds: float) -> None:
        self.db = db
        self.interval = interval_seconds
        self._task: asyncio.Task[None] | None = None

    def start(self) -> ApprovalExpirySweep:
        """Run in the background of the current event loop (the app's lifespan)."""
        self._task = asyncio.create_task(self.run_forever(), name="mlgate-approval-expiry")
        return self

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def run_once(self) -> int:
        # A read first: most rounds find nothing, and must not take SQLite's write lock.
        async with self.db.read() as s:
            if not await service.any_due_for_expiry(s):
                return 0
        async with self.db.write() as s:
            return await service.expire_due(s)

    async def run_forever(self) -> None:
        while True:
            try:
                closed = await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                # The database may be restarting; the next round tries again.
                log.exception("approval expiry sweep failed")
                closed = 0
            if closed < service.EXPIRY_BATCH:
                await asyncio.sleep(self.interval)
