"""Hooks for upper layers: events arrive inside the transaction, and guards can veto moves."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from registry import events, service
from registry.events import PointerMove, RegistryEvent, RegistryHooks
from tests.registry.factories import ACTOR, make_model, make_version
from tracking.core.errors import PermissionDenied


async def test_listeners_get_each_event_with_the_changes_own_session(
    session: AsyncSession,
) -> None:
    seen: list[RegistryEvent] = []

    async def listener(s: AsyncSession, event: RegistryEvent) -> None:
        assert s is session  # an outbox row written here commits with the change
        seen.append(event)

    name = await make_model(session)
    events.attach_hooks(session, RegistryHooks(listeners=(listener,)))
    await make_version(session, name)
    await make_version(session, name, stage="Production")
    await service.transition_stage(session, name, "1", "Production", True, actor=ACTOR)
    await service.set_alias(session, name, "champion", "1", actor=ACTOR, comment="c")
    await service.delete_model_version(session, name, "1", actor=ACTOR)
    assert [e.kind for e in seen] == [
        "model_version.created",
        "model_version.created",
        "stage.transitioned",
        "stage.transitioned",
        "alias.moved",
        "model_version.deleted",
        "alias.moved",
    ]
    archive = seen[3]
    assert isinstance(archive, events.StageTransitioned)
    assert (archive.version, archive.from_stage, archive.to_stage) == (1, "None", "Production")
    assert archive.archived_versions == (2,)
    assert seen[-1] == events.AliasMoved(name, "champion", 1, None, ACTOR, None, seen[-1].timestamp)


async def test_a_listener_error_rolls_the_change_back(session: AsyncSession) -> None:
    name = await make_model(session)
    await make_version(session, name)

    async def broken(s: AsyncSession, event: RegistryEvent) -> None:
        await s.execute(text("SELECT 1"))
        raise RuntimeError("outbox unavailable")

    events.attach_hooks(session, RegistryHooks(listeners=(broken,)))
    with pytest.raises(RuntimeError, match="outbox unavailable"):
        async with session.begin_nested():
            await service.transition_stage(session, name, "1", "Production", actor=ACTOR)
    assert (await service.get_model_version(session, name, "1")).current_stage == "None"


async def test_a_guard_can_veto_a_move_onto_a_gated_target(session: AsyncSession) -> None:
    name = await make_model(session)
    await make_version(session, name)
    moves: list[PointerMove] = []

    async def gate(s: AsyncSession, move: PointerMove) -> None:
        moves.append(move)
        if move.pointer == "Production":
            raise PermissionDenied(f"{move.name} v{move.version}: gate 'accuracy' has not passed")

    events.attach_hooks(session, RegistryHooks(guards=(gate,)))
    with pytest.raises(PermissionDenied):
        await service.transition_stage(session, name, "1", "Production", actor=ACTOR)
    await service.transition_stage(session, name, "1", "Staging", actor=ACTOR)
    await service.set_alias(session, name, "champion", "1", actor=ACTOR)
    assert [(m.action, m.pointer_kind, m.pointer, m.version) for m in moves] == [
        ("transition", "stage", "Production", 1),
        ("transition", "stage", "Staging", 1),
        ("set_alias", "alias", "champion", 1),
    ]
    assert (await service.get_model_version(session, name, "1")).current_stage == "Staging"
    history, _ = await service.pointer_history(session, name, "Production")
    assert history == []  # the vetoed move left no trace


async def test_hooks_run_in_their_stated_order_and_the_first_veto_stops_the_rest(
    session: AsyncSession,
) -> None:
    name = await make_model(session)
    await make_version(session, name)
    calls: list[str] = []

    def listener(label: str) -> events.EventListener:
        async def record(s: AsyncSession, event: RegistryEvent) -> None:
            calls.append(f"{label}:{event.kind}")

        return record

    def guard(label: str, *, veto: bool = False) -> events.PointerGuard:
        async def check(s: AsyncSession, move: PointerMove) -> str | None:
            calls.append(f"{label}:{move.pointer}")
            if veto and move.pointer == "Production":
                raise PermissionDenied(f"{label} says no")
            return f"{label} saw it"

        return check

    events.attach_hooks(
        session,
        RegistryHooks(
            listeners=(listener("second"), listener("first")),
            guards=(guard("b"), guard("a", veto=True), guard("c")),
        ),
    )
    await service.transition_stage(session, name, "1", "Staging", actor=ACTOR)
    assert calls == [
        "b:Staging",
        "a:Staging",
        "c:Staging",
        "second:stage.transitioned",
        "first:stage.transitioned",
    ]
    history, _ = await service.pointer_history(session, name, "Staging")
    assert history[0].comment == "[b saw it; a saw it; c saw it]"
    calls.clear()
    with pytest.raises(PermissionDenied, match="a says no"):
        await service.transition_stage(session, name, "1", "Production", actor=ACTOR)
    assert calls == ["b:Production", "a:Production"]
