"""Gate webhook benchmark: decision-and-promotion latency with 16 concurrent CI callers.

Starts ``mlgate server`` on a fresh database, creates a gate (metric thresholds, a required
tag, FINISHED status and the artifact digest) with a signing secret, seeds finished runs with a
small model file, then has 16 concurrent callers send Standard-Webhooks-signed
``POST /api/2.0/mlgate/gates/promote`` requests. Each scenario reports p50/p99 latency and
throughput:

- ``promote``: a passing run -> a new version registered (files fingerprinted) and moved to
  Staging, all in one transaction;
- ``refuse``: a failing run -> a stored 422 decision, nothing created;
- ``retry``: the ``promote`` requests again with the same idempotency keys -> stored decisions;
- ``dry run``: evaluation only.

    .venv/bin/python tests/perf/bench_gates.py --backend sqlite
    .venv/bin/python tests/perf/bench_gates.py --backend postgres

Not collected by pytest (``norecursedirs``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import msgspec

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

from gates.policies.signatures import signed_headers  # noqa: E402

API = "/api/2.0/mlflow"
MLGATE = "/api/2.0/mlgate"
CONCURRENCY = 16


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _pg_database(admin_url: str) -> tuple[str, str]:
    import asyncpg

    name = f"mlgate_bench_gates_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return f"{admin_url.rsplit('/', 1)[0]}/{name}", name


async def _pg_drop(admin_url: str, name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def start_server(
    database_url: str, workdir: Path, workers: int
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        **os.environ,
        "MLGATE_DATABASE_URL": database_url,
        "MLGATE_ARTIFACTS_DESTINATION": str(workdir / "artifacts"),
        "MLGATE_PORT": str(port),
        "MLGATE_WORKERS": str(workers),
        "MLGATE_LOG_LEVEL": "warning",
        "MLGATE_WEBHOOK_WORKER": "false",
    }
    log = (workdir / "server.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "gates.server", "server"],
        cwd=REPO_ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError((workdir / "server.log").read_text())
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    process.kill()
    raise RuntimeError("server did not start")


async def ok(client: httpx.AsyncClient, method: str, path: str, **kw: Any) -> Any:
    r = await client.request(method, path, **kw)
    if r.status_code != 200:
        raise RuntimeError(f"{method} {path}: {r.status_code} {r.text}")
    return r.json()


async def seed_run(client: httpx.AsyncClient, experiment_id: str, auc: float) -> str:
    run = (await ok(client, "POST", f"{API}/runs/create", json={"experiment_id": experiment_id}))[
        "run"
    ]["info"]
    run_id = run["run_id"]
    await ok(
        client,
        "POST",
        f"{API}/runs/log-batch",
        json={
            "run_id": run_id,
            "metrics": [
                {"key": "val_auc", "value": auc, "timestamp": 1, "step": 0},
                {"key": "latency_ms", "value": 20.0, "timestamp": 1, "step": 0},
            ],
            "tags": [{"key": "git_commit", "value": "abc123"}],
        },
    )
    root = run["artifact_uri"].removeprefix("mlflow-artifacts:/")
    for name, size in (("MLmodel", 200), ("model.pkl", 64 * 1024)):
        r = await client.put(
            f"/api/2.0/mlflow-artifacts/artifacts/{root}/model/{name}", content=os.urandom(size)
        )
        r.raise_for_status()
    await ok(client, "POST", f"{API}/runs/update", json={"run_id": run_id, "status": "FINISHED"})
    return run_id


async def seed(url: str, n: int, auc: float) -> list[str]:
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        exp = await ok(
            client, "POST", f"{API}/experiments/create", json={"name": f"b-{uuid.uuid4().hex[:8]}"}
        )
        queue = list(range(n))
        out: list[str] = []

        async def worker() -> None:
            while queue:
                queue.pop()
                out.append(await seed_run(client, exp["experiment_id"], auc))

        await asyncio.gather(*(worker() for _ in range(8)))
        return out


async def drive(
    url: str, secret: str, bodies: list[dict[str, Any]], expect: int
) -> tuple[list[float], float]:
    """Send every body once from 16 concurrent callers; latencies (s) and wall time."""
    latencies: list[float] = []
    pending = list(reversed(bodies))
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:

        async def caller() -> None:
            while pending:
                raw = msgspec.json.encode(pending.pop())
                headers = signed_headers(secret, f"msg_{uuid.uuid4().hex}", int(time.time()), raw)
                headers["content-type"] = "application/json"
                start = time.perf_counter()
                r = await client.post(f"{MLGATE}/gates/promote", content=raw, headers=headers)
                latencies.append(time.perf_counter() - start)
                if r.status_code != expect:
                    raise RuntimeError(f"expected {expect}, got {r.status_code}: {r.text}")

        begin = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(CONCURRENCY)))
        return latencies, time.perf_counter() - begin


async def baseline(url: str) -> tuple[str, int, float, float, float, float]:
    """GET /health from the same 16 callers: what the machine and HTTP stack cost alone."""
    latencies: list[float] = []
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:

        async def caller() -> None:
            for _ in range(20):
                start = time.perf_counter()
                (await client.get("/health")).raise_for_status()
                latencies.append(time.perf_counter() - start)

        begin = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(CONCURRENCY)))
        wall = time.perf_counter() - begin
    return (
        "baseline: GET /health",
        len(latencies),
        pct(latencies, 0.5),
        pct(latencies, 0.99),
        statistics.fmean(latencies) * 1000,
        len(latencies) / wall,
    )


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def bench(args: argparse.Namespace) -> list[tuple[str, int, float, float, float, float]]:
    drop = None
    with tempfile.TemporaryDirectory(prefix="bench-gates-") as tmp:
        workdir = Path(tmp)
        if args.backend == "sqlite":
            database_url = f"sqlite:///{workdir / 'bench.db'}"
        else:
            database_url, name = await _pg_database(args.pg_admin_url)
            drop = name
        process, url = start_server(database_url, workdir, args.workers)
        try:
            model = f"bench-{uuid.uuid4().hex[:6]}"
            async with httpx.AsyncClient(base_url=url, timeout=60) as client:
                gate = f"{model}-staging"
                await ok(
                    client,
                    "POST",
                    f"{MLGATE}/gates/create",
                    json={
                        "name": gate,
                        "model": model,
                        "target": "Staging",
                        "metrics": ["val_auc >= 0.9", "latency_ms <= 50"],
                        "required_tags": ["git_commit"],
                    },
                )
                secret = (
                    await ok(client, "POST", f"{MLGATE}/gates/secrets/add", json={"gate": gate})
                )["secret"]["secret"]
            good = await seed(url, args.requests, 0.95)
            bad = await seed(url, args.requests, 0.50)

            def bodies(runs: list[str], prefix: str, dry: bool = False) -> list[dict[str, Any]]:
                return [
                    {
                        "model": model,
                        "target": "Staging",
                        "run_id": r,
                        "idempotency_key": f"{prefix}-{r}",
                        "dry_run": dry,
                    }
                    for r in runs
                ]

            # Warm-up: a few dry runs so connection pools and caches are filled.
            await drive(url, secret, bodies(good[:CONCURRENCY], "warm", dry=True), 200)
            rows = [await baseline(url)]
            for label, batch, expect in (
                ("promote (new version + move)", bodies(good, "p"), 200),
                ("refuse (422, nothing created)", bodies(bad, "f"), 422),
                ("retry (stored decision)", bodies(good, "p"), 200),
                ("dry run (evaluate only)", bodies(good, "d", dry=True), 200),
            ):
                latencies, wall = await drive(url, secret, batch, expect)
                rows.append(
                    (
                        label,
                        len(latencies),
                        pct(latencies, 0.50),
                        pct(latencies, 0.99),
                        statistics.fmean(latencies) * 1000,
                        len(latencies) / wall,
                    )
                )
            async with httpx.AsyncClient(base_url=url, timeout=60) as client:
                found = await ok(
                    client,
                    "GET",
                    f"{API}/model-versions/search",
                    params={"filter": f"name='{model}'", "max_results": 100000},
                )
                assert len(found["model_versions"]) == args.requests, "one version per run"
            return rows
        finally:
            process.terminate()
            process.wait(timeout=30)
            if drop is not None:
                await _pg_drop(args.pg_admin_url, drop)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--requests", type=int, default=320, help="requests per scenario")
    parser.add_argument("--pg-admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    rows = asyncio.run(bench(args))
    print(
        f"\nGate webhook, {args.backend}, {args.workers} worker(s), "
        f"{CONCURRENCY} concurrent signed callers\n"
    )
    print("| scenario | requests | p50 ms | p99 ms | mean ms | req/s |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, n, p50, p99, mean, rps in rows:
        print(f"| {label} | {n} | {p50:.1f} | {p99:.1f} | {mean:.1f} | {rps:.0f} |")


if __name__ == "__main__":
    main()
