"""Prebuilt statements run on a pooled connection's driver: the hottest requests' path.

An ``AsyncSession`` costs more than the statements of a one-statement request: creating it,
beginning and ending its transaction, and every execution crossing SQLAlchemy's greenlet bridge
and result machinery (measured in-process: about 600 µs around one indexed read on PostgreSQL
and 400 µs on SQLite, against 100 µs and 30 µs for the same read on the driver). So the
requests that serving systems and clients send most (resolving a model, logging a metric,
starting a run) run statements that are built once from Core, compiled once per dialect, and
sent to asyncpg or sqlite3 directly, on a connection checked out of the engine's own pool (its
size, timeout, idle ping and invalidation still apply).

Reads run in autocommit on both databases (on PostgreSQL every statement of the session reads
already did), writes are one statement on PostgreSQL (atomic by itself) and one ``BEGIN
IMMEDIATE`` transaction on SQLite. Only plain column types travel this way (text, integers,
floats, arrays of them); the parameters still pass through the bind conversions SQLAlchemy
would apply, so the driver sees the values a session would send.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Hashable, Mapping, Sequence
from typing import Any

from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Session
from sqlalchemy.util import LRUCache, await_, greenlet_spawn


class Prebuilt:
    """A statement built once per dialect (``build(dialect_name)``), compiled once to the
    driver's own SQL and parameter order."""

    __slots__ = ("_build", "_compiled")

    def __init__(self, build: Callable[[str], Any]) -> None:
        self._build = build
        self._compiled: dict[str, Compiled] = {}

    def driver_sql(self, dialect: Dialect) -> Compiled:
        found = self._compiled.get(dialect.name)
        if found is None:
            found = self._compiled[dialect.name] = Compiled(self._build(dialect.name), dialect)
        return found


class Compiled:
    """A prebuilt statement's SQL for one dialect and how to turn parameters into arguments."""

    __slots__ = ("constants", "order", "processors", "sql")

    def __init__(self, stmt: Any, dialect: Dialect) -> None:
        compiled: Any = stmt.compile(dialect=dialect)
        if any(b.expanding for b in compiled.binds.values()):
            raise TypeError("a prebuilt statement binds a list as one parameter, never IN ()")
        self.sql = str(compiled)
        self.order: tuple[str, ...] = tuple(compiled.positiontup or ())
        self.constants: dict[str, Any] = dict(compiled.params)
        # The type conversions SQLAlchemy would apply (an ARRAY's list coercion, say).
        self.processors: dict[str, Any] = dict(getattr(compiled, "_bind_processors", {}) or {})

    def args(self, params: Mapping[str, Any]) -> list[Any]:
        out = []
        for name in self.order:
            value = params[name] if name in params else self.constants[name]
            process = self.processors.get(name)
            out.append(value if process is None or value is None else process(value))
        return out


