"""An in-loop SQLite connection for SQLAlchemy's aiosqlite dialect (plugged in via async_creator).

aiosqlite runs every statement on a helper thread, so each statement costs a thread hop and an
event-loop wake-up. With SQLite's single writer, that latency is the write throughput: a
transaction holding the write lock waits for the loop between each of its statements (measured:
~240 log-metric requests/s with aiosqlite). Statements on a local WAL database take microseconds,
so this driver runs them directly on the event loop.

The one call that can wait is taking the write lock (``BEGIN IMMEDIATE`` while another process
writes). mlgate's own processes queue for it on a ``flock`` (:class:`WriterLock`), waited for on
a thread that the kernel wakes the moment the holder commits; a writer that is not mlgate (a
script with plain sqlite3) is waited for on a thread in SQLite's busy handler. Neither stalls
the loop, and once the lock is held nothing else in the transaction can block on another
process.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from typing import Any

# How long a writer waits for another process's write lock before "database is locked".
WRITE_LOCK_WAIT_MS = 30000

# The writer lock's file, next to the database (``mlgate.db`` -> ``mlgate.db-writer``).
WRITER_LOCK_SUFFIX = "-writer"


class WriterLock:
    """An exclusive ``flock`` on a file next to the database, held for each write transaction.

    SQLite's own write lock has no queue: a writer that finds it taken can only retry, and
    SQLite's busy handler retries after sleeps of 1, 2, 5, 10 ... 100 ms, so with two worker
    processes the lock sat free while the other process slept (measured: a quarter of the
    transitions waited, p50 20 ms and p99 190 ms per wait, for transactions of about 2 ms).
    A blocked ``flock`` is woken by the kernel the moment the holder lets go, so mlgate's
    processes hand the database over without sleeping. The kernel drops the lock when its
    file is closed or its process dies, so a crashed worker never leaves it taken.

    The blocking wait runs on this lock's own daemon thread, never on the event loop. A
    waiter that gives up (timeout, cancelled request) leaves the thread to let go of the lock
    when it comes, so the lock is only held by a transaction that asked for it.
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self.held = False  # by this connection's current transaction (loop side only)
        self.unsupported = False
        # Guarded by _mutex: a blocking flock is running on the thread; who wants its result
        # (None: nobody, the thread lets go at once); the connection closed.
        self._mutex = threading.Lock()
        self._wake = threading.Condition(self._mutex)
        self._waiting = False
        self._want: tuple[asyncio.AbstractEventLoop, asyncio.Future[None]] | None = None
        self._closed = False
        self._thread: threading.Thread | None = None

    @classmethod
    def open_for(cls, database: str) -> WriterLock | None:
        """The lock of ``database`` (None for an in-memory database or a folder it cannot
        create the file in: writers then wait in SQLite's busy handler alone)."""
        if not database or database == ":memory:" or database.startswith("file:"):
            return None
        try:
            fd = os.open(
                database + WRITER_LOCK_SUFFIX, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644
            )
        except OSError:
            return None
        return cls(fd)

    async def acquire(self, timeout_s: float) -> bool:
        """Take the lock within ``timeout_s`` seconds (False: other transactions kept it)."""
        if self.held or self.unsupported:
            return True
        loop = asyncio.get_running_loop()
        got: asyncio.Future[None] = loop.create_future()
        with self._mutex:
            # Never beside a blocking wait on the same file: that wait would then "take" the
            # lock this transaction holds and, unwanted, let it go.
            if not self._waiting:
                try:
                    fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    self.held = True
                    return True
                except BlockingIOError:
                    pass
                except OSError:
                    # A file system without flock (ENOLCK, EOPNOTSUPP): writers wait in
                    # SQLite's busy handler alone, as they did before this lock existed.
                    self.unsupported = True
                    return True
            self._want = (loop, got)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._serve, name="mlgate-sqlite-writer-lock", daemon=True
                )
                self._thread.start()
            self._wake.notify()
        try:
            await asyncio.wait_for(asyncio.shield(got), timeout_s)
        except BaseException as exc:
            with self._mutex:
                if self._want is not None and self._want[1] is got:
                    self._want = None
            # _grant runs on this loop too: either it granted already (give the lock back)
            # or it will find ``got`` cancelled and let go itself.
            if got.done() and not got.cancelled():
                with self._mutex:
                    self._unlock()
            got.cancel()
            if isinstance(exc, TimeoutError):
                return False
            raise
        self.held = True
        return True

    def _serve(self) -> None:
        while True:
            with self._mutex:
                while self._want is None and not self._closed:
                    self._wake.wait()
                if self._closed:
                    return
                self._waiting = True
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX)
            except OSError:
                self.unsupported = True  # see acquire; the waiter goes on to BEGIN IMMEDIATE
            with self._mutex:
                self._waiting = False
                want, self._want = self._want, None
                if self._closed:
                    os.close(self._fd)
                    return
                if want is None:
                    self._unlock()  # its waiter gave up
                    continue
            loop, got = want
            try:
                loop.call_soon_threadsafe(self._grant, got)
            except RuntimeError:  # the loop is closed
                with self._mutex:
                    self._unlock()

    def _grant(self, got: asyncio.Future[None]) -> None:
        if got.done():  # the waiter gave up after the thread took the lock
            with self._mutex:
                self._unlock()
        else:
            got.set_result(None)

    def _unlock(self) -> None:
        with contextlib.suppress(OSError):
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def release(self) -> None:
        if self.held:
            self.held = False
            with self._mutex:
                self._unlock()

    def close(self) -> None:
        """Let go and close the file (a blocked wait closes it when it returns)."""
        self.held = False
        with self._mutex:
            if self._closed:
                return
            self._closed = True
            self._want = None
            self._wake.notify()
            if self._waiting:
                return
        os.close(self._fd)


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
    """Takes the write lock without stalling the loop (``InLoopConnection.begin_immediate``)."""

    def __init__(self, cursor: sqlite3.Cursor, connection: InLoopConnection) -> None:
        super().__init__(cursor)
        self._connection = connection

    async def execute(self, operation: str, parameters: Any = None) -> InLoopCursor:
        if operation.lstrip().upper().startswith("BEGIN IMMEDIATE"):
            await self._connection.begin_immediate(operation)
            return self
        return await super().execute(operation, parameters)


