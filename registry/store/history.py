"""Pointer history: every stage and alias move, and what a pointer held at a time."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from sqlalchemy import bindparam, func, insert, select
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.ext.asyncio import AsyncSession

from registry.models import (
    ModelVersion,
    ModelVersionFile,
    PointerEvent,
    RegisteredModel,
    RegisteredModelAlias,
)
from tracking.core.driver import DriverRows, Prebuilt


async def insert_pointer_events(s: AsyncSession, events: Sequence[dict[str, Any]]) -> None:
    if events:
        # The same keys in every row, so the rows go in one multi-row statement.
        keys = {k for e in events for k in e}
        table = PointerEvent.__table__  # Core: ORM bulk inserts split rows by NULL columns
        await s.execute(insert(table), [{k: e.get(k) for k in keys} for e in events])  # type: ignore[arg-type]


def _build_moved_version(stage: bool) -> Any:
    held = ModelVersion.__table__.alias("held")
    pointer: Any = bindparam("pointer")
    kind: Any = bindparam("kind")
    if stage:
        holder: Any = select(func.max(held.c.version)).where(
            held.c.model_id == RegisteredModel.id, held.c.current_stage == pointer
        )
    else:
        holder = select(RegisteredModelAlias.version).where(
            RegisteredModelAlias.model_id == RegisteredModel.id,
            RegisteredModelAlias.alias == pointer,
        )
    event = select(func.max(PointerEvent.id)).where(
        PointerEvent.model_id == RegisteredModel.id,
        PointerEvent.pointer_kind == kind,
        PointerEvent.pointer == pointer,
    )
    return (
        select(
            ModelVersion.id,
            RegisteredModel.name,
            ModelVersion.version,
            ModelVersion.storage_location,
            ModelVersion.manifest_digest,
            holder.scalar_subquery().label("holder"),
            event.scalar_subquery().label("event_id"),
        )
        .join(RegisteredModel, RegisteredModel.id == ModelVersion.model_id)
        .where(
            RegisteredModel.name == bindparam("name"), ModelVersion.version == bindparam("version")
        )
    )


# Built once (an attestation runs it on every gated move): stage pointers, then aliases.
_MOVED_VERSION = {True: _build_moved_version(True), False: _build_moved_version(False)}


def _build_moved_version_with_files(stage: bool) -> Any:
    """:func:`_build_moved_version` plus the version's files as three arrays in path order
    (PostgreSQL), so the attestation's version and manifest are one read."""
    base = _build_moved_version(stage)

    def files(column: Any) -> Any:
        ordered = aggregate_order_by(column, ModelVersionFile.path)
        return (
            select(func.array_agg(ordered))
            .where(ModelVersionFile.version_id == ModelVersion.id)
            .scalar_subquery()
        )

    return base.add_columns(
        files(ModelVersionFile.path).label("paths"),
        files(ModelVersionFile.size).label("sizes"),
        files(ModelVersionFile.sha256).label("sha256s"),
    )


_PG_MOVED_VERSION = {
    True: Prebuilt(lambda _dialect: _build_moved_version_with_files(True)),
    False: Prebuilt(lambda _dialect: _build_moved_version_with_files(False)),
}


async def moved_version(
    s: AsyncSession, name: str, version: int, kind: str, pointer: str
) -> Any | None:
    """One version just moved onto a pointer, in one read: its row id, model name, location and
    digest, the version holding the pointer now (``holder``) and the pointer's newest history
    row id (``event_id``). None when the model has no such version."""
    stmt = _MOVED_VERSION[kind == "stage"]
    params = {"name": name, "version": version, "kind": kind, "pointer": pointer}
    return (await s.execute(stmt, params)).first()


async def moved_version_with_files(
    r: DriverRows, name: str, version: int, kind: str, pointer: str
) -> MovedVersion | None:
    """:func:`moved_version` with the version's files in path order (``paths``, ``sizes``,
    ``sha256s``; None when it has none), one prebuilt read on the driver of the caller's
    transaction (PostgreSQL only)."""
    params = {"name": name, "version": version, "kind": kind, "pointer": pointer}
    row = await r.first(_PG_MOVED_VERSION[kind == "stage"], params)
    return None if row is None else MovedVersion(*row)


class MovedVersion(NamedTuple):
    """A row of :func:`moved_version_with_files` (the driver's rows are positional)."""

    id: int
    name: str
    version: int
    storage_location: str
    manifest_digest: str | None
    holder: int | None
    event_id: int | None
    paths: list[str] | None
    sizes: list[int] | None
    sha256s: list[str] | None


