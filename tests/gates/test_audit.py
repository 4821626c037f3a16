"""The audit trail: a hash chain that stays one chain under concurrent appends, records
pointer moves, verifies with `mlgate audit verify` and names the first tampered row."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncSession

from gates.audit import service as audit
from gates.audit import store as audit_store
from registry import service as registry
from tests.conftest import BACKEND, REPO_ROOT, LiveServer
from tests.gates.events_support import migrated_database, new_version
from tests.registry.factories import ACTOR, make_model, make_version
from tracking.core.db import Database


def test_canonical_json_is_sorted_compact_ascii_with_named_non_finite_numbers() -> None:
    value = {"b": 1, "a": [1.5, float("nan"), float("-inf")], "é": "ü"}
    assert audit.canonical_json(value) == (
        '{"a":[1.5,"NaN","-Infinity"],"b":1,"\\u00e9":"\\u00fc"}'
    )


async def test_appends_link_each_entry_to_the_previous_hash(session: AsyncSession) -> None:
    await audit.append(session, "policy.updated", "gate:prod", {"v": 1}, "alice")
    await audit.append(session, "grant.changed", "user:bob", {"role": "x"}, "alice")
    # Entries are chained when the transaction commits, or before the trail is read in it.
    newest, _ = await audit.search(session, kind=None, subject=None, max_results=2, page_token=None)
    second, first = newest
    assert (first.kind, second.kind) == ("policy.updated", "grant.changed")
    assert second.seq == first.seq + 1
    assert second.prev_hash == first.hash
    record = json.dumps(
        {
            "actor": "alice",
            "at": second.at,
            "kind": "grant.changed",
            "payload": {"role": "x"},
            "seq": second.seq,
            "subject": "user:bob",
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    assert second.hash == hashlib.sha256((first.hash + record).encode()).hexdigest()


@pytest.mark.usefixtures("app_hooks")
async def test_pointer_moves_are_recorded_in_the_same_transaction(session: AsyncSession) -> None:
    name = await make_model(session)
    version = await make_version(session, name)
    await registry.transition_stage(session, name, version, "Staging", actor=ACTOR)
    await registry.set_alias(session, name, "champion", version, actor=ACTOR, comment="why")
    await registry.delete_alias(session, name, "champion", actor=ACTOR)
    entries, _ = await audit.search(
        session, kind=None, subject=f"model:{name}", max_results=10, page_token=None
    )
    assert [e.kind for e in reversed(entries)] == [
        "model_version.created",
        "stage.transitioned",
        "alias.moved",
        "alias.moved",
    ]
    moved = entries[1]
    assert moved.actor == ACTOR
    assert moved.payload == {
        "alias": "champion",
        "from_version": None,
        "to_version": "1",
        "comment": "why",
    }


async def test_search_pages_newest_first(session: AsyncSession) -> None:
    for i in range(5):
        await audit.append(session, "paging.test", "thing:paging", {"i": i}, "bob")
    seen: list[int] = []
    token = None
    while True:
        page, token = await audit.search(
            session, kind="paging.test", subject=None, max_results=2, page_token=token
        )
        seen += [e.payload["i"] for e in page]
        if not token:
            break
    assert seen[:5] == [4, 3, 2, 1, 0]


async def test_concurrent_appends_form_one_chain(make_database: Any) -> None:
    url = await asyncio.to_thread(migrated_database, make_database, "audit_concurrent")
    writers = [Database(url, pool_size=4) for _ in range(3)]
    try:

        async def append(db: Database, i: int) -> None:
            async with db.write() as s:
                await audit.append(s, "test.concurrent", f"n:{i}", {"i": i}, "t")

        await asyncio.gather(*(append(writers[i % 3], i) for i in range(30)))
        result = await audit.verify(writers[0])
        assert result.ok, result
        assert result.checked == 30 and result.head_seq == 30
    finally:
        for db in writers:
            await db.dispose()


async def test_entries_of_a_rolled_back_savepoint_or_transaction_are_never_chained(
    make_database: Any,
) -> None:
    url = await asyncio.to_thread(migrated_database, make_database, "audit_savepoints")
    db = Database(url, pool_size=2)
    try:
        async with db.write() as s:
            await audit.append(s, "test.kept", "n:1", {}, "t")
            savepoint = await s.begin_nested()
            await audit.append(s, "test.undone", "n:2", {}, "t")
            await savepoint.rollback()
            savepoint = await s.begin_nested()
            await audit.append(s, "test.kept", "n:3", {}, "t")
            await savepoint.commit()
        with contextlib.suppress(RuntimeError):
            async with db.write() as s:
                await audit.append(s, "test.undone", "n:4", {}, "t")
                raise RuntimeError("the action failed")
        async with db.read() as s:
            entries, _ = await audit.search(
                s, kind=None, subject=None, max_results=10, page_token=None
            )
        assert [(e.seq, e.kind, e.subject) for e in reversed(entries)] == [
            (1, "test.kept", "n:1"),
            (2, "test.kept", "n:3"),
        ]
        result = await audit.verify(db)
        assert result.ok and result.head_seq == 2, result
    finally:
        await db.dispose()


@pytest.mark.skipif(BACKEND == "sqlite", reason="SQLite runs one write transaction at a time")
async def test_an_open_transaction_with_an_entry_does_not_hold_the_chain(
    make_database: Any,
) -> None:
    """The chain is taken only while a transaction commits: a second one appends and commits
    while the first, which appended earlier, is still open; both end up chained."""
    url = await asyncio.to_thread(migrated_database, make_database, "audit_open_tx")
    db = Database(url, pool_size=2)
    try:
        async with db.write() as slow:
            await audit.append(slow, "test.slow", "n:slow", {}, "t")
            async with asyncio.timeout(15), db.write() as fast:
                await audit.append(fast, "test.fast", "n:fast", {}, "t")
        result = await audit.verify(db)
        assert result.ok and result.head_seq == 2, result
        async with db.read() as s:
            entries, _ = await audit.search(
                s, kind=None, subject=None, max_results=10, page_token=None
            )
        assert [e.kind for e in reversed(entries)] == ["test.fast", "test.slow"]
    finally:
        await db.dispose()


@pytest.mark.skipif(BACKEND == "sqlite", reason="the one-call append is PostgreSQL's")
async def test_the_one_call_append_and_the_three_statement_append_share_one_chain(
    make_database: Any,
) -> None:
    """Connections that append through ``mlgate_audit_append`` (hashing in the database) and
    connections that append the three-statement way (a server that met the schema before
    migration 0020) race on one chain: it verifies, non-ASCII text and several entries per
    transaction included, so both take the same lock and hash the same record."""
    url = await asyncio.to_thread(migrated_database, make_database, "audit_mixed")
    new, old = Database(url, pool_size=4), Database(url, pool_size=4)

    def without_function(_dbapi: Any, record: Any) -> None:
        record.info[audit_store._HAS_APPEND] = False

    event.listen(old.write_engine.sync_engine, "connect", without_function)
    try:

        async def append(db: Database, i: int) -> None:
            async with db.write() as s:
                for j in range(2):
                    payload = {"i": i, "j": j, "text": "caf\u00e9 \u2603", "x": 1.5, "n": None}
                    await audit.append(s, "test.mixed", f"n:{i}\u00e9", payload, "t\u00e9")

        await asyncio.gather(*(append(new if i % 2 else old, i) for i in range(20)))
        result = await audit.verify(new)
        assert result.ok and result.head_seq == 40, result
    finally:
        await new.dispose()
        await old.dispose()


def test_the_append_function_takes_the_chains_lock_key() -> None:
    migration = REPO_ROOT / "gates/server/migrations/versions/0020_audit_append_function.py"
    assert f"pg_advisory_xact_lock({audit_store._PG_CHAIN_LOCK})" in migration.read_text()


def _mlgate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gates.server", *args],
        cwd=REPO_ROOT,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=120,
    )


async def _seed(url: str, count: int) -> None:
    db = Database(url, pool_size=1)
    try:
        for i in range(count):
            async with db.write() as s:
                await audit.append(s, "seed", f"item:{i}", {"i": i, "note": "x"}, "seeder")
    finally:
        await db.dispose()


async def _execute(url: str, sql: str, **params: Any) -> None:
    db = Database(url, pool_size=1)
    try:
        async with db.write() as s:
            await s.execute(text(sql), params)
    finally:
        await db.dispose()


def test_verify_passes_then_names_the_first_tampered_row(make_database: Any) -> None:
    url = migrated_database(make_database, "audit_tamper")
    asyncio.run(_seed(url, 6))
    ok = _mlgate("audit", "verify", "--database-url", url)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "OK: 6 entries" in ok.stdout

    # Someone edits a recorded payload directly in the database.
    asyncio.run(
        _execute(url, "UPDATE audit_log SET payload = :p WHERE seq = 4", p='{"i":3,"note":"y"}')
    )
    bad = _mlgate("audit", "verify", "--database-url", url)
    assert bad.returncode == 1
    assert "seq 4" in bad.stdout and "hash does not match" in bad.stdout


def test_verify_detects_a_rewritten_hash_and_a_deleted_row(make_database: Any) -> None:
    url = migrated_database(make_database, "audit_rewrite")
    asyncio.run(_seed(url, 5))
    # Re-hashing row 2 after editing it is caught at row 3, whose prev_hash no longer matches.
    asyncio.run(_execute(url, "UPDATE audit_log SET actor = 'mallory' WHERE seq = 2"))
    row2 = _recompute_hash(url, 2)
    asyncio.run(_execute(url, f"UPDATE audit_log SET hash = '{row2}' WHERE seq = 2"))
    bad = _mlgate("audit", "verify", "--database-url", url)
    assert bad.returncode == 1 and "seq 3" in bad.stdout and "prev_hash" in bad.stdout

    url2 = migrated_database(make_database, "audit_delete")
    asyncio.run(_seed(url2, 5))
    asyncio.run(_execute(url2, "DELETE FROM audit_log WHERE seq = 2"))
    gap = _mlgate("audit", "verify", "--database-url", url2)
    assert gap.returncode == 1 and "seq 2" in gap.stdout and "missing" in gap.stdout


def _recompute_hash(url: str, seq: int) -> str:
    async def run() -> str:
        db = Database(url, pool_size=1)
        try:
            async with db.read() as s:
                row = (
                    await s.execute(text("SELECT * FROM audit_log WHERE seq = :s"), {"s": seq})
                ).one()
            return audit.entry_hash(
                row.prev_hash,
                seq=row.seq,
                at=row.at,
                actor=row.actor,
                kind=row.kind,
                subject=row.subject,
                payload=json.loads(row.payload),
            )
        finally:
            await db.dispose()

    return asyncio.run(run())


def test_export_writes_json_lines_in_chain_order(make_database: Any, tmp_path: Path) -> None:
    url = migrated_database(make_database, "audit_export")
    asyncio.run(_seed(url, 4))
    out = tmp_path / "audit.jsonl"
    done = _mlgate("audit", "export", "--output", str(out), "--database-url", url)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [e["seq"] for e in lines] == [1, 2, 3, 4]
    assert all(b["prev_hash"] == a["hash"] for a, b in itertools.pairwise(lines))
    assert lines[0]["payload"] == {"i": 0, "note": "x"}
    to_stdout = _mlgate("audit", "export", "--database-url", url)
    assert len(to_stdout.stdout.splitlines()) == 4


@pytest.mark.compat
def test_audit_api_lists_the_moves_made_through_the_mlflow_client(
    live_server: LiveServer, unique: str
) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=live_server.url, registry_uri=live_server.url)
    name = f"audited-{unique}"
    client.create_registered_model(name)
    version = new_version(client, name)
    client.transition_model_version_stage(name, version, "Production")
    client.set_registered_model_alias(name, "champion", version)
    r = httpx.get(
        f"{live_server.url}/api/2.0/mlgate/audit",
        params={"subject": f"model:{name}", "max_results": 2},
    )
    assert r.status_code == 200, r.text
    page = r.json()
    assert [e["kind"] for e in page["entries"]] == ["alias.moved", "stage.transitioned"]
    assert page["entries"][1]["payload"]["to_stage"] == "Production"
    rest = httpx.get(
        f"{live_server.url}/api/2.0/mlgate/audit",
        params={"subject": f"model:{name}", "page_token": page["next_page_token"]},
    ).json()
    assert [e["kind"] for e in rest["entries"]] == ["model_version.created"]
    assert "next_page_token" not in rest
    bad = httpx.get(f"{live_server.url}/api/2.0/mlgate/audit", params={"max_results": 5000})
    assert bad.status_code == 400 and bad.json()["error_code"] == "INVALID_PARAMETER_VALUE"