class DriverRows:
    """Prebuilt statements on one checked-out connection's driver (asyncpg or sqlite3)."""

    def __init__(self, engine: AsyncEngine, fairy: Any, *, write: bool = False) -> None:
        self._dialect = engine.dialect
        self.dialect = engine.dialect.name
        self._dispatch = engine.sync_engine.dispatch
        self._fairy = fairy
        driver = fairy.driver_connection
        self._postgres = self.dialect == "postgresql"
        # SQLite: the in-loop connection (tracking.core.sqlite_driver) and its sqlite3 handle.
        self._driver = driver
        self._sqlite = None if self._postgres else driver.sqlite_connection
        # Set when the driver itself failed: the connection is then discarded.
        self.failed = False
        # SQLite writes: BEGIN IMMEDIATE before the first statement (none: no lock taken).
        self._begin_pending = write and self._sqlite is not None
        self.in_transaction = False

    def _args(self, stmt: Prebuilt, params: Mapping[str, Any]) -> tuple[str, list[Any]]:
        compiled = stmt.driver_sql(self._dialect)
        return compiled.sql, compiled.args(params)

    async def _fetch(self, sql: str, args: list[Any]) -> list[Sequence[Any]]:
        """Send ``sql`` to the driver (after the write lock, if one is pending); its rows."""
        if self._begin_pending:
            await self._begin_immediate()
        if self._dispatch.before_cursor_execute:
            # Statement counters (tests, benchmarks) see these statements like any other;
            # there is no Connection or cursor to pass.
            self._dispatch.before_cursor_execute(None, None, sql, args, None, False)
        try:
            if self._postgres:
                return list(await self._driver.fetch(sql, *args))
            assert self._sqlite is not None
            return self._sqlite.execute(sql, args).fetchall()
        except BaseException:
            self.failed = True
            raise

    async def all(self, stmt: Prebuilt, params: Mapping[str, Any]) -> list[Sequence[Any]]:
        return await self._fetch(*self._args(stmt, params))

    async def all_built(self, stmt: Any) -> list[Sequence[Any]]:
        """The rows of a Core select built for this request (a search), its values bound in it.

        Compiled like a session's execution: through a statement cache keyed by the
        statement's structure (its values extracted), with the parameters' bind conversions
        and ``literal_execute`` values rendered into the SQL at execution.
        """
        return await self._fetch(*_built_args(stmt, self._dialect))

    async def all_memoized(
        self, memo: BuiltStatements, key: Hashable, build: Callable[[], Any]
    ) -> list[Sequence[Any]]:
        """:meth:`all_built` of the select ``build()`` makes, through ``memo``: a request seen
        before (same ``key``) reuses its SQL and arguments, and ``build`` is not called."""
        return await self._fetch(*memo.args(self._dialect, key, build))

    async def first(self, stmt: Prebuilt, params: Mapping[str, Any]) -> Sequence[Any] | None:
        rows = await self.all(stmt, params)
        return rows[0] if rows else None

    async def executemany(self, stmt: Prebuilt, rows: Sequence[Mapping[str, Any]]) -> None:
        """SQLite only (PostgreSQL writes are one statement with arrays)."""
        compiled = stmt.driver_sql(self._dialect)
        await self.executemany_native(compiled.sql, [compiled.args(r) for r in rows])

    async def executemany_native(self, sql: str, values: Sequence[Sequence[Any]]) -> None:
        """SQLite only: ``sql`` in sqlite3's own ``?`` style, one tuple per row."""
        if not values:
            return
        assert self._sqlite is not None
        if self._begin_pending:
            await self._begin_immediate()
        if self._dispatch.before_cursor_execute:
            self._dispatch.before_cursor_execute(None, None, sql, values, None, True)
        try:
            self._sqlite.executemany(sql, values)
        except BaseException:
            self.failed = True
            raise

    async def _begin_immediate(self) -> None:
        # The in-loop driver's cursor takes the write lock without stalling the loop.
        self._begin_pending = False
        if self._dispatch.before_cursor_execute:
            self._dispatch.before_cursor_execute(None, None, "BEGIN IMMEDIATE", (), None, False)
        try:
            await self._driver.cursor().execute("BEGIN IMMEDIATE")
        except BaseException:
            self.failed = True
            raise
        self.in_transaction = True


# Compiled forms of per-request statements, keyed like SQLAlchemy's own cache (the dialect and
# the statement's structure, never its values): SQL text, not database state.
_BUILT_CACHE: Any = LRUCache(500)


class BuiltStatements:
    """The driver SQL and arguments of recently built selects, by what the request asked.

    A search's select is built from its request (filter, order, scope, page) each time, and
    building and compiling it costs more CPU than running it on a small page. Requests repeat:
    a UI refreshing a table, a job polling for its champion, a client paging through results.
    ``key`` must hold everything the select depends on (its values included, since PostgreSQL
    searches write them into the SQL), so an entry is exactly what building would give. Bounded
    (least recently used out first), per process; only SQL text is kept, never rows.
    """

    def __init__(self, size: int = 512) -> None:
        self._size = size
        self._entries: OrderedDict[tuple[str, Hashable], tuple[str, list[Any]]] = OrderedDict()
        # Selects built (misses), for tests and benchmarks.
        self.built = 0

    def args(
        self, dialect: Dialect, key: Hashable, build: Callable[[], Any]
    ) -> tuple[str, list[Any]]:
        """``build()``'s SQL and arguments for ``dialect``; built (and kept) on a miss. An
        error while building (a bad filter) propagates and nothing is kept."""
        entry_key = (dialect.name, key)
        found = self._entries.get(entry_key)
        if found is not None:
            self._entries.move_to_end(entry_key)
            return found
        made = _built_args(build(), dialect)
        self.built += 1
        self._entries[entry_key] = made
        if len(self._entries) > self._size:
            self._entries.popitem(last=False)
        return made

    def __len__(self) -> int:
        return len(self._entries)