async def pointer_history(
    s: AsyncSession,
    model_id: int,
    *,
    pointer: tuple[str, str] | None,
    offset: int,
    limit: int,
) -> list[Any]:
    """A model's pointer events, newest first; ``pointer`` narrows to one (kind, name)."""
    stmt = select(PointerEvent.__table__).where(PointerEvent.model_id == model_id)
    if pointer is not None:
        stmt = stmt.where(
            PointerEvent.pointer_kind == pointer[0], PointerEvent.pointer == pointer[1]
        )
    stmt = stmt.order_by(PointerEvent.timestamp.desc(), PointerEvent.id.desc())
    return list((await s.execute(stmt.offset(offset).limit(limit))).all())


async def pointer_event_at(
    s: AsyncSession, model_id: int, kind: str, pointer: str, timestamp: int
) -> Any:
    """The last event of one pointer at or before ``timestamp`` (ms), or None."""
    return (
        await s.execute(
            select(PointerEvent.__table__)
            .where(
                PointerEvent.model_id == model_id,
                PointerEvent.pointer_kind == kind,
                PointerEvent.pointer == pointer,
                PointerEvent.timestamp <= timestamp,
            )
            .order_by(PointerEvent.timestamp.desc(), PointerEvent.id.desc())
            .limit(1)
        )
    ).first()


async def versions_moved_onto(
    s: AsyncSession, model_id: int, kind: str, pointer: str, versions: Sequence[int]
) -> set[int]:
    """Which of ``versions`` the pointer history shows moved onto (kind, pointer) at some time."""
    if not versions:
        return set()
    moved = PointerEvent.to_version.in_(versions) | (
        PointerEvent.version.in_(versions) & PointerEvent.action.in_(("transition", "set_alias"))
    )
    stmt = select(PointerEvent.to_version, PointerEvent.version).where(
        PointerEvent.model_id == model_id,
        PointerEvent.pointer_kind == kind,
        PointerEvent.pointer == pointer,
        moved,
    )
    wanted = set(versions)
    found: set[int] = set()
    for to_version, version in await s.execute(stmt):
        found.update(v for v in (to_version, version) if v in wanted)
    return found


async def version_ids_of_run(s: AsyncSession, model_id: int, run_id: str, limit: int) -> list[int]:
    """Primary keys of the model's versions registered from ``run_id``, newest first."""
    stmt = (
        select(ModelVersion.id)
        .where(ModelVersion.model_id == model_id, ModelVersion.run_id == run_id)
        .order_by(ModelVersion.version.desc())
        .limit(limit)
    )
    return [int(v) for v in (await s.execute(stmt)).scalars()]


async def model_and_version_ids_of_run(
    s: AsyncSession, name: str, run_id: str, limit: int
) -> tuple[Any | None, list[int]]:
    """The model's row (as ``get_model_row`` reads it) and the primary keys of its versions
    registered from ``run_id``, newest first, in one read; (None, []) without such a model."""
    rm, mv = RegisteredModel.__table__, ModelVersion.__table__
    stmt = (
        select(rm, mv.c.id.label("run_version_pk"))
        .select_from(rm.outerjoin(mv, (mv.c.model_id == rm.c.id) & (mv.c.run_id == run_id)))
        .where(rm.c.name == name)
        .order_by(mv.c.version.desc())
        .limit(limit)
    )
    rows = (await s.execute(stmt)).all()
    if not rows:
        return None, []
    return rows[0], [int(r.run_version_pk) for r in rows if r.run_version_pk is not None]


async def newest_pointer_event_id(
    s: AsyncSession, model_id: int, kind: str, pointer: str
) -> int | None:
    """The id of the last history row written for one pointer (rows of a model are written
    under its row lock, so a higher id is a later move)."""
    return (
        await s.execute(
            select(func.max(PointerEvent.id)).where(
                PointerEvent.model_id == model_id,
                PointerEvent.pointer_kind == kind,
                PointerEvent.pointer == pointer,
            )
        )
    ).scalar_one_or_none()


async def versions_with_digest(
    s: AsyncSession, digest: str, model_name: str | None, limit: int
) -> list[tuple[str, int]]:
    """(model name, version) of versions whose manifest digest is ``digest``."""
    query = (
        select(RegisteredModel.name, ModelVersion.version)
        .join(RegisteredModel, RegisteredModel.id == ModelVersion.model_id)
        .where(ModelVersion.manifest_digest == digest)
    )
    if model_name is not None:
        query = query.where(RegisteredModel.name == model_name)
    query = query.order_by(RegisteredModel.name, ModelVersion.version).limit(limit)
    return [(name, int(version)) for name, version in (await s.execute(query)).all()]
