"""Database engines, sessions and the declarative base shared by every domain."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import MetaData, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase

from tracking.core.driver import DriverRows, driver_rows

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def async_url(url: str) -> str:
    """Map a plain database URL onto the async driver mlgate uses for it."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    elif backend in {"postgresql", "postgres"}:
        parsed = parsed.set(drivername="postgresql+asyncpg")
    else:
        raise ValueError(f"unsupported database {backend!r}: use sqlite or postgresql")
    return parsed.render_as_string(hide_password=False)


def sync_url(url: str) -> str:
    """The URL alembic's offline helpers and tools use (same database, sync-free form)."""
    return async_url(url)


def ensure_sqlite_directory(url: str) -> None:
    """Create the folder of a SQLite file so a fresh machine can start with no setup."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)


SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys=ON",
)

# How long a statement waits for another process's lock before SQLite says "database is
# locked" (answered 503 with Retry-After): MLGATE_DB_LOCK_TIMEOUT.
DEFAULT_LOCK_TIMEOUT_MS = 30000


def _sqlite_engine(
    url: str, *, immediate: bool, pool_size: int, echo: bool, lock_timeout_ms: int
) -> AsyncEngine:
    from tracking.core.sqlite_driver import in_loop_creator

    path = make_url(url).database or ":memory:"
    # Another process holding the lock is waited for up to the timeout. Writers wait in
    # LockAcquiringCursor (off the loop), never in a statement: their busy_timeout is 0.
    busy = f"PRAGMA busy_timeout={0 if immediate else lock_timeout_ms}"
    engine = create_async_engine(
        url,
        echo=echo,
        async_creator=in_loop_creator(
            path, (*SQLITE_PRAGMAS, busy), lock_timeout_ms, writer=immediate
        ),
        pool_size=pool_size,
        max_overflow=0 if immediate else pool_size,
        pool_timeout=60,
    )

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        # A deferred transaction that reads and then writes can fail with SQLITE_BUSY without
        # waiting (its snapshot is stale); IMMEDIATE takes the write lock up front instead.
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


# A pooled connection idle for longer than this is pinged before it is handed out.
PING_IDLE_AFTER_S = 1.0


def ping_idle_connections(engine: AsyncEngine, idle_after: float = PING_IDLE_AFTER_S) -> None:
    """Ping a pooled PostgreSQL connection at checkout only when it has sat idle a while.

    A connection the server dropped (restart, failover, a cut network) is found at checkout and
    replaced, so requests after an outage succeed without a restart. SQLAlchemy's
    ``pool_pre_ping`` does the same on every checkout, and asyncpg's ping is three round trips
    (BEGIN, an empty statement, ROLLBACK): under load that was more than a log-metric's own
    statements. A connection checked in moments ago was just used successfully, so only an
    idle one is pinged. Requests caught mid-outage answer 503 as before, and their disconnect
    invalidates the pool, so the next checkout reconnects.
    """
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "checkin")
    def _on_checkin(_dbapi_conn: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(sync_engine, "checkout")
    def _on_checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.pop("idle_since", None)
        if since is None or time.monotonic() - since < idle_after:
            return  # a new connection, or one in use moments ago
        try:
            sync_engine.dialect.do_ping(dbapi_conn)
        except Exception as exc:
            # The pool discards this connection and checks out (or opens) another.
            raise DisconnectionError(f"stale pooled connection: {exc}") from exc


def burst_pool_size(pool_size: int) -> int:
    """How many PostgreSQL connections a worker's pool may hold, and keeps once opened.

    A worker may hold twice ``MLGATE_DB_POOL_SIZE`` connections, as before, but the extra ones
    are no longer an "overflow" closed on check-in whenever the pool's idle queue is full.
    Under a closed loop of clients the requests of a group commit finish together, so more
    than ``pool_size`` came back at once and the surplus was closed, then reopened by the next
    burst: in a benchmark of 16 clients on 2 workers with a pool of 10, about one log-metric
    in sixteen opened a connection (a PostgreSQL fork, authentication and asyncpg's type
    introspection, tens of ms). Kept, a connection opened for a burst serves the next one;
    idle ones are still pinged before use and recycled after 30 minutes.
    """
    return 2 * pool_size


class Database:
    """Owns the engines; writes and reads use separate engines only on SQLite."""

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 10,
        echo: bool = False,
        lock_timeout_ms: int = DEFAULT_LOCK_TIMEOUT_MS,
        session_info: Mapping[str, object] | None = None,
    ) -> None:
        """``session_info`` is copied into every session's ``info`` (the app's hooks)."""
        self.url = async_url(url)
        self.is_sqlite = self.url.startswith("sqlite")
        if self.is_sqlite:
            self._prepare_sqlite_path()
            # One writer connection per process: writes queue in asyncio rather than spinning in
            # SQLite's busy handler; other processes are covered by busy_timeout.
            self.write_engine = _sqlite_engine(
                self.url, immediate=True, pool_size=1, echo=echo, lock_timeout_ms=lock_timeout_ms
            )
            self.read_engine = _sqlite_engine(
                self.url,
                immediate=False,
                pool_size=pool_size,
                echo=echo,
                lock_timeout_ms=lock_timeout_ms,
            )
        else:
            self.write_engine = create_async_engine(
                self.url,
                echo=echo,
                pool_size=burst_pool_size(pool_size),
                max_overflow=0,
                pool_recycle=1800,
            )
            ping_idle_connections(self.write_engine)
            self.read_engine = self.write_engine
        info = dict(session_info or {})
        self._write_sessions = async_sessionmaker(
            self.write_engine, expire_on_commit=False, info=info
        )
        read_bind = self.read_engine
        if not self.is_sqlite:
            # PostgreSQL reads run in autocommit: under READ COMMITTED every statement takes its
            # own snapshot anyway, so a read-only transaction's BEGIN and COMMIT were two round
            # trips that bought no consistency. Same pool; only the reads' connections switch.
            read_bind = self.write_engine.execution_options(isolation_level="AUTOCOMMIT")
        self._read_sessions = async_sessionmaker(read_bind, expire_on_commit=False, info=info)

    def _prepare_sqlite_path(self) -> None:
        ensure_sqlite_directory(self.url)

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        """One request, one transaction: commit on success, roll back on any error."""
        async with self._write_sessions() as session, session.begin():
            yield session

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        async with self._read_sessions() as session, session.begin():
            yield session

    def driver_read(self) -> contextlib.AbstractAsyncContextManager[DriverRows]:
        """A read connection's driver for prebuilt statements (autocommit; see driver.py)."""
        return driver_rows(self.read_engine, write=False)

    def driver_write(self) -> contextlib.AbstractAsyncContextManager[DriverRows]:
        """The write connection's driver: one transaction on SQLite, and on PostgreSQL each
        statement commits by itself (a write through it must be ONE statement)."""
        return driver_rows(self.write_engine, write=True)

    async def dispose(self) -> None:
        await self.write_engine.dispose()
        if self.read_engine is not self.write_engine:
            await self.read_engine.dispose()


