"""Runs-table benchmark: the first page of an experiment with 10,000 runs, in the web UI.

Starts ``mlgate server`` (auth off) on a fresh database, seeds 10,000 runs into one experiment
through the REST API (``runs/create`` + ``runs/log-batch``: 3 params, 4 metrics, 3 tags each,
from a pool of concurrent clients), then requests ``/experiments/<id>`` one at a time, ~20 times
per scenario, and reports the median and p90 of the server's own time (the page's
``Server-Timing: app;dur=`` header: handler entry to rendered body) and of the wall time seen by
the client. The target is a first page in under 300 ms of server time.

Scenarios: the default order (newest first), sorted by a metric, and a filter (metric and
param clauses) sorted by a metric; plus the charts page of the first 10 runs and a run page.

    .venv/bin/python tests/perf/bench_web.py --backend sqlite
    .venv/bin/python tests/perf/bench_web.py --backend postgres
    .venv/bin/python tests/perf/bench_web.py --backend both --runs 10000 --repeat 20

Not collected by pytest (``norecursedirs``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

REPO_ROOT = Path(__file__).resolve().parents[2]
API = "/api/2.0/mlflow"
SEED_CLIENTS = 16
TARGET_MS = 300.0
TIMING = re.compile(r"app;dur=([0-9.]+)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _pg_admin(admin_url: str, sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def start_server(database_url: str, workdir: Path) -> tuple[subprocess.Popen[bytes], str, Path]:
    port = free_port()
    log = workdir / f"server-{port}.log"
    env = {
        **os.environ,
        "MLGATE_DATABASE_URL": database_url,
        "MLGATE_ARTIFACTS_DESTINATION": str(workdir / "artifacts"),
        "MLGATE_PORT": str(port),
        "MLGATE_HOST": "127.0.0.1",
        "MLGATE_WORKERS": "1",
        "MLGATE_LOG_LEVEL": "warning",
        "MLGATE_WEBHOOK_WORKER": "false",
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "registry.server", "server"],
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"mlgate exited early:\n{log.read_text()}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return process, url, log
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"mlgate did not start:\n{log.read_text()}")


# --- seeding ---------------------------------------------------------------------------------------


def seed_runs(url: str, experiment_id: str, count: int) -> None:
    """``count`` runs with a few params, metrics and tags each, from a thread pool."""
    rng = random.Random(6)
    specs = [
        (
            i,
            {
                "lr": f"{rng.choice([0.1, 0.03, 0.01, 0.003, 0.001])}",
                "model": rng.choice(["rf", "gbm", "mlp", "svm"]),
                "depth": str(rng.randint(2, 12)),
            },
            {
                "acc": rng.random(),
                "auc": rng.random(),
                "loss": rng.random() * 3,
                "f1": rng.random(),
            },
            {"team": rng.choice(["risk", "growth"]), "dataset": f"v{rng.randint(1, 5)}"},
        )
        for i in range(count)
    ]
    chunks = [specs[i::SEED_CLIENTS] for i in range(SEED_CLIENTS)]

    def work(chunk: list[tuple[int, dict[str, str], dict[str, float], dict[str, str]]]) -> None:
        with httpx.Client(base_url=url, timeout=120) as client:
            for i, params, metrics, tags in chunk:
                created = client.post(
                    f"{API}/runs/create",
                    json={
                        "experiment_id": experiment_id,
                        "run_name": f"run-{i:05d}",
                        "start_time": 1_700_000_000_000 + i * 1000,
                    },
                )
                created.raise_for_status()
                run_id = created.json()["run"]["info"]["run_id"]
                logged = client.post(
                    f"{API}/runs/log-batch",
                    json={
                        "run_id": run_id,
                        "params": [{"key": k, "value": v} for k, v in params.items()],
                        "metrics": [
                            {"key": k, "value": v, "timestamp": 1_700_000_000_000, "step": 0}
                            for k, v in metrics.items()
                        ],
                        "tags": [{"key": k, "value": v} for k, v in tags.items()],
                    },
                )
                logged.raise_for_status()

    with ThreadPoolExecutor(SEED_CLIENTS) as pool:
        for _ in pool.map(work, chunks):
            pass


# --- measuring -------------------------------------------------------------------------------------


def measure(client: httpx.Client, path: str, repeat: int) -> dict[str, Any]:
    server: list[float] = []
    wall: list[float] = []
    size = 0
    for _ in range(2):  # warm caches and compiled statements
        client.get(path).raise_for_status()
    for _ in range(repeat):
        started = time.perf_counter()
        response = client.get(path)
        wall.append((time.perf_counter() - started) * 1000)
        response.raise_for_status()
        found = TIMING.search(response.headers.get("server-timing", ""))
        if found is None:
            raise RuntimeError(f"{path}: no Server-Timing header")
        server.append(float(found.group(1)))
        size = len(response.content)
        rows = response.text.count('data-testid="run-row"')
    return {
        "server_p50": statistics.median(server),
        "server_p90": statistics.quantiles(server, n=10)[-1] if len(server) > 1 else server[0],
        "wall_p50": statistics.median(wall),
        "wall_p90": statistics.quantiles(wall, n=10)[-1] if len(wall) > 1 else wall[0],
        "bytes": size,
        "rows": rows,
    }


def scenarios(experiment_id: str, run_ids: list[str]) -> list[tuple[str, str]]:
    base = f"/experiments/{experiment_id}"
    by_metric = quote("metrics.`acc` DESC")
    flt = quote("metrics.acc > 0.5 AND params.model = 'rf'")
    compare = "&".join(f"run_ids={r}" for r in run_ids[:2])
    return [
        ("runs table, default order", base),
        ("runs table, sorted by a metric", f"{base}?order_by={by_metric}"),
        ("runs table, filter + metric sort", f"{base}?filter={flt}&order_by={by_metric}"),
        ("runs table, sorted by a param", f"{base}?order_by={quote('params.`lr` ASC')}"),
        ("runs table, 500 rows", f"{base}?max_results=500"),
        ("charts page, first 10 runs", f"{base}/charts"),
        ("compare 2 runs", f"/runs/compare?{compare}"),
        ("run page", f"/runs/{run_ids[0]}"),
    ]


def bench_backend(backend: str, args: argparse.Namespace) -> list[tuple[str, dict[str, Any]]]:
    workdir = Path(tempfile.mkdtemp(prefix=f"mlgate-bench-web-{backend}-"))
    drop = None
    if backend == "sqlite":
        database_url = f"sqlite:///{workdir / 'mlgate.db'}"
    else:
        name = f"mlgate_bench_web_{uuid.uuid4().hex[:8]}"
        asyncio.run(_pg_admin(args.pg_admin_url, f'CREATE DATABASE "{name}"'))
        database_url = f"{args.pg_admin_url.rsplit('/', 1)[0]}/{name}"
        drop = f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'
    process, url, log = start_server(database_url, workdir)
    try:
        with httpx.Client(base_url=url, timeout=120) as client:
            created = client.post(f"{API}/experiments/create", json={"name": "bench-web"})
            created.raise_for_status()
            experiment_id = created.json()["experiment_id"]
            started = time.perf_counter()
            seed_runs(url, experiment_id, args.runs)
            seeded = time.perf_counter() - started
            print(f"[{backend}] seeded {args.runs} runs in {seeded:.1f}s", file=sys.stderr)
            first = client.get(
                f"{API}/runs/search",
                params={"experiment_ids": experiment_id, "max_results": 2},
            ).json()
            run_ids = [r["info"]["run_id"] for r in first["runs"]]
            results = []
            for label, path in scenarios(experiment_id, run_ids):
                results.append((label, measure(client, path, args.repeat)))
                print(f"[{backend}] {label}: {results[-1][1]}", file=sys.stderr)
        if "Traceback" in log.read_text(errors="replace"):
            print(log.read_text(errors="replace")[-3000:], file=sys.stderr)
        return results
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
        if drop:
            asyncio.run(_pg_admin(args.pg_admin_url, drop))


def report(results: dict[str, list[tuple[str, dict[str, Any]]]], args: argparse.Namespace) -> str:
    lines = [
        f"Web UI pages over one experiment with {args.runs:,} runs (3 params, 4 metrics, "
        f"3 tags each); {args.repeat} sequential requests per row after 2 warm-ups; "
        "1 worker, auth off. Server = the page's Server-Timing (handler entry to rendered "
        "body); wall = the client's round trip.",
        "",
        "| backend | page | rows | KB | server p50 ms | server p90 ms | wall p50 ms | wall p90 ms |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for backend, rows in results.items():
        for label, r in rows:
            lines.append(
                f"| {backend} | {label} | {r['rows']} | {r['bytes'] / 1024:.0f} | "
                f"{r['server_p50']:.1f} | {r['server_p90']:.1f} | {r['wall_p50']:.1f} | "
                f"{r['wall_p90']:.1f} |"
            )
    first_pages = [
        r["server_p50"]
        for rows in results.values()
        for label, r in rows
        if label.startswith("runs table") and "500" not in label
    ]
    verdict = "met" if first_pages and max(first_pages) < TARGET_MS else "MISSED"
    lines += ["", f"Target (first page < {TARGET_MS:.0f} ms server time, p50): {verdict}."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--pg-admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--out", type=Path, default=None, help="also write the table here")
    args = parser.parse_args()
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    results = {backend: bench_backend(backend, args) for backend in backends}
    text = report(results, args)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
