"""An in-loop SQLite connection for SQLAlchemy's aiosqlite dialect (plugged in via async_creator).

aiosqlite runs every statement on a helper thread, so each statement costs a thread hop and an
event-loop wake-up. With SQLite's single writer, that latency is the write throughput: a
transaction holding the write lock waits for the loop between each of its statements (measured:
~240 log-metric requests/s with aiosqlite). Statements on a local WAL database take microseconds,
so this driver runs them directly on the event loop.

The one call that can wait is taking the write lock (``BEGIN IMMEDIATE`` while another process
writes): that alone goes to a thread, where SQLite's busy_timeout can sleep without stalling the
loop. Once the lock is held, nothing else in the transaction can block on another process.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from typing import Any

# How long a writer waits for another process's write lock before "database is locked".
WRITE_LOCK_WAIT_MS = 30000


class InLoopCursor:
    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self._cursor = cursor

    async def __aenter__(self) -> InLoopCursor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._cursor.close()

    @property
    def description(self) -> Any:
        return self._cursor.description

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._cursor.lastrowid

    @property
    def arraysize(self) -> int:
        return self._cursor.arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._cursor.arraysize = value

    async def execute(self, operation: str, parameters: Any = None) -> InLoopCursor:
        if parameters is None:
            self._cursor.execute(operation)
        else:
            self._cursor.execute(operation, parameters)
        return self

    async def executemany(self, operation: str, seq_of_parameters: Sequence[Any]) -> InLoopCursor:
        self._cursor.executemany(operation, seq_of_parameters)
        return self

    async def fetchone(self) -> Any:
        return self._cursor.fetchone()

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        return self._cursor.fetchmany(size if size is not None else self._cursor.arraysize)

    async def fetchall(self) -> list[Any]:
        return self._cursor.fetchall()

    async def close(self) -> None:
        self._cursor.close()

    async def nextset(self) -> None:
        return None

    async def setinputsizes(self, *sizes: Any) -> None:
        return None

    def setoutputsize(self, size: Any, column: Any = None) -> None:
        return None


class LockAcquiringCursor(InLoopCursor):
    """Takes the write lock without stalling the loop.

    Write connections run with ``busy_timeout=0``, so ``BEGIN IMMEDIATE`` either gets the lock at
    once (always, with one process) or fails at once; only then does a thread wait for it, with
    SQLite's busy handler, while the loop serves other requests.
    """

    def __init__(self, cursor: sqlite3.Cursor, lock_wait_ms: int = WRITE_LOCK_WAIT_MS) -> None:
        super().__init__(cursor)
        self._lock_wait_ms = lock_wait_ms

    async def execute(self, operation: str, parameters: Any = None) -> InLoopCursor:
        if operation.lstrip().upper().startswith("BEGIN IMMEDIATE"):
            try:
                self._cursor.execute(operation)
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                await asyncio.to_thread(self._wait_and_begin, operation)
            return self
        return await super().execute(operation, parameters)

    def _wait_and_begin(self, operation: str) -> None:
        self._cursor.execute(f"PRAGMA busy_timeout={int(self._lock_wait_ms)}")
        try:
            self._cursor.execute(operation)
        finally:
            self._cursor.execute("PRAGMA busy_timeout=0")


class InLoopConnection:
    """The subset of aiosqlite's Connection API that SQLAlchemy's adapter calls."""

    def __init__(self, conn: sqlite3.Connection, lock_wait_ms: int = WRITE_LOCK_WAIT_MS) -> None:
        self._conn = conn
        self._connection: sqlite3.Connection | None = conn
        self._lock_wait_ms = lock_wait_ms

    @property
    def sqlite_connection(self) -> sqlite3.Connection:
        """The sqlite3 connection itself (tracking.core.driver runs prebuilt statements on it)."""
        return self._conn

    @property
    def isolation_level(self) -> str | None:
        return self._conn.isolation_level

    def cursor(self) -> LockAcquiringCursor:
        return LockAcquiringCursor(self._conn.cursor(), self._lock_wait_ms)

    async def commit(self) -> None:
        self._conn.commit()

    async def rollback(self) -> None:
        self._conn.rollback()

    async def close(self) -> None:
        if self._connection is not None:
            self._conn.close()
            self._connection = None

    def stop(self) -> None:
        if self._connection is not None:
            self._conn.close()
            self._connection = None

    async def create_function(self, *args: Any, **kwargs: Any) -> None:
        self._conn.create_function(*args, **kwargs)


def in_loop_creator(
    path: str, pragmas: Sequence[str], lock_wait_ms: int = WRITE_LOCK_WAIT_MS
) -> Any:
    """An ``async_creator`` for ``create_async_engine`` opening ``path`` in autocommit mode.

    Transactions are begun explicitly by the engine's ``begin`` event, never by the driver.
    """

    async def create() -> InLoopConnection:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        for pragma in pragmas:
            conn.execute(pragma)
        return InLoopConnection(conn, lock_wait_ms)

    return create
