"""A PostgreSQL worker keeps the connections a burst of requests opened: the next burst reuses
them instead of forking new server processes (tracking.core.db.burst_pool_size)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import event, text

from tests.conftest import BACKEND
from tracking.core.db import Database
from tracking.core.driver import Prebuilt

pytestmark = pytest.mark.skipif(
    BACKEND != "postgres", reason="SQLite connections are in-process files, cheap to open"
)

SELECT_ONE = Prebuilt(lambda _dialect: text("SELECT 1"))


async def test_bursts_beyond_the_pool_size_reuse_their_connections(make_database: Any) -> None:
    db = Database(make_database("bursts"), pool_size=2)
    opened = 0

    def on_connect(*_args: Any) -> None:
        nonlocal opened
        opened += 1

    event.listen(db.write_engine.sync_engine, "connect", on_connect)
    try:
        for _ in range(5):
            # Four requests hold a connection at once (twice the pool size), then all four
            # finish together, as the requests of one group commit do.
            holding = asyncio.Barrier(4)

            async def request() -> None:
                async with db.driver_write() as w:
                    assert await w.first(SELECT_ONE, {}) == (1,)
                    await holding.wait()

            await asyncio.gather(*(request() for _ in range(4)))
        # Before: the two connections past the pool size were closed at check-in and reopened
        # by every burst (4 + 2 x 4 = 12 opened).
        assert opened == 4
        assert db.write_engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    finally:
        await db.dispose()