def dialect_name(session: AsyncSession) -> str:
    bind = session.bind
    return bind.dialect.name if bind is not None else "sqlite"


def insert_for(dialect: str) -> Any:
    """The dialect's ``insert`` construct, which carries ``on_conflict_do_*`` (upserts)."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert


def dialect_insert(session: AsyncSession) -> Any:
    return insert_for(dialect_name(session))


class StatementCache:
    """Hot-path statements built once per dialect.

    Building an upsert (its ``excluded`` alias, column coercions) costs more than executing it
    on SQLite; a prebuilt statement also hits SQLAlchemy's compiled cache directly.
    """

    def __init__(self, build: Any) -> None:
        self._build = build
        self._by_dialect: dict[str, Any] = {}

    def __call__(self, session: AsyncSession) -> Any:
        name = dialect_name(session)
        stmt = self._by_dialect.get(name)
        if stmt is None:
            stmt = self._by_dialect[name] = self._build(name)
        return stmt


def in_id_list(column: Any, dialect: str) -> Any:
    """``column IN <the list bound as :ids>`` as ONE parameter, whatever the list's length.

    An expanding ``IN (?, ?, ...)`` re-renders its SQL for every list length (1,000 runs cost
    more to compile than to fetch); an array (PostgreSQL) or a JSON text (SQLite) does not.
    Pass the list through :func:`id_list_value`.
    """
    if dialect == "postgresql":
        from sqlalchemy import BigInteger, any_, bindparam
        from sqlalchemy.dialects.postgresql import ARRAY

        return column == any_(bindparam("ids", type_=ARRAY(BigInteger)))
    from sqlalchemy import bindparam, func, literal_column, select

    return column.in_(select(literal_column("value")).select_from(func.json_each(bindparam("ids"))))


def id_list_value(ids: list[int], dialect: str) -> Any:
    if dialect == "postgresql":
        return ids
    import json

    return json.dumps(ids)
