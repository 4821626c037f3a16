"""Pointer history: every stage and alias move is recorded and can be asked about at time T."""

from __future__ import annotations

import json

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from gates.server import cli
from registry import service
from tests.registry.factories import ACTOR, make_model, make_version
from tracking.core.errors import InvalidParameter


def _moves(events: list) -> list[tuple]:
    return [(e.pointer, e.from_version, e.to_version, e.action) for e in events]


async def test_transitions_record_who_when_from_to_and_why(session: AsyncSession) -> None:
    name = await make_model(session)
    await make_version(session, name)
    await make_version(session, name)
    await service.transition_stage(
        session, name, "1", "Production", actor="ana", comment="first release"
    )
    await service.transition_stage(
        session, name, "2", "Production", True, actor="bo", comment="better recall"
    )
    events, token = await service.pointer_history(session, name)
    assert token is None
    # Newest first. Archiving v1 also moved the Archived pointer.
    assert _moves(events) == [
        ("Archived", None, "1", "archive"),
        ("Production", "1", "2", "transition"),
        ("Production", None, "1", "transition"),
    ]
    assert [e.actor for e in events] == ["bo", "bo", "ana"]
    assert events[1].comment == "better recall" and events[1].version == "2"
    only, _ = await service.pointer_history(session, name, "production")
    assert [e.to_version for e in only] == ["2", "1"]


async def test_alias_moves_and_deletes_are_recorded(session: AsyncSession) -> None:
    name = await make_model(session)
    for _ in range(2):
        await make_version(session, name)
    await service.set_alias(session, name, "champion", "1", actor=ACTOR, comment="launch")
    await service.set_alias(session, name, "champion", "2", actor=ACTOR)
    await service.delete_alias(session, name, "champion", actor=ACTOR, comment="retire")
    events, _ = await service.pointer_history(session, name, "@champion")
    assert _moves(events) == [
        ("@champion", "2", None, "delete_alias"),
        ("@champion", "1", "2", "set_alias"),
        ("@champion", None, "1", "set_alias"),
    ]
    assert [e.comment for e in events] == ["retire", None, "launch"]


async def test_deleting_a_version_records_the_pointers_it_held(session: AsyncSession) -> None:
    name = await make_model(session)
    await make_version(session, name, stage="Production")
    await make_version(session, name, stage="Production")
    await service.set_alias(session, name, "champion", "2", actor=ACTOR)
    await service.delete_model_version(session, name, "2", actor=ACTOR)
    events, _ = await service.pointer_history(session, name)
    assert set(_moves(events)[:2]) == {
        ("Production", "2", "1", "version_deleted"),
        ("@champion", "2", None, "version_deleted"),
    }
    assert (await service.pointer_at(session, name, "@champion")).version is None
    assert (await service.pointer_at(session, name, "Production")).version == "1"


async def test_pointer_at_answers_which_version_held_it(session: AsyncSession) -> None:
    name = await make_model(session)
    for _ in range(3):
        await make_version(session, name)
    times = []
    for version in ("1", "2", "3"):
        out = await service.transition_stage(
            session, name, version, "Production", True, actor=ACTOR
        )
        times.append(out.last_updated_timestamp)
    events, _ = await service.pointer_history(session, name, "Production")
    # Event timestamps are what pointer-at compares with; ask just before and at each.
    stamps = sorted(e.timestamp for e in events)
    before = await service.pointer_at(session, name, "Production", stamps[0] - 1)
    assert before.version is None
    now = await service.pointer_at(session, name, "Production")
    assert now.version == "3"
    for stamp in stamps:
        at = await service.pointer_at(session, name, "Production", stamp)
        # Several moves can share a millisecond; the last one at that instant wins.
        expected = max(
            (e for e in events if e.timestamp <= stamp), key=lambda e: (e.timestamp, int(e.id))
        )
        assert at.version == expected.to_version


async def test_history_pages_with_tokens(session: AsyncSession) -> None:
    name = await make_model(session)
    await make_version(session, name)
    for i in range(5):
        await service.set_alias(session, name, f"a{i}", "1", actor=ACTOR)
    first, token = await service.pointer_history(session, name, max_results=3)
    assert len(first) == 3 and token
    rest, token2 = await service.pointer_history(session, name, max_results=3, page_token=token)
    assert len(rest) == 2 and token2 is None
    assert {e.pointer for e in first + rest} == {f"@a{i}" for i in range(5)}


@pytest.mark.parametrize("pointer", ["None", "Shipping", "@bad alias", ""])
async def test_bad_pointers_are_invalid_parameter(session: AsyncSession, pointer: str) -> None:
    name = await make_model(session)
    with pytest.raises(InvalidParameter):
        await service.pointer_at(session, name, pointer, 0)


def test_parse_instant_accepts_ms_and_iso8601() -> None:
    assert cli.parse_instant("1700000000000") == 1_700_000_000_000
    assert cli.parse_instant("2023-11-14T22:13:20Z") == 1_700_000_000_000
    assert cli.parse_instant("2023-11-14T22:13:20") == 1_700_000_000_000
    assert cli.parse_instant("2023-11-14T23:13:20+01:00") == 1_700_000_000_000


async def test_cli_history_and_pointer_at(
    database_url: str, unique: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from tracking.core.db import Database

    db = Database(database_url, pool_size=1)
    name = f"cli-{unique}"
    try:
        async with db.write() as s:
            await make_model(s, name)
            await make_version(s, name)
            await make_version(s, name)
            await service.transition_stage(s, name, "1", "Production", actor="ana", comment="go")
            await service.set_alias(s, name, "champion", "2", actor="bo")
    finally:
        await db.dispose()

    # The CLI runs its own event loop, as it does from a shell.
    import asyncio

    def run(*argv: str) -> str:
        code = cli.main([*argv, "--database-url", database_url])
        assert code == 0
        return capsys.readouterr().out

    out = await asyncio.to_thread(run, "history", name)
    assert "Production" in out and "@champion" in out and "(go)" in out
    out = await asyncio.to_thread(run, "history", name, "--pointer", "@champion", "--json")
    lines = [json.loads(line) for line in out.splitlines()]
    assert [(e["pointer"], e["to_version"]) for e in lines] == [("@champion", "2")]
    out = await asyncio.to_thread(run, "pointer-at", name, "Production", "--json")
    assert json.loads(out)["version"] == "1"
    out = await asyncio.to_thread(
        run, "pointer-at", name, "@champion", "--at", "1970-01-01T00:00:00"
    )
    assert "(none)" in out
    missing = ["pointer-at", f"{name}-missing", "Production", "--database-url", database_url]
    assert await asyncio.to_thread(cli.main, missing) == 1


async def test_history_outlives_a_deleted_model_without_leaking_into_a_new_one(
    session: AsyncSession,
) -> None:
    from sqlalchemy import select

    from registry.models import PointerEvent

    name = await make_model(session)
    await make_version(session, name, stage="Production")
    await service.set_alias(session, name, "champion", "1", actor=ACTOR)
    await service.delete_registered_model(session, name, actor="ana")
    kept = (
        await session.execute(
            select(PointerEvent.model_id, PointerEvent.pointer, PointerEvent.action).where(
                PointerEvent.model_name == name
            )
        )
    ).all()
    assert {(r.pointer, r.action) for r in kept} == {
        ("Production", "transition"),
        ("champion", "set_alias"),
        ("Production", "model_deleted"),
        ("champion", "model_deleted"),
    }
    assert {r.model_id for r in kept} == {None}
    await make_model(session, name)
    assert (await service.pointer_history(session, name))[0] == []
    assert (await service.pointer_at(session, name, "Production")).version is None
