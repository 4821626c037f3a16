"""Concurrent metric writes of one process share a statement on PostgreSQL (group commit), and
every answer is still the one the request would have had alone: each 200 is stored, each
refusal stored nothing, a failed flush retries its writes one by one."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.conftest import BACKEND
from tests.hot_app import HotApp, hot_app, migrated_database
from tracking.api import METRIC_WRITES_STATE_KEY
from tracking.core.group_commit import GroupCommit, GroupFailed

API = "/api/2.0/mlflow"


@pytest.fixture(scope="module")
async def group_url(make_database: Any) -> str:
    return await migrated_database(make_database, "groups")


async def _run(app: HotApp, eid: str) -> str:
    made = await app.client.post(f"{API}/runs/create", json={"experiment_id": eid})
    return str(made.json()["run"]["info"]["run_id"])


async def _history(app: HotApp, run_id: str, key: str) -> list[tuple[int, int, Any]]:
    page = await app.client.get(
        f"{API}/metrics/get-history", params={"run_id": run_id, "metric_key": key}
    )
    return [(m["step"], m["timestamp"], m["value"]) for m in page.json().get("metrics", [])]


async def _latest(app: HotApp, run_id: str) -> dict[str, tuple[int, int, Any]]:
    run = (await app.client.get(f"{API}/runs/get", params={"run_id": run_id})).json()
    return {
        m["key"]: (m["step"], m["timestamp"], m["value"]) for m in run["run"]["data"]["metrics"]
    }


def _flushes(app: Any) -> int:
    writes = app.state.get(METRIC_WRITES_STATE_KEY)
    return 0 if writes is None else int(writes.flushes)


async def test_concurrent_writers_on_shared_and_separate_runs_store_every_point(
    group_url: str, tmp_path: Path
) -> None:
    async with hot_app(group_url, tmp_path) as app:
        exp = await app.client.post(f"{API}/experiments/create", json={"name": "many"})
        eid = exp.json()["experiment_id"]
        runs = [await _run(app, eid) for _ in range(4)]
        rng = random.Random(7)
        # (run, key, step, timestamp, value): shared keys on shared runs, steps out of order,
        # the same step at several timestamps, repeated identical points, and NaN.
        points = [
            (runs[i % 4], f"k{i % 3}", rng.randrange(40), rng.randrange(5), float(rng.randrange(9)))
            for i in range(480)
        ]
        points += points[:40]  # the same point again: stored once
        points += [(runs[0], "k0", 39, 4, "NaN"), (runs[1], "k1", 45, 0, "NaN")]
        rng.shuffle(points)

        async def send(i: int, point: tuple[str, str, int, int, Any]) -> int:
            run_id, key, step, ts, value = point
            metric = {"key": key, "value": value, "timestamp": ts, "step": step}
            if i % 5 == 0:  # some as one-metric batches
                body = {"run_id": run_id, "metrics": [metric]}
                return (await app.client.post(f"{API}/runs/log-batch", json=body)).status_code
            body = {"run_id": run_id, **metric}
            return (await app.client.post(f"{API}/runs/log-metric", json=body)).status_code

        async def send_large(i: int) -> int:
            # Larger batches (written alone, not grouped) on the same runs meanwhile.
            metrics = [{"key": f"b{j}", "value": i, "timestamp": i, "step": i} for j in range(30)]
            body = {"run_id": runs[i % 2], "metrics": metrics}
            return (await app.client.post(f"{API}/runs/log-batch", json=body)).status_code

        before = _flushes(app.client._transport.app)  # type: ignore[attr-defined]
        statuses = await asyncio.gather(
            *(send(i, p) for i, p in enumerate(points)), *(send_large(i) for i in range(8))
        )
        assert statuses == [200] * (len(points) + 8)
        for r, run_id in enumerate(runs[:2]):
            latest = await _latest(app, run_id)
            for j in (0, 29):
                history = await _history(app, run_id, f"b{j}")
                assert sorted(history) == [(i, i, i) for i in range(8) if i % 2 == r]
                assert latest[f"b{j}"] == (6 + r, 6 + r, 6 + r)
        flushes = _flushes(app.client._transport.app) - before  # type: ignore[attr-defined]
        if BACKEND == "postgres":
            assert 0 < flushes < len(points) / 4 + 8, flushes  # they were grouped
        else:
            assert flushes == 0  # SQLite: no group commit

        def order(p: tuple[str, str, int, int, Any]) -> tuple[int, int, float]:
            value = 0.0 if p[4] == "NaN" else float(p[4])
            return (p[2], p[3], value)

        for run_id in runs:
            latest = await _latest(app, run_id)
            for key in ("k0", "k1", "k2"):
                mine = {p for p in points if p[0] == run_id and p[1] == key}
                history = await _history(app, run_id, key)
                assert sorted(history, key=lambda h: (h[0], h[1], str(h[2]))) == sorted(
                    ((s, t, v) for _, _, s, t, v in mine), key=lambda h: (h[0], h[1], str(h[2]))
                )
                # The latest value is the maximum (step, timestamp, value), as if sequential.
                top = max(mine, key=order)
                assert latest[key] == (top[2], top[3], top[4]), (run_id, key)


async def test_a_refused_write_among_grouped_ones_fails_alone_with_its_own_answer(
    group_url: str, tmp_path: Path
) -> None:
    async with hot_app(group_url, tmp_path) as app:
        exp = await app.client.post(f"{API}/experiments/create", json={"name": "refused"})
        eid = exp.json()["experiment_id"]
        good = [await _run(app, eid) for _ in range(3)]
        deleted = await _run(app, eid)
        await app.client.post(f"{API}/runs/delete", json={"run_id": deleted})
        bad_bodies = [
            {"run_id": deleted, "key": "m", "value": 1, "timestamp": 1},
            {"run_id": "f" * 32, "key": "m", "value": 1, "timestamp": 1},
            # Refused by the database, not by validation: the whole flush fails.
            {
                "run_id": good[0],
                "key": "m",
                "value": 1,
                "timestamp": 1,
                "dataset_name": "a\x00b",
                "dataset_digest": "d",
            },
            {"run_id": good[1], "key": "", "value": 1, "timestamp": 1},
        ]
        # Each refusal's answer when sent alone.
        alone = []
        for body in bad_bodies:
            response = await app.client.post(f"{API}/runs/log-metric", json=body)
            assert response.status_code != 200, body
            alone.append((response.status_code, response.content))

        def good_body(i: int) -> dict[str, Any]:
            return {"run_id": good[i % 3], "key": "g", "value": i, "timestamp": i, "step": i}

        for _ in range(3):
            bodies: list[dict[str, Any]] = [good_body(i) for i in range(30)]
            bodies[7:7] = bad_bodies
            answers = await asyncio.gather(
                *(app.client.post(f"{API}/runs/log-metric", json=b) for b in bodies)
            )
            got = [(a.status_code, a.content) for a in answers]
            assert got[7:11] == alone
            assert got[:7] + got[11:] == [(200, b"{}")] * 30
        for i, run_id in enumerate(good):
            steps = sorted(s for s, _, _ in await _history(app, run_id, "g"))
            assert steps == [s for s in range(30) if s % 3 == i]
            assert await _history(app, run_id, "m") == []
        assert await _history(app, deleted, "m") == []


@pytest.mark.skipif(BACKEND != "postgres", reason="a PostgreSQL backend to terminate")
async def test_a_flush_whose_connection_is_cut_retries_each_write_alone(
    group_url: str, tmp_path: Path
) -> None:
    """The flush's backend is terminated while it waits on a row lock: the flush fails, its
    writes are retried one by one on new connections, and every 200 is stored."""
    async with hot_app(group_url, tmp_path) as app:
        exp = await app.client.post(f"{API}/experiments/create", json={"name": "cut"})
        eid = exp.json()["experiment_id"]
        runs = [await _run(app, eid) for _ in range(2)]
        first = {"run_id": runs[0], "key": "c", "value": 0, "timestamp": 0, "step": 0}
        assert (await app.client.post(f"{API}/runs/log-metric", json=first)).status_code == 200
        url = group_url.replace("postgresql+asyncpg://", "postgresql://")
        blocker = await asyncpg.connect(url)
        killer = await asyncpg.connect(url)
        try:
            tx = blocker.transaction()
            await tx.start()
            await blocker.execute(
                "SELECT 1 FROM latest_metrics lm JOIN runs r ON r.id = lm.run_id "
                "WHERE r.run_uuid = $1 FOR UPDATE",
                runs[0],
            )
            bodies = [
                {"run_id": runs[i % 2], "key": "c", "value": i, "timestamp": i, "step": i}
                for i in range(1, 21)
            ]
            sends = asyncio.gather(
                *(app.client.post(f"{API}/runs/log-metric", json=b) for b in bodies)
            )
            waiting: list[Any] = []
            for _ in range(200):
                waiting = await killer.fetch(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock' AND query LIKE '%INSERT INTO metrics%'"
                )
                if waiting:
                    break
                await asyncio.sleep(0.02)
            assert waiting, await killer.fetch(
                "SELECT pid, state, wait_event_type, wait_event, left(query, 60) "
                "FROM pg_stat_activity WHERE datname = current_database()"
            )
            await killer.execute("SELECT pg_terminate_backend($1)", waiting[0]["pid"])
            await asyncio.sleep(0.1)
            await tx.rollback()
            answers = await sends
        finally:
            await blocker.close()
            await killer.close()
        assert [a.status_code for a in answers] == [200] * 20, [a.text for a in answers]
        assert sorted(s for s, _, _ in await _history(app, runs[0], "c")) == list(range(0, 21, 2))
        assert sorted(s for s, _, _ in await _history(app, runs[1], "c")) == list(range(1, 21, 2))
        assert (await _latest(app, runs[0]))["c"] == (20, 20, 20)
        assert (await _latest(app, runs[1]))["c"] == (19, 19, 19)


async def test_group_commit_answers_each_caller_and_fails_a_group_to_each_caller() -> None:
    """The mechanism alone: groups form while a flush is in flight, results go back in
    order, a failed flush raises GroupFailed to each of its callers (and to no other), and a
    caller that went away does not stop the others."""
    release = asyncio.Event()
    seen: list[list[int]] = []

    async def flush(items: Any) -> list[int]:
        seen.append(list(items))
        await release.wait()
        if -1 in items:
            raise ValueError("refused")
        return [i * 10 for i in items]

    group: GroupCommit[int, int] = GroupCommit(
        flush, weight=lambda _i: 1, max_weight=4, max_in_flight=1
    )
    first = asyncio.ensure_future(group.submit(0))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    rest = [asyncio.ensure_future(group.submit(i)) for i in (1, 2, -1, 3, 4, 5)]
    gone = asyncio.ensure_future(group.submit(6))
    await asyncio.sleep(0)
    gone.cancel()
    release.set()
    assert await first == 0
    results = await asyncio.gather(*rest, return_exceptions=True)
    assert [type(r) if isinstance(r, BaseException) else r for r in results] == [
        GroupFailed,
        GroupFailed,
        GroupFailed,
        GroupFailed,
        40,
        50,
    ]
    assert seen == [[0], [1, 2, -1, 3], [4, 5]]
    assert group.flushes == 3
    # A write flushed alone: its own flush, the same failure.
    assert await group.alone(7) == 70
    with pytest.raises(GroupFailed):
        await group.alone(-1)
    assert seen[-2:] == [[7], [-1]]


@pytest.mark.skipif(BACKEND != "postgres", reason="PostgreSQL's plan cache")
async def test_the_grouped_statement_is_planned_once_not_at_every_flush(
    group_url: str, tmp_path: Path
) -> None:
    """Prepared and run like the driver runs it, the grouped write switches to its generic
    plan (a statement planned afresh at every flush cost most of a small group's CPU)."""
    from sqlalchemy.dialects.postgresql import asyncpg as pg_dialect

    from tracking.store.metrics import MetricColumns
    from tracking.store.prebuilt import PG_METRIC_GROUPS, write_metric_groups

    async with hot_app(group_url, tmp_path) as app:
        exp = await app.client.post(f"{API}/experiments/create", json={"name": "plans"})
        runs = [await _run(app, exp.json()["experiment_id"]) for _ in range(3)]
    compiled = PG_METRIC_GROUPS.driver_sql(pg_dialect.dialect())
    conn = await asyncpg.connect(group_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        # A runs table of some size, analyzed, as the planner meets it in use.
        await conn.execute(
            "INSERT INTO runs (run_uuid, experiment_id, name, user_id, status, start_time, "
            "lifecycle_stage, artifact_uri) SELECT md5('plans' || g), experiment_id, 'r', 'u', "
            "'RUNNING', 0, 'active', 'x' FROM experiments, generate_series(1, 20000) AS g "
            "WHERE name = 'plans'"
        )
        await conn.execute("ANALYZE runs")
        prepared = await conn.prepare(compiled.sql)

        class Rows:
            async def all(self, _stmt: Any, params: Any) -> list[Any]:
                return list(await prepared.fetch(*compiled.args(params)))

        for step in range(12):
            columns = MetricColumns(["p"], [step], [step], [1.0], [False], [None], [None], [None])
            written = await write_metric_groups(
                Rows(),  # type: ignore[arg-type]
                [(runs[0], columns), (runs[1], columns), ("f" * 32, columns)],
            )
            assert written == [True, True, False]
        plans = await conn.fetchrow(
            "SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE statement = $1",
            compiled.sql,
        )
    finally:
        await conn.close()
    assert plans["generic_plans"] >= 6, plans