class InLoopConnection:
    """The subset of aiosqlite's Connection API that SQLAlchemy's adapter calls."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        lock_wait_ms: int = WRITE_LOCK_WAIT_MS,
        writer_lock: WriterLock | None = None,
    ) -> None:
        self._conn = conn
        self._connection: sqlite3.Connection | None = conn
        self._lock_wait_ms = lock_wait_ms
        self._writer_lock = writer_lock
        # A thread waiting in SQLite's busy handler uses the connection: closing it then (a
        # cancelled request's connection is discarded) would crash sqlite3, so the thread
        # closes it when its wait ends.
        self._guard = threading.Lock()
        self._busy_wait_running = False
        self._close_when_waited = False

    @property
    def sqlite_connection(self) -> sqlite3.Connection:
        """The sqlite3 connection itself (tracking.core.driver runs prebuilt statements on it)."""
        return self._conn

    @property
    def isolation_level(self) -> str | None:
        return self._conn.isolation_level

    def cursor(self) -> LockAcquiringCursor:
        return LockAcquiringCursor(self._conn.cursor(), self)

    async def begin_immediate(self, operation: str = "BEGIN IMMEDIATE") -> None:
        """``BEGIN IMMEDIATE`` without stalling the loop, waiting at most the lock timeout.

        Write connections run with ``busy_timeout=0``. mlgate's own processes queue for the
        writer lock first (:class:`WriterLock`: the kernel wakes the next waiter the moment a
        transaction ends), so ``BEGIN IMMEDIATE`` then succeeds at once unless a process that is
        not mlgate (a backup tool, a script with plain sqlite3) holds SQLite's lock: only then
        does a thread wait for it with SQLite's busy handler, for the rest of the timeout.
        """
        if self._writer_lock is not None:
            started = time.monotonic()
            if not await self._writer_lock.acquire(self._lock_wait_ms / 1000):
                raise sqlite3.OperationalError("database is locked")
            try:
                remaining = self._lock_wait_ms - (time.monotonic() - started) * 1000
                await self._begin_or_wait(operation, max(1, int(remaining)))
            except BaseException:
                self._writer_lock.release()
                raise
            return
        await self._begin_or_wait(operation, self._lock_wait_ms)

    async def _begin_or_wait(self, operation: str, wait_ms: int) -> None:
        try:
            self._conn.execute(operation)
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc):
                raise
            await asyncio.to_thread(self._wait_and_begin, operation, wait_ms)

    def _wait_and_begin(self, operation: str, wait_ms: int) -> None:
        with self._guard:
            if self._connection is None:
                raise sqlite3.ProgrammingError("Cannot operate on a closed database.")
            self._busy_wait_running = True
        try:
            self._conn.execute(f"PRAGMA busy_timeout={int(wait_ms)}")
            try:
                self._conn.execute(operation)
            finally:
                self._conn.execute("PRAGMA busy_timeout=0")
        finally:
            with self._guard:
                self._busy_wait_running = False
                close = self._close_when_waited
            if close:
                self._conn.close()

    def _end_write(self) -> None:
        if self._writer_lock is not None:
            self._writer_lock.release()

    def _abandon_if_waiting(self) -> None:
        """A request cancelled while its thread still waits in the busy handler: the
        connection is the thread's until then (touching it here would block the loop on
        SQLite's connection mutex), so it is given up: the thread closes it, and the error
        makes the pool discard it."""
        with self._guard:
            if not self._busy_wait_running:
                return
            self._connection = None
            self._close_when_waited = True
        raise sqlite3.OperationalError("database is locked")

    def commit_now(self) -> None:
        """COMMIT, then hand the writer lock on (also when COMMIT fails: the caller rolls back)."""
        try:
            self._abandon_if_waiting()
            self._conn.commit()
        finally:
            if not self._connection or not self._conn.in_transaction:
                self._end_write()

    def rollback_now(self) -> None:
        try:
            self._abandon_if_waiting()
            self._conn.rollback()
        finally:
            self._end_write()

    async def commit(self) -> None:
        self.commit_now()

    async def rollback(self) -> None:
        self.rollback_now()

    async def close(self) -> None:
        self.stop()

    def stop(self) -> None:
        with self._guard:
            if self._connection is None:
                return
            self._connection = None
            self._close_when_waited = self._busy_wait_running
        try:
            if not self._close_when_waited:
                self._conn.close()
        finally:
            if self._writer_lock is not None:
                self._writer_lock.close()

    async def create_function(self, *args: Any, **kwargs: Any) -> None:
        self._conn.create_function(*args, **kwargs)


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    return "locked" in str(exc) or "busy" in str(exc)


def in_loop_creator(
    path: str,
    pragmas: Sequence[str],
    lock_wait_ms: int = WRITE_LOCK_WAIT_MS,
    *,
    writer: bool = False,
) -> Any:
    """An ``async_creator`` for ``create_async_engine`` opening ``path`` in autocommit mode.

    Transactions are begun explicitly by the engine's ``begin`` event, never by the driver.
    ``writer`` connections queue for :class:`WriterLock` before ``BEGIN IMMEDIATE``.
    """

    async def create() -> InLoopConnection:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        for pragma in pragmas:
            conn.execute(pragma)
        lock = WriterLock.open_for(path) if writer else None
        return InLoopConnection(conn, lock_wait_ms, lock)

    return create
