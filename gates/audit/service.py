"""The audit trail: append hash-chained entries, verify the chain, export and search it.

Each entry's ``hash`` is ``sha256(prev_hash + canonical record)``, where the record is the
canonical JSON (sorted keys, compact, ASCII) of its seq, time, actor, kind, subject and
payload. Changing, inserting or deleting any row breaks every hash after it; ``verify`` names
the first bad ``seq``. (Removing the newest rows is only detectable against a head hash kept
elsewhere, which is why ``verify`` prints it.)
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, cast

import msgspec
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, SessionTransaction

from gates.audit import store
from gates.audit.schemas import AuditEntryOut
from registry import events as registry_events
from registry.events import RegistryEvent
from tracking.core.clock import now_ms
from tracking.core.db import Database
from tracking.core.errors import InvalidParameter
from tracking.core.wire import decode_page_token, encode_page_token

GENESIS_HASH = "0" * 64
MAX_KIND = 64
MAX_SUBJECT = 512
MAX_ACTOR = 256
DEFAULT_PAGE = 100
MAX_PAGE = 1000
BATCH = 1000


def _normalise(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        # MLflow's spelling of non-finite doubles; JSON has none.
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {str(k): _normalise(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_normalise(v) for v in value]
    return value


def canonical_json(value: Any) -> str:
    """Sorted keys, no whitespace, ASCII only: one spelling per value."""
    return json.dumps(
        _normalise(msgspec.to_builtins(value)),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,
        allow_nan=False,
    )


def entry_hash(
    prev_hash: str, *, seq: int, at: int, actor: str, kind: str, subject: str, payload: Any
) -> str:
    record = canonical_json(
        {"seq": seq, "at": at, "actor": actor, "kind": kind, "subject": subject, "payload": payload}
    )
    return hashlib.sha256((prev_hash + record).encode("ascii")).hexdigest()


def entry_out(row: Any) -> AuditEntryOut:
    return AuditEntryOut(
        seq=int(row.seq),
        at=int(row.at),
        actor=row.actor,
        kind=row.kind,
        subject=row.subject,
        payload=json.loads(row.payload),
        prev_hash=row.prev_hash,
        hash=row.hash,
    )


@dataclass(frozen=True, slots=True)
class _Pending:
    at: int
    actor: str
    kind: str
    subject: str
    body: str  # canonical JSON of the payload


# Keys in the (sync) Session's ``info``: the entries appended and not yet written, and where
# each open savepoint began in that list.
_PENDING = "mlgate.audit.pending"
_SAVEPOINTS = "mlgate.audit.savepoints"


async def append(
    session: AsyncSession, kind: str, subject: str, payload: dict[str, Any], actor: str
) -> None:
    """Append an entry in ``session``'s transaction: it commits or rolls back with the action.

    ``kind`` says what happened ('gate.decided', 'approval.approved', 'policy.updated' ...),
    ``subject`` what it happened to ('model:fraud', 'policy:prod-gate' ...).

    The entry is chained when the transaction commits: the chain's lock (one chain for the
    whole server, see ``store.lock_chain_and_read_head``) is taken, the head read, and every
    entry of the transaction hashed and inserted, right before COMMIT. On PostgreSQL that is one
    call of ``mlgate_audit_append`` (migration 0020), hashing in the database, so the lock is
    held for one round trip and the COMMIT; elsewhere three statements. Either way the chain is
    never held for the rest of the transaction, and unrelated transactions do not queue behind
    each other's work. An entry
    appended inside a savepoint that rolls back is dropped with it; reads of the trail in the
    same transaction (``search``) see the pending entries, chained first.
    """
    if not kind or len(kind) > MAX_KIND:
        raise ValueError(f"audit kind must be 1-{MAX_KIND} characters: {kind!r}")
    if not subject or len(subject) > MAX_SUBJECT:
        raise ValueError(f"audit subject must be 1-{MAX_SUBJECT} characters")
    actor = (actor or "")[:MAX_ACTOR]
    body = canonical_json(payload)
    _pending(session.sync_session).append(_Pending(now_ms(), actor, kind, subject, body))


def _pending(session: Session) -> list[_Pending]:
    """The session's pending entries (the hooks below act only on a session that has them)."""
    found = session.info.get(_PENDING)
    if found is None:
        found = session.info[_PENDING] = []
        session.info[_SAVEPOINTS] = {}
    return cast(list[_Pending], found)


