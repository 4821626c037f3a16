"""Pointer history: rows written with each stage or alias move, and the queries over them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from registry import store
from registry.schemas import PointerAtOut, PointerEventOut
from registry.service.lookups import POINTER_STAGES, find_model, page_fingerprint
from registry.validation import (
    DEFAULT_HISTORY_PAGE,
    MAX_HISTORY_PAGE,
    canonical_stage,
    validate_alias,
    validate_max_results,
)
from tracking.core.clock import now_ms
from tracking.core.errors import InvalidParameter
from tracking.core.wire import decode_page_token, encode_page_token

# --- pointer history -----------------------------------------------------------------------------


def history_row(
    model: Any,
    kind: str,
    pointer: str,
    from_version: int | None,
    to_version: int | None,
    version: int | None,
    action: str,
    actor: str,
    comment: str | None,
    now: int,
) -> dict[str, Any]:
    return {
        "model_id": model.id,
        "model_name": model.name,
        "pointer_kind": kind,
        "pointer": pointer,
        "from_version": from_version,
        "to_version": to_version,
        "version": version,
        "action": action,
        "actor": actor,
        "comment": comment,
        "timestamp": now,
    }


def stage_changes(
    model: Any,
    before: dict[str, int],
    after: dict[str, int],
    version: int,
    action: str,
    actor: str,
    comment: str | None,
    now: int,
    *,
    explicit: str | None = None,
) -> list[dict[str, Any]]:
    """A row for every stage pointer whose holder changed, plus the stage explicitly targeted."""
    rows = []
    for st in POINTER_STAGES:
        if before.get(st) == after.get(st) and st != explicit:
            continue
        # Archived versions that moved because of archive_existing_versions, not the target.
        how = "archive" if st == "Archived" and explicit not in (None, "Archived") else action
        rows.append(
            history_row(
                model, "stage", st, before.get(st), after.get(st), version, how, actor, comment, now
            )
        )
    return rows


def parse_pointer(pointer: str | None) -> tuple[str, str]:
    """``Production`` (any case) is a stage, ``@champion`` an alias: (kind, canonical name)."""
    if not pointer:
        raise InvalidParameter("Missing value for required parameter 'pointer'.")
    if pointer.startswith("@"):
        return "alias", validate_alias(pointer[1:])
    stage = canonical_stage(pointer)
    if stage not in POINTER_STAGES:
        raise InvalidParameter(
            "The stage 'None' is not a pointer; use Staging, Production, Archived."
        )
    return "stage", stage


def _event_out(r: Any) -> PointerEventOut:
    def text(v: int | None) -> str | None:
        return None if v is None else str(v)

    return PointerEventOut(
        id=str(r.id),
        name=r.model_name,
        pointer_kind=r.pointer_kind,
        pointer=r.pointer if r.pointer_kind == "stage" else f"@{r.pointer}",
        action=r.action,
        actor=r.actor,
        timestamp=r.timestamp,
        from_version=text(r.from_version),
        to_version=text(r.to_version),
        version=text(r.version),
        comment=r.comment,
    )


async def pointer_history(
    s: AsyncSession,
    name: str | None,
    pointer: str | None = None,
    max_results: int | None = None,
    page_token: str | None = None,
) -> tuple[list[PointerEventOut], str | None]:
    """A model's stage and alias moves, newest first, optionally for one pointer."""
    model = await find_model(s, name)
    which = parse_pointer(pointer) if pointer else None
    limit = validate_max_results(max_results, DEFAULT_HISTORY_PAGE, MAX_HISTORY_PAGE)
    fingerprint = page_fingerprint("history", model.id, which)
    offset = decode_page_token(page_token, fingerprint)
    rows = await store.pointer_history(s, model.id, pointer=which, offset=offset, limit=limit + 1)
    token = encode_page_token(offset + limit, fingerprint) if len(rows) > limit else None
    return [_event_out(r) for r in rows[:limit]], token


async def pointer_at(
    s: AsyncSession, name: str | None, pointer: str | None, timestamp: int | None = None
) -> PointerAtOut:
    """Which version ``pointer`` resolved to at ``timestamp`` (ms; default now)."""
    model = await find_model(s, name)
    kind, canonical = parse_pointer(pointer)
    at = now_ms() if timestamp is None else timestamp
    if at < 0:
        raise InvalidParameter(f"Invalid timestamp {timestamp}: it must be non-negative.")
    row = await store.pointer_event_at(s, model.id, kind, canonical, at)
    shown = canonical if kind == "stage" else f"@{canonical}"
    if row is None or row.to_version is None:
        return PointerAtOut(model.name, kind, shown, at, event=_event_out(row) if row else None)
    return PointerAtOut(model.name, kind, shown, at, str(row.to_version), _event_out(row))


async def versions_that_held(
    s: AsyncSession, name: str | None, pointer: str | None, versions: list[int]
) -> set[int]:
    """Which of ``versions`` were ever moved onto ``pointer`` (a stage, or ``@alias``)."""
    model = await find_model(s, name)
    kind, canonical = parse_pointer(pointer)
    return await store.versions_moved_onto(s, model.id, kind, canonical, versions)


MAX_POINTER_NAMES = 100


async def pointer_names(s: AsyncSession, name: str | None) -> list[str]:
    """Every stage and ``@alias`` a model's history mentions (at most 100), stages first."""
    model = await find_model(s, name)
    found = await store.pointer_names(s, model.id, MAX_POINTER_NAMES)
    return [pointer if kind == "stage" else f"@{pointer}" for kind, pointer in found]


@dataclass(frozen=True, slots=True)
class LivePointer:
    """Where a pointer is now: the version ``models:/name/<stage>`` or ``@alias`` loads (None:
    nothing), its manifest digest, and the id of the pointer's newest history row."""

    name: str
    version: int | None
    digest: str | None
    event_id: int | None


async def live_pointer(s: AsyncSession, name: str | None, pointer: str | None) -> LivePointer:
    """Read a pointer from the live tables (never a cache): who holds it, and its last move."""
    model = await find_model(s, name)
    kind, canonical = parse_pointer(pointer)
    if kind == "stage":
        found = await store.load_versions(s, store.latest_versions_select([model.id], [canonical]))
    else:
        found = await store.load_versions(s, store.alias_target_select(model.id, canonical))
    event_id = await store.newest_pointer_event_id(s, model.id, kind, canonical)
    if not found:
        return LivePointer(model.name, None, None, event_id)
    row = found[0].row
    return LivePointer(model.name, int(row.version), row.manifest_digest, event_id)


MAX_DIGEST_MATCHES = 100


async def versions_with_digest(
    s: AsyncSession, digest: str, name: str | None = None
) -> list[tuple[str, int]]:
    """(model, version) of the registered versions whose manifest digest is ``digest``."""
    return await store.versions_with_digest(s, digest, name, MAX_DIGEST_MATCHES)
