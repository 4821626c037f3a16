"""mlgate's processes hand SQLite's write lock to each other at once, and still honour the timeout.

Each test uses its own SQLite file and several ``Database`` objects (each holds its own writer
connection and writer-lock file handle, so two of them in one process contend exactly as two
worker processes do); one test runs real processes.
"""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from tests.conftest import BACKEND
from tracking.core.db import Database
from tracking.core.errors import TemporarilyUnavailable, fault_error

pytestmark = pytest.mark.skipif(
    BACKEND != "sqlite", reason="SQLite's single write lock shared by several processes"
)

SCHEMA = (
    "CREATE TABLE counter (v INTEGER NOT NULL)",
    "INSERT INTO counter VALUES (0)",
    "CREATE TABLE log (who TEXT NOT NULL, i INTEGER NOT NULL, PRIMARY KEY (who, i))",
)


def _fresh_file(tmp_path: Path) -> Path:
    path = tmp_path / "lock.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    for stmt in SCHEMA:
        conn.execute(stmt)
    conn.close()
    return path


def _url(path: Path) -> str:
    return f"sqlite:///{path}"


async def _bump(db: Database, who: str, i: int) -> None:
    """A read-modify-write: a lost update or a second writer inside it shows in the count."""
    async with db.write() as s:
        v = (await s.execute(text("SELECT v FROM counter"))).scalar_one()
        await s.execute(text("UPDATE counter SET v = :v"), {"v": v + 1})
        await s.execute(text("INSERT INTO log (who, i) VALUES (:w, :i)"), {"w": who, "i": i})


class Ticker:
    """Measures the event loop's longest stall while a write waits."""

    def __init__(self) -> None:
        self.longest = 0.0
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.002)
            now = time.monotonic()
            self.longest = max(self.longest, now - last)
            last = now

    def stop(self) -> None:
        self._task.cancel()


WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from sqlalchemy import text
    from tracking.core.db import Database

    async def main(url, who, n, tasks):
        db = Database(url, lock_timeout_ms=20000)
        async def one(t):
            for i in range(t, n, tasks):
                async with db.write() as s:
                    v = (await s.execute(text("SELECT v FROM counter"))).scalar_one()
                    await s.execute(text("UPDATE counter SET v = :v"), {"v": v + 1})
                    await s.execute(
                        text("INSERT INTO log (who, i) VALUES (:w, :i)"), {"w": who, "i": i}
                    )
        await asyncio.gather(*(one(t) for t in range(tasks)))
        await db.dispose()

    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
    """
)


def test_several_processes_writing_one_file_lose_nothing(tmp_path: Path) -> None:
    path = _fresh_file(tmp_path)
    procs, per_process = 4, 150
    children = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, _url(path), f"p{n}", str(per_process), "4"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(procs)
    ]
    outputs = [c.communicate(timeout=120) for c in children]
    for child, (_out, err) in zip(children, outputs, strict=True):
        assert child.returncode == 0, err[-3000:]
        assert "locked" not in err
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT v FROM counter").fetchone() == (procs * per_process,)
        assert conn.execute("SELECT count(*) FROM log").fetchone() == (procs * per_process,)
        per_who = dict(conn.execute("SELECT who, count(*) FROM log GROUP BY who").fetchall())
        assert per_who == {f"p{n}": per_process for n in range(procs)}
    finally:
        conn.close()


async def test_a_waiting_writer_gets_the_lock_as_soon_as_the_holder_commits(
    tmp_path: Path,
) -> None:
    # SQLite's busy handler would retry at 1, 3, 8, ... 228, 328 ms: a holder that commits
    # 240 ms in found the waiter asleep for another ~90 ms.
    path = _fresh_file(tmp_path)
    holder, waiter = Database(_url(path)), Database(_url(path))
    try:
        lateness = []
        for trial in range(3):
            holding = asyncio.Event()
            committed_at = 0.0

            async def hold(trial: int = trial, holding: asyncio.Event = holding) -> None:
                nonlocal committed_at
                async with holder.write() as s:
                    await s.execute(text("UPDATE counter SET v = v + 1"))
                    holding.set()
                    await asyncio.sleep(0.24)
                committed_at = time.monotonic()

            async def wait(trial: int = trial, holding: asyncio.Event = holding) -> float:
                await holding.wait()
                async with waiter.write() as s:
                    # The session begins (takes the lock) with its first statement.
                    await s.execute(text("UPDATE counter SET v = v + 1"))
                    got = time.monotonic()
                return got

            ticker = Ticker()
            _, got = await asyncio.gather(hold(), wait())
            ticker.stop()
            assert ticker.longest < 0.1, "the wait stalled the event loop"
            lateness.append(got - committed_at)
        assert min(lateness) < 0.03, lateness
    finally:
        await holder.dispose()
        await waiter.dispose()


async def test_a_writer_held_off_past_the_timeout_fails_as_unavailable_then_recovers(
    tmp_path: Path,
) -> None:
    path = _fresh_file(tmp_path)
    holder = Database(_url(path))
    waiter = Database(_url(path), lock_timeout_ms=300)
    third = Database(_url(path), lock_timeout_ms=2000)
    try:
        holding, release = asyncio.Event(), asyncio.Event()

        async def hold() -> None:
            async with holder.write() as s:
                await s.execute(text("UPDATE counter SET v = v + 1"))
                holding.set()
                await release.wait()

        held = asyncio.create_task(hold())
        await holding.wait()
        started = time.monotonic()
        with pytest.raises(OperationalError) as caught:
            await _bump(waiter, "w", 0)
        assert 0.25 < time.monotonic() - started < 1.5
        assert "database is locked" in str(caught.value)
        assert isinstance(fault_error(caught.value), TemporarilyUnavailable)  # the 503

        # A waiter cancelled mid-wait (a client that hung up) gives up its place too.
        cancelled = asyncio.create_task(_bump(third, "t", 0))
        await asyncio.sleep(0.05)
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled

        release.set()
        await held
        # Neither abandoned wait kept the lock once it came free: every connection writes
        # again at once, the holder included.
        for db, who in ((waiter, "w"), (third, "t"), (holder, "h"), (waiter, "w2")):
            started = time.monotonic()
            await _bump(db, who, 1)
            assert time.monotonic() - started < 0.25, who
    finally:
        for db in (holder, waiter, third):
            await db.dispose()
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT v FROM counter").fetchone() == (5,)
    conn.close()


async def test_an_external_sqlite3_writer_is_waited_for_without_stalling_the_loop(
    tmp_path: Path,
) -> None:
    path = _fresh_file(tmp_path)
    db = Database(_url(path), lock_timeout_ms=5000)
    external = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    external.execute("BEGIN IMMEDIATE")
    external.execute("UPDATE counter SET v = v + 100")
    threading.Timer(0.3, lambda: external.execute("COMMIT")).start()
    try:
        ticker = Ticker()
        started = time.monotonic()
        await _bump(db, "m", 0)
        waited = time.monotonic() - started
        ticker.stop()
        assert 0.25 < waited < 3, waited
        assert ticker.longest < 0.1, "the wait stalled the event loop"
        # Once the external writer is gone, the next write takes the lock at once.
        started = time.monotonic()
        await _bump(db, "m", 1)
        assert time.monotonic() - started < 0.25
    finally:
        await db.dispose()
        external.close()
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT v FROM counter").fetchone() == (102,)
    conn.close()


async def test_a_write_cancelled_while_an_external_writer_holds_the_lock_leaves_no_harm(
    tmp_path: Path,
) -> None:
    # The cancelled request's thread still waits in SQLite's busy handler on its connection;
    # rolling that connection back or closing it under the thread used to block the loop or
    # crash sqlite3.
    path = _fresh_file(tmp_path)
    db = Database(_url(path), lock_timeout_ms=5000)
    external = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    external.execute("BEGIN IMMEDIATE")
    threading.Timer(0.6, lambda: external.execute("COMMIT")).start()
    try:
        ticker = Ticker()
        waiting = asyncio.create_task(_bump(db, "c", 0))
        await asyncio.sleep(0.1)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await db.dispose()
        await asyncio.sleep(0.05)
        ticker.stop()
        assert ticker.longest < 0.1, "the cancelled wait stalled the event loop"
        await _bump(db, "c", 1)  # a new connection, once the external writer is done
    finally:
        await db.dispose()
        external.close()
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT count(*) FROM log").fetchone() == (1,)
    conn.close()