# The commit hooks are the Session class's, installed once: listening on each session that
# appends cost more CPU than the rest of a stage move's Python (SQLAlchemy builds a per-instance
# dispatcher). A session that never appended has no pending list, and the hooks return at once.
def _on_transaction_create(session: Session, transaction: SessionTransaction) -> None:
    if transaction.nested and _PENDING in session.info:
        session.info[_SAVEPOINTS][id(transaction)] = len(session.info[_PENDING])


def _on_rollback(session: Session, previous: SessionTransaction) -> None:
    pending: list[_Pending] | None = session.info.get(_PENDING)
    if pending is None:
        return
    savepoints: dict[int, int] = session.info[_SAVEPOINTS]
    if previous.nested:
        # Entries appended after the savepoint began are undone with it. A savepoint opened
        # before the first append (no pending list yet) began with nothing pending.
        del pending[savepoints.pop(id(previous), 0) :]
    elif previous.parent is None:
        pending.clear()
        savepoints.clear()


def _on_commit(session: Session) -> None:
    if session.info.get(_PENDING) and not session.in_nested_transaction():
        write_pending(session)  # (a savepoint's release chains nothing yet)


event.listen(Session, "after_transaction_create", _on_transaction_create)
event.listen(Session, "after_soft_rollback", _on_rollback)
event.listen(Session, "before_commit", _on_commit)


def record_around_seq(p: _Pending) -> tuple[str, str]:
    """An entry's canonical record (see :func:`entry_hash`) split where its seq goes: the
    record is ``prefix + str(seq) + suffix`` (keys sorted: ..., payload, seq, subject)."""
    head = canonical_json(
        {"actor": p.actor, "at": p.at, "kind": p.kind, "payload": json.loads(p.body)}
    )
    return head[:-1] + ',"seq":', ',"subject":' + canonical_json(p.subject) + "}"


def write_pending(session: Session) -> None:
    """Chain and insert the session's pending entries (synchronous, see ``append``).

    On PostgreSQL one call (``mlgate_audit_append``, migration 0020) takes the lock, reads the
    head and inserts the entries hashed in the database, so the lock is held for that call and
    the COMMIT only, with no round trip back to this event loop in between."""
    pending: list[_Pending] | None = session.info.get(_PENDING)
    if not pending:
        return
    if store.can_append_in_one_call(session):
        _append_in_database(session, pending)
    else:
        _append_here(session, pending)
    pending.clear()
    session.info[_SAVEPOINTS].clear()


def _append_in_database(session: Session, pending: list[_Pending]) -> None:
    split = [record_around_seq(p) for p in pending]
    store.append_in_one_call(
        session,
        {
            "at": [p.at for p in pending],
            "actor": [p.actor for p in pending],
            "kind": [p.kind for p in pending],
            "subject": [p.subject for p in pending],
            "payload": [p.body for p in pending],
            "prefix": [prefix for prefix, _ in split],
            "suffix": [suffix for _, suffix in split],
        },
    )


def _append_here(session: Session, pending: list[_Pending]) -> None:
    """Lock, read the head, hash here and insert: three statements (SQLite, or PostgreSQL
    before migration 0020)."""
    head = store.lock_chain_and_read_head(session)
    seq, prev_hash = head if head else (0, GENESIS_HASH)
    rows = []
    for p in pending:
        seq += 1
        digest = entry_hash(
            prev_hash,
            seq=seq,
            at=p.at,
            actor=p.actor,
            kind=p.kind,
            subject=p.subject,
            payload=json.loads(p.body),
        )
        rows.append(
            {
                "seq": seq,
                "at": p.at,
                "actor": p.actor,
                "kind": p.kind,
                "subject": p.subject,
                "payload": p.body,
                "prev_hash": prev_hash,
                "hash": digest,
            }
        )
        prev_hash = digest
    store.insert_entries(session, rows)


async def _chain_pending(s: AsyncSession) -> None:
    """Before reading the trail in a transaction that appended to it: chain its entries."""
    if s.sync_session.info.get(_PENDING):
        await s.run_sync(write_pending)


# --- reading -------------------------------------------------------------------------------------


def _page_limit(max_results: int | None) -> int:
    limit = DEFAULT_PAGE if max_results is None else max_results
    if limit < 1 or limit > MAX_PAGE:
        raise InvalidParameter(f"max_results must be between 1 and {MAX_PAGE}.")
    return limit


