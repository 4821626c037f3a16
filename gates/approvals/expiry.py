"""The background sweep that closes approval requests whose time ran out.

Every replica runs it; the status guard in the UPDATE gives each request exactly one closer,
so each expiry emits one ``approval.expired`` event and one audit entry.
"""

from __future__ import annotations

import logging

from gates.approvals import service
from tracking.core.background import PollingLoop
from tracking.core.db import Database

log = logging.getLogger("mlgate.approvals")


class ApprovalExpirySweep(PollingLoop):
    task_name = "mlgate-approval-expiry"

    def __init__(self, db: Database, interval_seconds: float) -> None:
        super().__init__(interval_seconds, log)
        self.db = db

    def more_waiting(self, handled: int) -> bool:
        return handled >= service.EXPIRY_BATCH

    async def run_once(self) -> int:
        # A read first: most rounds find nothing, and must not take SQLite's write lock.
        async with self.db.read() as s:
            if not await service.any_due_for_expiry(s):
                return 0
        async with self.db.write() as s:
            return await service.expire_due(s)
