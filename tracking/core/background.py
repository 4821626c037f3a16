"""Background work of a server process: one coroutine polling the database until stopped.

Work shared between replicas (webhook deliveries, approval expiry) lives in the database;
each replica runs the same loop and claims its share there, never in process memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import ABC, abstractmethod
from typing import Self

from tracking.core.errors import fault_error


class PollingLoop(ABC):
    """Calls :meth:`run_once` again and again in the background of the app's event loop.

    After a round that left nothing waiting (:meth:`more_waiting`) it sleeps ``interval``
    seconds. A failing round is logged and retried after the pause: the database may be
    restarting.
    """

    task_name = "mlgate-background"

    def __init__(self, interval: float, log: logging.Logger) -> None:
        self.interval = interval
        self.log = log
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    @abstractmethod
    async def run_once(self) -> int:
        """Do one round of work; returns how many items it handled."""

    def more_waiting(self, handled: int) -> bool:
        """Whether the next round should start at once (default: this one found work)."""
        return handled > 0

    def wake(self) -> None:
        """End the current pause early: work may be waiting (e.g. a send slot came free)."""
        self._wake.set()

    def start(self) -> Self:
        """Run in the background of the current event loop (the app's lifespan)."""
        self._task = asyncio.create_task(self.run_forever(), name=self.task_name)
        return self

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def run_forever(self) -> None:
        while True:
            try:
                handled = await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                fault = fault_error(exc)
                if fault is not None and fault.status_code >= 500:
                    # An outage, not a bug: one line per round, no traceback flood.
                    self.log.warning("%s: a round failed: %s", self.task_name, fault.message)
                else:
                    self.log.exception("%s: a round failed", self.task_name)
                handled = 0
            if not self.more_waiting(handled):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.interval)
            self._wake.clear()