async def search(
    s: AsyncSession,
    *,
    kind: str | None,
    subject: str | None,
    max_results: int | None,
    page_token: str | None,
) -> tuple[list[AuditEntryOut], str | None]:
    """Entries newest first, by kind and/or subject, in pages of at most 1000."""
    limit = _page_limit(max_results)
    fingerprint = f"audit:{kind}:{subject}"
    before = decode_page_token(page_token, fingerprint) if page_token else None
    await _chain_pending(s)
    rows = await store.search(
        s, kind=kind or None, subject=subject or None, before_seq=before, limit=limit + 1
    )
    token = encode_page_token(int(rows[limit - 1].seq), fingerprint) if len(rows) > limit else None
    return [entry_out(r) for r in rows[:limit]], token


async def iterate(db: Database) -> AsyncIterator[Any]:
    """Every row in chain order, read in batches inside one snapshot."""
    async with db.read() as s:
        after = 0
        while True:
            rows = await store.entries_after(s, after, BATCH)
            for row in rows:
                yield row
            if len(rows) < BATCH:
                return
            after = int(rows[-1].seq)


@dataclass(frozen=True)
class Verification:
    ok: bool
    checked: int
    head_seq: int
    head_hash: str
    bad_seq: int | None = None
    reason: str | None = None


def check_entry(row: Any, expected_seq: int, prev_hash: str) -> str | None:
    """Why ``row`` does not continue the chain at ``expected_seq`` after ``prev_hash``."""
    if int(row.seq) != expected_seq:
        return f"expected seq {expected_seq} (rows are missing)"
    if row.prev_hash != prev_hash:
        return "prev_hash does not match the previous entry's hash"
    try:
        parsed = json.loads(row.payload)
    except ValueError:
        return "payload is not valid JSON"
    if canonical_json(parsed) != row.payload:
        return "payload is not in canonical form"
    expected = entry_hash(
        prev_hash,
        seq=int(row.seq),
        at=int(row.at),
        actor=row.actor,
        kind=row.kind,
        subject=row.subject,
        payload=parsed,
    )
    if expected != row.hash:
        return "hash does not match the entry's contents"
    return None


async def verify(db: Database) -> Verification:
    """Walk the whole chain; the first entry that does not hash or link correctly fails it."""
    prev_hash, seq, checked = GENESIS_HASH, 0, 0
    async for row in iterate(db):
        reason = check_entry(row, seq + 1, prev_hash)
        if reason is not None:
            # The row that should have come next: the altered one, or the first missing one.
            return Verification(False, checked, seq, prev_hash, bad_seq=seq + 1, reason=reason)
        prev_hash, seq, checked = row.hash, int(row.seq), checked + 1
    return Verification(True, checked, seq, prev_hash)


# Entries one API call checks at most: bounded work per request (about a second on PostgreSQL);
# a longer chain is walked in windows with ``after_seq``.
MAX_VERIFY_WINDOW = 50_000


@dataclass(frozen=True)
class WindowVerification:
    ok: bool
    after_seq: int
    checked: int
    last_seq: int
    last_hash: str
    bad_seq: int | None = None
    reason: str | None = None
    # Where the next window starts, when entries remain after this one.
    next_after_seq: int | None = None


async def verify_window(db: Database, after_seq: int, limit: int) -> WindowVerification:
    """Check up to ``limit`` entries after ``after_seq``, linking the first to entry
    ``after_seq``'s stored hash (0: the genesis). Walking windows from 0 checks the whole chain."""
    async with db.read() as s:
        if after_seq == 0:
            prev_hash: str | None = GENESIS_HASH
        else:
            prev_hash = await store.hash_at(s, after_seq)
        if prev_hash is None:
            return WindowVerification(
                False, after_seq, 0, after_seq, "", bad_seq=after_seq, reason="entry is missing"
            )
        seq, checked = after_seq, 0
        while checked < limit:
            want = min(BATCH, limit - checked)
            rows = await store.entries_after(s, seq, want)
            for row in rows:
                reason = check_entry(row, seq + 1, prev_hash)
                if reason is not None:
                    return WindowVerification(
                        False, after_seq, checked, seq, prev_hash, bad_seq=seq + 1, reason=reason
                    )
                prev_hash, seq, checked = row.hash, int(row.seq), checked + 1
            if len(rows) < want:
                return WindowVerification(True, after_seq, checked, seq, prev_hash)
        more = bool(await store.entries_after(s, seq, 1))
        return WindowVerification(
            True, after_seq, checked, seq, prev_hash, next_after_seq=seq if more else None
        )


def export_line(row: Any) -> str:
    return msgspec.json.encode(entry_out(row)).decode()


# --- the registry listener -----------------------------------------------------------------------