def _built_args(stmt: Any, dialect: Dialect) -> tuple[str, list[Any]]:
    """The driver's SQL and positional arguments for ``stmt``, as Connection.execute makes
    them (sqlalchemy.engine.default.DefaultExecutionContext._init_compiled)."""
    compiled, extracted, collected, _stats = stmt._compile_w_cache(
        dialect,
        compiled_cache=_BUILT_CACHE,
        column_keys=[],
        for_executemany=False,
        schema_translate_map=None,
        linting=dialect.compiler_linting,
    )
    params = compiled.construct_params(
        extracted_parameters=extracted, escape_names=False, _collected_params=collected
    )
    processors = compiled._bind_processors
    if compiled.literal_execute_params or compiled.post_compile_params:
        expanded = compiled._process_parameters_for_postcompile(params)
        sql, order = expanded.statement, expanded.positiontup
        processors = {**processors, **expanded.processors}
    else:
        sql, order = compiled.string, compiled.positiontup
    args = [processors[k](params[k]) if k in processors else params[k] for k in order or ()]
    return sql, args


@contextlib.asynccontextmanager
async def driver_rows(engine: AsyncEngine, *, write: bool) -> AsyncIterator[DriverRows]:
    """Check a connection out of ``engine``'s pool and lend its driver.

    ``write`` on SQLite wraps the block's statements in ``BEGIN IMMEDIATE`` (taken at the
    first statement) ... ``COMMIT``, rolled back on any error; on PostgreSQL every statement
    commits by itself, so a write must be one statement. A connection whose driver failed (or
    was cancelled mid-statement) is discarded, not returned to the pool: after a disconnect it
    could not be reused, and otherwise it costs one reconnect. An error of the caller's own (a
    refused request) keeps it.
    """
    pool = engine.sync_engine.pool
    fairy = await greenlet_spawn(pool.connect)
    rows = DriverRows(engine, fairy, write=write)
    try:
        try:
            yield rows
        except BaseException:
            if rows.in_transaction and rows._sqlite is not None:
                rows._driver.rollback_now()
            raise
        if rows.in_transaction and rows._sqlite is not None:
            try:
                rows._driver.commit_now()
            except BaseException:
                rows.failed = True
                rows._driver.rollback_now()
                raise
    except BaseException as exc:
        if rows.failed or not isinstance(exc, Exception):
            await greenlet_spawn(fairy.invalidate, exc if isinstance(exc, Exception) else None)
        raise
    finally:
        await greenlet_spawn(fairy.close)


async def session_rows(s: AsyncSession) -> DriverRows:
    """The driver of ``s``'s own connection, inside the session's transaction.

    For a request that must stay one transaction (a stage move: its row lock, its outbox event
    and audit entry commit or roll back together) but whose statements are prebuilt: they run
    on the connection the session already holds, between its BEGIN and its COMMIT, and the
    session still commits, rolls back and returns the connection. Nothing the session has
    loaded is refreshed, so only tables the session does not hold objects of are written here.
    """
    conn = await s.connection()  # begins the session's transaction (SQLite: BEGIN IMMEDIATE)
    fairy = await conn.get_raw_connection()
    adapter = fairy.dbapi_connection
    # SQLAlchemy's asyncpg adapter sends BEGIN lazily, with its first statement; a statement
    # sent past it must find the transaction begun, and begun by the adapter, so that its
    # COMMIT or ROLLBACK ends it.
    if conn.dialect.name == "postgresql" and adapter._transaction is None:  # type: ignore[union-attr]
        await adapter._start_transaction()  # type: ignore[union-attr]
    return DriverRows(conn.engine, fairy, write=False)


def run_in_session(session: Session, stmt: Prebuilt, params: Mapping[str, Any]) -> list[Any]:
    """Run ``stmt`` on ``session``'s connection, inside its transaction, from synchronous code
    that runs in SQLAlchemy's greenlet (a session event such as ``before_commit``); its rows."""
    conn = session.connection()
    fairy = conn.connection
    compiled = stmt.driver_sql(conn.dialect)
    sql, args = compiled.sql, compiled.args(params)
    dispatch = conn.engine.dispatch
    if dispatch.before_cursor_execute:
        dispatch.before_cursor_execute(None, None, sql, args, None, False)
    driver: Any = fairy.driver_connection
    if conn.dialect.name == "postgresql":
        adapter: Any = fairy.dbapi_connection
        if adapter._transaction is None:  # see session_rows
            await_(adapter._start_transaction())
        return list(await_(driver.fetch(sql, *args)))
    return list(driver.sqlite_connection.execute(sql, args).fetchall())
