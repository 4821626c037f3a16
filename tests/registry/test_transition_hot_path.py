"""A stage move runs prebuilt statements on the transaction's own connection (no statement
through SQLAlchemy's execution), and answers and records exactly what the session path does."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from sqlalchemy import event, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from gates.audit import service as audit
from gates.audit import store as audit_store
from gates.events.models import OutboxEvent
from registry import service
from registry.models import ModelVersion, PointerEvent, RegisteredModel
from registry.service import moves
from registry.service.lookups import render_version
from tests.registry.factories import ACTOR, make_model, make_run, make_version

pytestmark = pytest.mark.usefixtures("app_hooks")

# What a transaction's own control sends through SQLAlchemy (the test session's savepoint).
_CONTROL = ("BEGIN", "SAVEPOINT", "RELEASE", "ROLLBACK")


async def test_an_archiving_transition_sends_no_statement_through_sqlalchemy(
    session: AsyncSession,
) -> None:
    name = await make_model(session)
    run_id = await make_run(session)
    for _ in range(3):
        await make_version(session, name, run_id=run_id, stage="Production")
    await session.run_sync(audit_store.can_append_in_one_call)  # probed once per connection
    engine = session.bind.sync_engine  # type: ignore[union-attr]
    through_sqlalchemy: list[str] = []
    prebuilt: list[str] = []

    def before(conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        # The driver path hands counters no Connection (tracking.core.driver).
        (prebuilt if conn is None else through_sqlalchemy).append(statement)

    event.listen(engine, "before_cursor_execute", before)
    try:
        moved = await service.transition_stage(session, name, "1", "Production", True, actor=ACTOR)
        await session.run_sync(audit.write_pending)  # what COMMIT adds
    finally:
        event.remove(engine, "before_cursor_execute", before)
    assert moved.current_stage == "Production"
    assert [s for s in through_sqlalchemy if not s.upper().startswith(_CONTROL)] == []
    # (7 on PostgreSQL, where the move also sets the model's timestamp; 8 on SQLite)
    assert len(prebuilt) >= 7, prebuilt
    # The moved version is read once, after the model's lock, with the other versions' stage
    # holders and its own tags and aliases (the answer's): no statement reads them again.
    version_reads = [s for s in prebuilt if "model_version_tags" in s or "max(" in s.lower()]
    assert len(version_reads) == 1, version_reads


# (stages of versions 1..4, version moved, target, archive_existing_versions)
CASES = [
    (["Production", "Production", "Staging", None], "1", "Production", True),
    (["Production", "Production", "Staging", None], "1", "Production", False),
    (["Production", "Staging", "Staging", "Production"], "4", "Staging", True),
    (["Archived", "Staging", "Staging", "Archived"], "3", "Archived", False),
    (["Archived", "Production", "Production", "Archived"], "1", "Production", True),
    (["Production", "Production", "Staging", "Archived"], "2", "Production", True),
    (["Production", None, "Staging", "Production"], "4", "None", False),
    (["Staging", None, "Staging", "Production"], "3", "staging", True),
]


async def _model_with(session: AsyncSession, run_id: str, stages: list[str | None]) -> str:
    name = await make_model(session)
    for stage in stages:
        await make_version(session, name, run_id=run_id, tags={"k": "v"}, stage=stage)
    await service.set_alias(session, name, "champion", "1", actor=ACTOR)
    await service.set_alias(session, name, "alt", "1", actor=ACTOR)
    return name


async def _recorded(session: AsyncSession, name: str, since: int) -> Any:
    model_id = await session.scalar(select(RegisteredModel.id).where(RegisteredModel.name == name))
    history = (
        await session.execute(
            select(
                PointerEvent.pointer_kind,
                PointerEvent.pointer,
                PointerEvent.from_version,
                PointerEvent.to_version,
                PointerEvent.version,
                PointerEvent.action,
                PointerEvent.actor,
                PointerEvent.comment,
            )
            .where(PointerEvent.model_id == model_id, PointerEvent.id > since)
            .order_by(PointerEvent.id)
        )
    ).all()
    payloads = (
        await session.scalars(
            select(OutboxEvent.payload)
            .where(OutboxEvent.model_name == name, OutboxEvent.type == "stage.transitioned")
            .order_by(OutboxEvent.id)
        )
    ).all()
    events = []
    for payload in payloads:
        body = msgspec.json.decode(payload)
        events.append({k: v for k, v in body.items() if k not in ("name", "timestamp")})
    stages = (
        await session.execute(
            select(ModelVersion.version, ModelVersion.current_stage)
            .where(ModelVersion.model_id == model_id)
            .order_by(ModelVersion.version)
        )
    ).all()
    return [tuple(h) for h in history], events, [tuple(v) for v in stages]


def _answer(version: Any) -> Any:
    out = msgspec.to_builtins(version)
    return {
        k: v
        for k, v in out.items()
        if k not in ("name", "creation_timestamp", "last_updated_timestamp")
    }


@pytest.mark.parametrize(("stages", "version", "target", "archive"), CASES)
async def test_the_prebuilt_move_answers_and_records_what_the_session_path_does(
    session: AsyncSession, stages: list[str | None], version: str, target: str, archive: bool
) -> None:
    run_id = await make_run(session)
    fast, slow = (
        await _model_with(session, run_id, stages),
        await _model_with(session, run_id, stages),
    )
    since = int(
        await session.scalar(select(PointerEvent.id).order_by(PointerEvent.id.desc()).limit(1)) or 0
    )
    answer = await service.transition_stage(
        session, fast, version, target, archive, actor=ACTOR, comment="why"
    )
    done = await moves._move_on_session(
        session, slow, version, moves._target_stage(target, archive), archive, ACTOR, "why", None
    )
    expected = await render_version(session, done.pk)
    assert _answer(answer) == _answer(expected)
    assert answer.name == fast
    assert await _recorded(session, fast, since) == await _recorded(session, slow, since)


async def test_errors_of_a_move_are_the_session_paths(session: AsyncSession) -> None:
    name = await make_model(session)
    await make_version(session, name)
    cases = [
        (name, "7", "Production", True),
        (f"{name}-missing", "1", "Production", False),
        (f"{name}-missing", "x", "Production", False),
        (name, "x", "Production", False),
        (name, "1", "Bogus", False),
        (name, "1", "Archived", True),
        ("", "1", "Staging", False),
    ]
    for model, number, stage, archive in cases:
        with pytest.raises(Exception) as fast:
            async with session.begin_nested():
                await service.transition_stage(session, model, number, stage, archive, actor=ACTOR)
        with pytest.raises(Exception) as slow:
            async with session.begin_nested():
                await moves._move_on_session(
                    session,
                    model,
                    number,
                    moves._target_stage(stage, archive),
                    archive,
                    ACTOR,
                    None,
                    None,
                )
        assert type(fast.value) is type(slow.value)
        assert str(fast.value) == str(slow.value)


@pytest.mark.parametrize("archive", [True, False])
async def test_a_move_stamps_the_model_with_the_moved_versions_time(
    session: AsyncSession, archive: bool
) -> None:
    """The model's ``last_updated_timestamp`` is the move's (on PostgreSQL it is set in the
    move's own statement)."""
    name = await make_model(session)
    run_id = await make_run(session)
    for _ in range(2):
        await make_version(session, name, run_id=run_id, stage="Staging")
    stale = 1  # long before the move
    await session.execute(
        update(RegisteredModel)
        .where(RegisteredModel.name == name)
        .values(last_updated_timestamp=stale)
    )
    moved = await service.transition_stage(session, name, "1", "Staging", archive, actor=ACTOR)
    stamped = await session.scalar(
        select(RegisteredModel.last_updated_timestamp).where(RegisteredModel.name == name)
    )
    assert stamped == moved.last_updated_timestamp != stale
