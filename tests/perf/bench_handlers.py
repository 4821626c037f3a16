"""In-process cost of the hottest requests: CPU per request and statements per request.

Builds the app on a fresh database (SQLite file or a new PostgreSQL database), seeds a model
with four versions (v4 in Production, v3 in Staging, ``@champion`` on v4) and a run, then
sends each request ``--requests`` times, one at a time, through ``httpx.ASGITransport`` (the
whole app: middleware, guard, handler) and reports, per request:

- CPU: ``time.process_time`` over the timed calls, divided by their number (this process
  only; on PostgreSQL the server backend's share is not included);
- statements: SQL statements the drivers were handed (``before_cursor_execute``; SQLite's
  ``BEGIN`` included, which goes through a cursor), per request.

The ``health`` row (no database) is the floor: the test client, the outer layers and routing.
``--ops gate-promote`` (not in the default set) times a signed gate promotion that registers a
new version and moves it; its runs are made before timing (warm-up plus ``--requests``).
``--auth`` sends an administrator's API token; ``--profile PREFIX`` writes pyinstrument profiles.

    PYTHONPATH=. .venv/bin/python tests/perf/bench_handlers.py --backend sqlite
    PYTHONPATH=. .venv/bin/python tests/perf/bench_handlers.py --backend postgres --auth

Not collected by pytest (``norecursedirs``).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

PERF_DIR = Path(__file__).resolve().parent
REPO_ROOT = PERF_DIR.parents[1]
sys.path[:0] = [str(REPO_ROOT)]

import httpx  # noqa: E402
from sqlalchemy import event  # noqa: E402

API = "/api/2.0/mlflow"
ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts"
MLGATE = "/api/2.0/mlgate"
ADMIN = ("root", "a long enough admin password")


async def _database_url(backend: str, workdir: Path, pg_admin: str) -> tuple[str, Any]:
    if backend == "sqlite":
        return f"sqlite:///{workdir / 'bench.db'}", None
    import asyncpg

    name = f"bench_handlers_{os.getpid()}_{int(time.time())}"
    conn = await asyncpg.connect(f"{pg_admin}/postgres")
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()

    async def drop() -> None:
        conn = await asyncpg.connect(f"{pg_admin}/postgres")
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    return f"{pg_admin}/{name}", drop


class StatementCounter:
    def __init__(self, db: Any) -> None:
        self.count = 0
        self.engines = {id(e): e.sync_engine for e in (db.write_engine, db.read_engine)}
        for engine in self.engines.values():
            event.listen(engine, "before_cursor_execute", self._before)

    def _before(self, *_args: Any) -> None:
        self.count += 1


async def _check(response: httpx.Response) -> Any:
    if response.status_code != 200:
        raise RuntimeError(f"{response.request.url} -> {response.status_code}: {response.text}")
    return response.json()


async def seed(client: httpx.AsyncClient) -> dict[str, str]:
    """A model with 4 versions (v4 Production, v3 Staging, @champion on v4) and a run."""
    exp = await _check(await client.post(f"{API}/experiments/create", json={"name": "bench"}))
    eid = exp["experiment_id"]
    run = (await _check(await client.post(f"{API}/runs/create", json={"experiment_id": eid})))[
        "run"
    ]["info"]
    root = run["artifact_uri"].removeprefix("mlflow-artifacts:/").strip("/")
    for name in ("MLmodel", "model.pkl"):
        put = await client.put(f"{ARTIFACTS}/{root}/model/{name}", content=os.urandom(200))
        if put.status_code != 200:
            raise RuntimeError(f"upload -> {put.status_code}: {put.text}")
    source = run["artifact_uri"].rstrip("/") + "/model"
    model = f"m-{uuid.uuid4().hex[:6]}"
    await _check(await client.post(f"{API}/registered-models/create", json={"name": model}))
    for _ in range(4):
        body = {"name": model, "source": source, "run_id": run["run_id"]}
        await _check(await client.post(f"{API}/model-versions/create", json=body))
    for version, stage in (("4", "Production"), ("3", "Staging")):
        move = {"name": model, "version": version, "stage": stage}
        await _check(await client.post(f"{API}/model-versions/transition-stage", json=move))
    alias = {"name": model, "alias": "champion", "version": "4"}
    await _check(await client.post(f"{API}/registered-models/alias", json=alias))
    history = (await _check(await client.post(f"{API}/runs/create", json={"experiment_id": eid})))[
        "run"
    ]["info"]["run_id"]
    points = [
        {"key": "loss", "value": 1.0 / (s + 1), "timestamp": 1_700_000_000_000 + s, "step": s}
        for s in range(1000)
    ]
    await _check(
        await client.post(f"{API}/runs/log-batch", json={"run_id": history, "metrics": points})
    )
    return {"model": model, "experiment_id": eid, "run_id": run["run_id"], "history_run": history}


async def seed_search(client: httpx.AsyncClient, runs: int) -> str:
    """An experiment of ``runs`` runs shaped like bench_tracking's (4 params, 5 tags, 3
    metrics each); returns its id."""
    from tests.perf.bench_tracking import run_specs

    new = await client.post(f"{API}/experiments/create", json={"name": "bench-search"})
    eid = str((await _check(new))["experiment_id"])
    for spec in run_specs(runs):
        body = {"experiment_id": eid, "user_id": "bench", "run_name": spec["name"],
                "start_time": spec["start_time"], "tags": spec["tags"]}  # fmt: skip
        created = await _check(await client.post(f"{API}/runs/create", json=body))
        batch = {"run_id": created["run"]["info"]["run_id"], "params": spec["params"],
                 "metrics": spec["metrics"]}  # fmt: skip
        await _check(await client.post(f"{API}/runs/log-batch", json=batch))
    return eid


def http_ops(client: httpx.AsyncClient, fx: dict[str, str]) -> dict[str, Callable[[], Awaitable]]:
    model, run_id, eid = fx["model"], fx["run_id"], fx["experiment_id"]
    search_eid = fx.get("search_experiment_id", eid)
    step = iter(range(10**9))
    # Archiving transitions alternate v1 and v2 into Production (each archives the other and
    # v4): every call moves a version, archives one, writes history, an outbox event and an
    # audit entry.
    moving = iter(range(10**9))

    def batch() -> dict[str, Any]:
        n = next(step)
        metrics = [
            {"key": f"k{i:02d}", "value": i / 100, "timestamp": 1, "step": n} for i in range(100)
        ]
        return {"run_id": run_id, "metrics": metrics}

    async def call(method: str, path: str, **kw: Any) -> None:
        response = await client.request(method, f"{API}/{path}", **kw)
        if response.status_code != 200:
            raise RuntimeError(f"{path} -> {response.status_code}: {response.text}")

    async def health() -> None:
        response = await client.get("/health")
        if response.status_code != 200:
            raise RuntimeError(f"/health -> {response.status_code}")

    return {
        # The floor: the test client, the outer layers and routing, no database.
        "health": health,
        "get-download-uri": lambda: call(
            "GET", "model-versions/get-download-uri", params={"name": model, "version": "4"}
        ),
        "get-latest-versions": lambda: call(
            "POST",
            "registered-models/get-latest-versions",
            json={"name": model, "stages": ["Production"]},
        ),
        "get-latest-versions (GET)": lambda: call(
            "GET",
            "registered-models/get-latest-versions",
            params={"name": model, "stages": "Production"},
        ),
        "alias": lambda: call(
            "GET", "registered-models/alias", params={"name": model, "alias": "champion"}
        ),
        "model-versions/get": lambda: call(
            "GET", "model-versions/get", params={"name": model, "version": "4"}
        ),
        "transition": lambda: call(
            "POST",
            "model-versions/transition-stage",
            json={
                "name": model,
                "version": str(1 + next(moving) % 2),
                "stage": "Production",
                "archive_existing_versions": True,
            },
        ),
        "runs/create": lambda: call("POST", "runs/create", json={"experiment_id": eid}),
        "runs/log-metric": lambda: call(
            "POST",
            "runs/log-metric",
            json={"run_id": run_id, "key": "m", "value": 0.5, "timestamp": 1, "step": next(step)},
        ),
        "runs/log-batch (100 metrics)": lambda: call("POST", "runs/log-batch", json=batch()),
        # bench_tracking's searches (``--search-runs`` runs in the searched experiment).
        "runs/search-filtered-100": lambda: call(
            "POST",
            "runs/search",
            json={
                "experiment_ids": [search_eid],
                "filter": "metrics.m1 > 0.5 AND params.model = 'rf' AND tags.team = 'a'",
                "max_results": 100,
                "order_by": ["metrics.m1 DESC"],
            },
        ),
        "runs/search-page-1000": lambda: call(
            "POST", "runs/search", json={"experiment_ids": [search_eid], "max_results": 1000}
        ),
        "runs/get": lambda: call("GET", "runs/get", params={"run_id": run_id}),
        # bench_tracking's history read: 1,000 points of one metric.
        "metrics/get-history-1000": lambda: call(
            "GET",
            "metrics/get-history",
            params={"run_id": fx["history_run"], "metric_key": "loss", "max_results": 25000},
        ),
        "experiments/search": lambda: call("POST", "experiments/search", json={"max_results": 100}),
    }


async def _finished_run(client: httpx.AsyncClient, eid: str) -> str:
    """A FINISHED run with the metrics and tag the bench gate checks, and a model folder."""
    run = (await _check(await client.post(f"{API}/runs/create", json={"experiment_id": eid})))[
        "run"
    ]["info"]
    metrics = [
        {"key": "val_auc", "value": 0.95, "timestamp": 1, "step": 0},
        {"key": "latency_ms", "value": 20.0, "timestamp": 1, "step": 0},
    ]
    batch = {
        "run_id": run["run_id"],
        "metrics": metrics,
        "tags": [{"key": "git_commit", "value": "abc"}],
    }
    await _check(await client.post(f"{API}/runs/log-batch", json=batch))
    root = run["artifact_uri"].removeprefix("mlflow-artifacts:/").strip("/")
    for name, size in (("MLmodel", 200), ("model.pkl", 16 * 1024)):
        put = await client.put(f"{ARTIFACTS}/{root}/model/{name}", content=os.urandom(size))
        if put.status_code != 200:
            raise RuntimeError(f"upload -> {put.status_code}: {put.text}")
    done = {"run_id": run["run_id"], "status": "FINISHED"}
    await _check(await client.post(f"{API}/runs/update", json=done))
    return str(run["run_id"])


async def gate_promote_op(client: httpx.AsyncClient, runs: int) -> Callable[[], Awaitable]:
    """A signed gate promotion (as ``bench_registry.py --ops promote``): each call registers
    a new FINISHED run's model as a new version and moves it to Staging. ``runs`` are made
    first (not timed), one per call."""
    from gates.policies.signatures import signed_headers

    gate = {"name": "bench-staging", "model": "gp-*", "target": "Staging",
            "metrics": ["val_auc >= 0.9", "latency_ms <= 50"], "required_tags": ["git_commit"]}  # fmt: skip
    await _check(await client.post(f"{MLGATE}/gates/create", json=gate))
    secret = await _check(
        await client.post(f"{MLGATE}/gates/secrets/add", json={"gate": gate["name"]})
    )
    exp = await _check(await client.post(f"{API}/experiments/create", json={"name": "gate"}))
    made = iter([await _finished_run(client, exp["experiment_id"]) for _ in range(runs)])

    async def promote() -> None:
        run = next(made)
        body = {"model": "gp-bench", "target": "Staging", "run_id": run, "idempotency_key": run}
        raw = json.dumps(body).encode()
        headers = signed_headers(
            secret["secret"]["secret"], f"msg_{uuid.uuid4().hex}", int(time.time()), raw
        )
        response = await client.post(
            f"{MLGATE}/gates/promote",
            content=raw,
            headers={**headers, "content-type": "application/json"},
        )
        if response.status_code != 200:
            raise RuntimeError(f"promote -> {response.status_code}: {response.text}")

    return promote


async def measure(op: Callable[[], Awaitable], n: int, counter: StatementCounter) -> tuple:
    for _ in range(min(200, n)):
        await op()
    gc.collect()
    before_statements = counter.count
    start = time.process_time()
    for _ in range(n):
        await op()
    cpu = time.process_time() - start
    return cpu / n * 1000, (counter.count - before_statements) / n


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--ops", default="")
    parser.add_argument("--auth", action="store_true")
    parser.add_argument(
        "--search-runs", type=int, default=0, help="seed this many runs for the search ops"
    )
    parser.add_argument("--keep-db", action="store_true", help="keep the database, print its URL")
    parser.add_argument("--profile", default="", help="write a pyinstrument text profile here")
    parser.add_argument("--pg-admin-url", default="postgresql://postgres@127.0.0.1:5432")
    args = parser.parse_args()

    from gates.server import migrate
    from gates.server.app import create_app
    from tracking.core.settings import Settings

    workdir = Path(tempfile.mkdtemp(prefix="bench-handlers-"))
    url, drop = await _database_url(args.backend, workdir, args.pg_admin_url.rstrip("/"))
    try:
        await asyncio.to_thread(migrate.upgrade, url)
        settings = Settings(
            database_url=url,
            artifacts_destination=str(workdir / "artifacts"),
            auth=args.auth,
            admin_username=ADMIN[0] if args.auth else "",
            admin_password=ADMIN[1] if args.auth else "",
            webhook_worker=False,
            approval_sweep_interval=0,
            staging_sweep_interval=0,
            audit_checkpoint_interval=0,
            access_log=False,
        )
        app = create_app(settings)
        logging.getLogger("httpx").setLevel(logging.WARNING)
        async with app.lifespan():
            headers = {"Authorization": f"Basic {_basic()}"} if args.auth else {}
            transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
            async with httpx.AsyncClient(
                transport=transport, base_url="http://127.0.0.1", headers=headers
            ) as client:
                if args.auth:
                    token = await _token(client)
                    client.headers["Authorization"] = f"Bearer {token}"
                fx = await seed(client)
                if args.search_runs:
                    fx["search_experiment_id"] = await seed_search(client, args.search_runs)
                counter = StatementCounter(app.state["db"])
                ops = http_ops(client, fx)
                wanted = [o for o in args.ops.split(",") if o] or list(ops)
                if "gate-promote" in wanted:
                    runs = min(200, args.requests) + args.requests
                    ops["gate-promote"] = await gate_promote_op(client, runs)
                print(f"backend={args.backend} auth={args.auth} n={args.requests}")
                print("| request | CPU ms/req | statements/req |\n|---|---:|---:|")
                for name in wanted:
                    if args.profile:
                        await _profile(ops[name], args.requests, f"{args.profile}.{name}.txt")
                        continue
                    cpu, statements = await measure(ops[name], args.requests, counter)
                    print(f"| {name} | {cpu:.3f} | {statements:.2f} |", flush=True)
    finally:
        if args.keep_db:
            print(f"database kept: {url}")
        elif drop is not None:
            await drop()


async def _profile(op: Callable[[], Awaitable], n: int, path: str) -> None:
    from pyinstrument import Profiler  # pip install pyinstrument (not a dependency)

    for _ in range(min(200, n)):
        await op()
    profiler = Profiler(interval=0.0002, async_mode="disabled")
    profiler.start()
    for _ in range(n):
        await op()
    profiler.stop()
    Path(path).write_text(profiler.output_text(unicode=False, show_all=False))


def _basic() -> str:
    import base64

    return base64.b64encode(f"{ADMIN[0]}:{ADMIN[1]}".encode()).decode()


async def _token(client: httpx.AsyncClient) -> str:
    response = await client.post("/api/2.0/mlgate/tokens/create", json={"name": "bench"})
    return str((await _check(response))["secret"])


if __name__ == "__main__":
    asyncio.run(main())