def _v(version: int | None) -> str | None:
    return None if version is None else str(version)


def registry_audit_entry(event: RegistryEvent) -> tuple[str, dict[str, Any], str] | None:
    """The audit kind, payload and actor of a registry change (moves and version lifecycle)."""
    e = event
    if isinstance(e, registry_events.StageTransitioned):
        return (
            e.kind,
            {
                "version": str(e.version),
                "from_stage": e.from_stage,
                "to_stage": e.to_stage,
                "archived_versions": [str(v) for v in e.archived_versions],
                "comment": e.comment,
            },
            e.actor,
        )
    if isinstance(e, registry_events.AliasMoved):
        return (
            e.kind,
            {
                "alias": e.alias,
                "from_version": _v(e.from_version),
                "to_version": _v(e.to_version),
                "comment": e.comment,
            },
            e.actor,
        )
    if isinstance(e, registry_events.ModelVersionCreated):
        return (
            e.kind,
            {
                "version": str(e.version),
                "source": e.source,
                "storage_location": e.storage_location,
                "run_id": e.run_id,
                "model_id": e.model_id,
                "manifest_digest": e.manifest_digest,
            },
            e.actor,
        )
    if isinstance(e, registry_events.ModelVersionDeleted):
        payload = {"version": str(e.version), "stage": e.stage, "aliases": list(e.aliases)}
        return e.kind, payload, e.actor
    if isinstance(e, registry_events.RegisteredModelDeleted):
        pointers = [{"kind": k, "pointer": p, "version": str(v)} for k, p, v in e.pointers]
        return e.kind, {"pointers": pointers}, e.actor
    return None


async def record_registry_event(session: AsyncSession, event: RegistryEvent) -> None:
    """A registry listener (the app's second, gates.server.hooks): pointer moves into the trail."""
    found = registry_audit_entry(event)
    if found is not None:
        kind, payload, actor = found
        await append(session, kind, f"model:{event.name}", payload, actor)


# --- filtered reading (the web UI's audit page) -------------------------------------------------


@dataclass(frozen=True)
class AuditFilter:
    """What the audit page filters by; empty fields do not filter.

    ``kind`` is exact, or a prefix when it ends with ``*`` (``approval.*``). ``model`` finds
    entries about that registered model: its pointer moves and gate decisions (subject
    ``model:<name>``) and the approvals and policies whose payload names it. ``since_ms`` is
    inclusive and ``until_ms`` exclusive (epoch milliseconds).
    """

    kind: str | None = None
    model: str | None = None
    actor: str | None = None
    since_ms: int | None = None
    until_ms: int | None = None

    def fingerprint(self) -> str:
        return "audit-filter:" + canonical_json(
            [self.kind, self.model, self.actor, self.since_ms, self.until_ms]
        )


async def search_filtered(
    s: AsyncSession,
    where: AuditFilter,
    *,
    max_results: int | None,
    page_token: str | None,
) -> tuple[list[AuditEntryOut], str | None]:
    """Entries newest first matching ``where``, in pages of at most 1000 (keyset on seq)."""
    limit = _page_limit(max_results)
    if where.kind is not None and len(where.kind) > MAX_KIND + 1:
        raise InvalidParameter(f"An audit kind is at most {MAX_KIND} characters.")
    if where.model is not None and len(where.model) > MAX_SUBJECT:
        raise InvalidParameter(f"A model name is at most {MAX_SUBJECT} characters.")
    if where.actor is not None and len(where.actor) > MAX_ACTOR:
        raise InvalidParameter(f"An actor is at most {MAX_ACTOR} characters.")
    fingerprint = where.fingerprint()
    before = decode_page_token(page_token, fingerprint) if page_token else None
    kind: str | None = where.kind or None
    kind_prefix: str | None = None
    if kind is not None and kind.endswith("*"):
        kind_prefix = kind[:-1] or None
        kind = None
    model = where.model or None
    await _chain_pending(s)
    rows = await store.search_filtered(
        s,
        kind=kind,
        kind_prefix=kind_prefix,
        model=model,
        # Payloads are canonical JSON, so a model is always spelled exactly this way in them.
        model_payload=None if model is None else canonical_json({"model": model})[1:-1],
        actor=where.actor or None,
        since_ms=where.since_ms,
        until_ms=where.until_ms,
        before_seq=before,
        limit=limit + 1,
    )
    token = encode_page_token(int(rows[limit - 1].seq), fingerprint) if len(rows) > limit else None
    return [entry_out(r) for r in rows[:limit]], token
