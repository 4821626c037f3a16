"""The background sweep that turns long-lasting differences into ``deployment.drift`` events.

Every replica runs it; the compare-and-set updates in the deployments store give each
transition one winner, so each drift or convergence emits exactly one event.
"""

from __future__ import annotations

import logging

from gates.deployments import service
from tracking.core.background import PollingLoop
from tracking.core.clock import now_ms
from tracking.core.db import Database

log = logging.getLogger("mlgate.deployments")

SWEEP_PAGE = 200


class DriftSweep(PollingLoop):
    task_name = "mlgate-drift-sweep"

    def __init__(self, db: Database, interval_seconds: float, drift_after_seconds: float) -> None:
        super().__init__(interval_seconds, log)
        self.db = db
        self.drift_after_ms = int(drift_after_seconds * 1000)
        self._cursor = 0
        self._more = False

    def more_waiting(self, handled: int) -> bool:
        return self._more

    async def run_once(self) -> int:
        # A read first: most rounds find nothing to change and must not take SQLite's write lock.
        async with self.db.read() as s:
            due, cursor = await service.due_for_evaluation(
                s, self._cursor, SWEEP_PAGE, drift_after_ms=self.drift_after_ms
            )
        self._cursor, self._more = (cursor, True) if cursor is not None else (0, False)
        if not due:
            return 0
        emitted = 0
        async with self.db.write() as s:
            for deployment_id in due:
                emitted += await service.evaluate(
                    s, deployment_id, drift_after_ms=self.drift_after_ms, now=now_ms()
                )
        return emitted
