"""Every SQL statement of the audit trail."""

from __future__ import annotations

import functools
from typing import Any, cast

from sqlalchemy import Table, bindparam, insert, or_, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from gates.audit.models import AuditEntry
from tracking.core.driver import Prebuilt, run_in_session

_L = cast(Table, AuditEntry.__table__)

# pg_advisory_xact_lock key serialising appends: "audit" in ASCII. Migration 0020's
# mlgate_audit_append takes the same key (418581342580), so both ways of appending exclude
# each other.
_PG_CHAIN_LOCK = 0x6175646974


_LOCK = Prebuilt(lambda _d: text("SELECT pg_advisory_xact_lock(:k)"))
_HEAD = Prebuilt(lambda _d: select(_L.c.seq, _L.c.hash).order_by(_L.c.seq.desc()).limit(1))
_ENTRY_COLUMNS = ("seq", "at", "actor", "kind", "subject", "payload", "prev_hash", "hash")


def lock_chain_and_read_head(s: Session) -> tuple[int, str] | None:
    """Hold the chain until this transaction ends, and read its head: (seq, hash) or None.

    PostgreSQL: a transaction-scoped advisory lock; the head is read after taking it, in a
    fresh READ COMMITTED snapshot, so it sees the previous appender's committed row. SQLite:
    writes already run one at a time (BEGIN IMMEDIATE), nothing to add. Synchronous: it runs
    in the session's commit (see ``gates.audit.service``), inside SQLAlchemy's greenlet; the
    statements are prebuilt and sent on the transaction's own connection.
    """
    if s.get_bind().dialect.name == "postgresql":
        run_in_session(s, _LOCK, {"k": _PG_CHAIN_LOCK})
    rows = run_in_session(s, _HEAD, {})
    return (int(rows[0][0]), str(rows[0][1])) if rows else None


@functools.cache
def _insert(count: int) -> Prebuilt:
    def build(_dialect: str) -> Any:
        return insert(_L).values(
            [
                {c: bindparam(f"{c}_{i}", type_=_L.c[c].type) for c in _ENTRY_COLUMNS}
                for i in range(count)
            ]
        )

    return Prebuilt(build)


def insert_entries(s: Session, rows: list[dict[str, Any]]) -> None:
    """The entries in one statement."""
    params = {f"{c}_{i}": row[c] for i, row in enumerate(rows) for c in _ENTRY_COLUMNS}
    run_in_session(s, _insert(len(rows)), params)


_HAS_APPEND = "mlgate.audit.append_function"
_APPEND = text(
    "SELECT mlgate_audit_append(CAST(:at AS bigint[]), CAST(:actor AS text[]), "
    "CAST(:kind AS text[]), CAST(:subject AS text[]), CAST(:payload AS text[]), "
    "CAST(:prefix AS text[]), CAST(:suffix AS text[]))"
)
_APPEND_CALL = Prebuilt(lambda _d: _APPEND)


def can_append_in_one_call(s: Session) -> bool:
    """Whether the chain can be appended by ``mlgate_audit_append`` (PostgreSQL with migration
    0020): asked once per pooled connection, so a server that met a schema behind head keeps
    appending the three-statement way on the connections that asked before the upgrade."""
    if s.get_bind().dialect.name != "postgresql":
        return False
    info = s.connection().info
    found = info.get(_HAS_APPEND)
    if found is None:
        probe = text("SELECT to_regproc('mlgate_audit_append') IS NOT NULL")
        found = info[_HAS_APPEND] = bool(s.execute(probe).scalar())
    return bool(found)


def append_in_one_call(s: Session, columns: dict[str, list[Any]]) -> None:
    """Lock the chain, read its head and insert the entries in one server-side call (see
    migration 0020). ``columns``: at, actor, kind, subject, payload, and each entry's
    canonical record split around its seq (prefix, suffix)."""
    run_in_session(s, _APPEND_CALL, columns)


async def head(s: AsyncSession) -> tuple[int, str] | None:
    row = (await s.execute(select(_L.c.seq, _L.c.hash).order_by(_L.c.seq.desc()).limit(1))).first()
    return None if row is None else (int(row.seq), str(row.hash))


async def hash_at(s: AsyncSession, seq: int) -> str | None:
    row = (await s.execute(select(_L.c.hash).where(_L.c.seq == seq))).first()
    return None if row is None else str(row.hash)


async def entries_after(s: AsyncSession, after_seq: int, limit: int) -> list[Any]:
    """The chain in order, in batches (verify and export stream it)."""
    stmt = select(_L).where(_L.c.seq > after_seq).order_by(_L.c.seq).limit(limit)
    return list((await s.execute(stmt)).all())


async def search(
    s: AsyncSession,
    *,
    kind: str | None,
    subject: str | None,
    before_seq: int | None,
    limit: int,
) -> list[Any]:
    """Newest first; ``before_seq`` is the keyset cursor of the previous page."""
    stmt = select(_L)
    if kind is not None:
        stmt = stmt.where(_L.c.kind == kind)
    if subject is not None:
        stmt = stmt.where(_L.c.subject == subject)
    if before_seq is not None:
        stmt = stmt.where(_L.c.seq < before_seq)
    stmt = stmt.order_by(_L.c.seq.desc()).limit(limit)
    return list((await s.execute(stmt)).all())


async def search_filtered(
    s: AsyncSession,
    *,
    kind: str | None,
    kind_prefix: str | None,
    model: str | None,
    model_payload: str | None,
    actor: str | None,
    since_ms: int | None,
    until_ms: int | None,
    before_seq: int | None,
    limit: int,
) -> list[Any]:
    """Newest first, by kind (exact or prefix), model, actor and time; keyset on ``seq``.

    ``model`` matches the ``model:<name>`` subject; ``model_payload`` (the canonical JSON
    ``"model":"<name>"`` fragment) also finds approvals and policies bound to that model.
    """
    stmt = select(_L)
    if kind is not None:
        stmt = stmt.where(_L.c.kind == kind)
    if kind_prefix is not None:
        stmt = stmt.where(_L.c.kind.startswith(kind_prefix, autoescape=True))
    if model is not None:
        by_subject = _L.c.subject == f"model:{model}"
        if model_payload is not None:
            stmt = stmt.where(
                or_(by_subject, _L.c.payload.contains(model_payload, autoescape=True))
            )
        else:
            stmt = stmt.where(by_subject)
    if actor is not None:
        stmt = stmt.where(_L.c.actor == actor)
    if since_ms is not None:
        stmt = stmt.where(_L.c.at >= since_ms)
    if until_ms is not None:
        stmt = stmt.where(_L.c.at < until_ms)
    if before_seq is not None:
        stmt = stmt.where(_L.c.seq < before_seq)
    stmt = stmt.order_by(_L.c.seq.desc()).limit(limit)
    return list((await s.execute(stmt)).all())
