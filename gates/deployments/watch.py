"""Long-polling a pointer: re-read it from the database until it moves or time runs out.

Replicas are stateless, so a move made through any replica is seen by reading the pointer's
row again: a short read transaction per poll, backing off from 0.1 s to 1 s, and no database
connection held while sleeping. A per-app cap on concurrent watchers keeps long-polls from
crowding out other requests (each poll borrows a pooled connection for a moment).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

from gates.deployments import service
from gates.deployments.service import Target
from registry.service import PointerState
from tracking.core.db import Database
from tracking.core.errors import TooManyRequests

WATCH_LIMIT_STATE_KEY = "mlgate.watch_limit"
FIRST_POLL_DELAY = 0.1
MAX_POLL_DELAY = 1.0


class WatchLimit:
    """How many long-polls this app serves at once; one more answers 429 with Retry-After."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.active = 0

    @contextmanager
    def slot(self) -> Iterator[None]:
        # No await between the test and the increment: the event loop cannot interleave them.
        if self.active >= self.capacity:
            raise TooManyRequests(
                f"This server already serves {self.capacity} watchers; retry shortly.",
                retry_after=1,
            )
        self.active += 1
        try:
            yield
        finally:
            self.active -= 1


async def wait_for_move(
    db: Database,
    name: str | None,
    target: Target,
    *,
    if_none_match: str | None,
    since: str | None,
    wait_seconds: float,
) -> tuple[PointerState, bool]:
    """The pointer's state once it differs from what the client holds: (state, True), or the
    unchanged state and False when ``wait_seconds`` pass first."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_seconds
    delay = FIRST_POLL_DELAY
    while True:
        async with db.read() as s:
            state = await service.read_pointer(s, name, target)
        if not service.is_current(service.etag_of(state, target), if_none_match, since):
            return state, True
        remaining = deadline - loop.time()
        if remaining <= 0:
            return state, False
        await asyncio.sleep(min(delay, remaining))
        delay = min(delay * 2, MAX_POLL_DELAY)
