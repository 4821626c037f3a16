"""Stage moves: ``transition-stage`` and a gate's own move, inside the request's transaction.

The statements run prebuilt on the session's own connection (``tracking.core.driver
.session_rows``), one transaction with the model's row locked as before; a request that names
something missing or malformed takes the session path (:func:`_move_on_session`), which names
the error exactly as it always has. The stage holders before and after the move come from one
read of the holders among the *other* versions (under the model's lock nothing else moves), and
the answer is rendered from the row the move's UPDATE returned.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from registry import events, store
from registry.events import MovePermit, PointerMove
from registry.schemas import ModelVersionOut, Version
from registry.service.history import stage_changes
from registry.service.lookups import find_model, find_version, render_version, version_out
from registry.store import moves, prebuilt
from registry.validation import (
    ARCHIVING_STAGES,
    canonical_stage,
    parse_version,
    validate_model_name,
)
from tracking.core.clock import now_ms
from tracking.core.driver import session_rows
from tracking.core.errors import InvalidParameter, MlflowError


@dataclass(frozen=True, slots=True)
class _Moved:
    pk: int
    # The moved version after the move, with its tags and aliases (None: the move took the
    # session path, whose caller renders by re-reading).
    answer: store.VersionBundle | None = None


async def transition_stage(
    s: AsyncSession,
    name: str | None,
    version: Version | None,
    stage: str | None,
    archive_existing_versions: bool = False,
    *,
    actor: str,
    comment: str | None = None,
    permit: MovePermit | None = None,
) -> ModelVersionOut:
    """Move a version to ``stage`` (see :func:`move_stage`) and render it."""
    done = await _move(s, name, version, stage, archive_existing_versions, actor, comment, permit)
    if done.answer is None:
        return await render_version(s, done.pk)
    return version_out(done.answer)


async def move_stage(
    s: AsyncSession,
    name: str | None,
    version: Version | None,
    stage: str | None,
    archive_existing_versions: bool = False,
    *,
    actor: str,
    comment: str | None = None,
    permit: MovePermit | None = None,
) -> int:
    """Move a version to ``stage``, optionally archiving the stage's other versions; returns
    the version's row id (a gate's own move needs no rendered version).

    One transaction with the model's row locked: concurrent transitions queue, and readers see
    the state before or after the whole move (never zero or two versions in the stage).
    ``permit`` is what an upper layer making this move itself was allowed (the guards read it).
    """
    done = await _move(s, name, version, stage, archive_existing_versions, actor, comment, permit)
    return done.pk


def _target_stage(stage: str | None, archive_existing_versions: bool) -> str:
    target = canonical_stage(stage)
    if archive_existing_versions and target not in ARCHIVING_STAGES:
        raise InvalidParameter(
            f"Model version transition cannot archive existing model versions because '{target}' "
            "is not an Active stage. Valid stages are Staging and Production."
        )
    return target


async def _move(
    s: AsyncSession,
    name: str | None,
    version: Version | None,
    stage: str | None,
    archive: bool,
    actor: str,
    comment: str | None,
    permit: MovePermit | None,
) -> _Moved:
    target = _target_stage(stage, archive)
    try:
        checked, number = validate_model_name(name), parse_version(version)
    except MlflowError:
        return await _move_on_session(s, name, version, target, archive, actor, comment, permit)
    r = await session_rows(s)
    model = await moves.model_for_move(r, checked)
    # Read after the lock: on PostgreSQL a statement that waited for the lock would still see
    # the versions as they were before the move that held it.
    found = None if model is None else await moves.version_for_move(r, model.id, number)
    if model is None or found is None:
        # The session path names what is missing (it locks the model again: a no-op).
        return await _move_on_session(s, name, version, target, archive, actor, comment, permit)
    row, others = found.row, found.holders
    before = dict(others)
    before[row.current_stage] = max(others.get(row.current_stage, number), number)
    comment = await _guarded_comment(
        s, model.name, row, target, before.get(target), actor, comment, archive, permit
    )
    now = now_ms()
    moved, archived = await moves.move(
        r, model.id, row.version, target, archive_others=archive, now=now
    )
    await moves.touch_model(r, model.id, now)
    after = dict(others)
    if archive:
        after.pop(target, None)  # every other version of the stage went to Archived
        if archived:
            after["Archived"] = max(after.get("Archived", archived[-1]), archived[-1])
    after[target] = max(after.get(target, row.version), row.version)
    history = stage_changes(
        model, before, after, row.version, "transition", actor, comment, now, explicit=target
    )
    await moves.insert_history(r, history)
    await _announce(s, model.name, row, target, archived, actor, comment, now)
    answer = prebuilt.bundle_of(
        prebuilt.VersionRow._make((*moved, model.name)), found.tags, found.aliases
    )
    return _Moved(int(row.id), answer)


async def _move_on_session(
    s: AsyncSession,
    name: str | None,
    version: Version | None,
    target: str,
    archive: bool,
    actor: str,
    comment: str | None,
    permit: MovePermit | None,
) -> _Moved:
    """The move through the session (a request naming something missing or malformed: the
    error it answers is named here)."""
    model = await find_model(s, name, lock=True)
    row = await find_version(s, model, version)
    before = await store.stage_holders(s, model.id)
    comment = await _guarded_comment(
        s, model.name, row, target, before.get(target), actor, comment, archive, permit
    )
    now = now_ms()
    archived = await store.move_to_stage(
        s, model.id, row.version, target, archive_others=archive, now=now
    )
    await store.update_registered_model(s, model.id, last_updated_timestamp=now)
    after = await store.stage_holders(s, model.id)
    history = stage_changes(
        model, before, after, row.version, "transition", actor, comment, now, explicit=target
    )
    await store.insert_pointer_events(s, history)
    await _announce(s, model.name, row, target, archived, actor, comment, now)
    return _Moved(int(row.id))


async def _guarded_comment(
    s: AsyncSession,
    model_name: str,
    row: Any,
    target: str,
    holder: int | None,
    actor: str,
    comment: str | None,
    archive: bool,
    permit: MovePermit | None,
) -> str | None:
    """Ask the gate guard about the move (a refusal raises); the comment, with its note."""
    note = await events.check_pointer_move(
        s,
        PointerMove(
            "transition",
            model_name,
            "stage",
            target,
            row.version,
            holder,
            actor,
            comment,
            from_stage=row.current_stage,
            archive_existing_versions=archive,
            permit=permit,
        ),
    )
    return events.with_note(comment, note)


async def _announce(
    s: AsyncSession,
    model_name: str,
    row: Any,
    target: str,
    archived: Any,
    actor: str,
    comment: str | None,
    now: int,
) -> None:
    """The move's outbox event (``row`` as it was before the move: its stage is the source)."""
    await events.emit(
        s,
        events.StageTransitioned(
            model_name, row.version, row.current_stage, target, tuple(archived), actor, comment, now
        ),
    )
