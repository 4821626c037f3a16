"""search_runs at scale: the 3-clause filtered search over 10k and 100k runs, mlgate vs MLflow.

Both servers start on their defaults over fresh databases of the same kind. Each creates its
schema and one experiment through its own API; then the same runs (deterministic specs from
``bench_tracking.run_specs``: 4 params, 4 tags, 3 metrics each) are bulk-inserted straight into
each server's tables, in the shapes the server itself writes (COPY on PostgreSQL, executemany on
SQLite). The search is measured through HTTP, 1 client, after ``--scales`` runs (cumulative: the
10k are the first 10k of the 100k). Every page is compared across the two servers (same run ids
in the same order, same page-token walk), so a fast wrong answer cannot pass.

    .venv/bin/python tests/perf/bench_search_scale.py --backend postgres
    .venv/bin/python tests/perf/bench_search_scale.py --backend sqlite --scales 10000,100000

``--auth`` adds a third server: mlgate with authentication on, called with a non-admin user's
API token that holds a read/edit grant on the experiment, and reports server CPU per request of
``runs/log-metric`` and ``runs/search`` with auth on against auth off.
Not collected by pytest (``norecursedirs``).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PERF_DIR = Path(__file__).resolve().parent
REPO_ROOT = PERF_DIR.parents[1]
sys.path[:0] = [str(PERF_DIR), str(REPO_ROOT)]
import bench_tracking as bt  # noqa: E402  (the shared HTTP client and process helpers)
from benchlib import log, percentile, write_report  # noqa: E402

API = bt.API
EXPERIMENT = "scale"


def run_uuid(i: int) -> str:
    """The same 32-hex run id in both servers, uncorrelated with start_time."""
    return hashlib.md5(f"scale-run-{i}".encode()).hexdigest()


def rows_for(specs: list[dict[str, Any]], first: int, location: str) -> dict[str, list[tuple]]:
    """Rows keyed by a neutral shape; each server's writer maps them to its own columns."""
    runs, params, tags, metrics = [], [], [], []
    for offset, spec in enumerate(specs):
        i = first + offset
        uid = run_uuid(i)
        start = spec["start_time"]
        runs.append((i, uid, spec["name"], start, start + 60_000, f"{location}/{uid}/artifacts"))
        params.extend((i, uid, p["key"], p["value"]) for p in spec["params"])
        tags.extend((i, uid, t["key"], t["value"]) for t in spec["tags"])
        tags.append((i, uid, "mlflow.runName", spec["name"]))
        metrics.extend(
            (i, uid, m["key"], float(m["value"]), m["timestamp"], m["step"])
            for m in spec["metrics"]
        )
    return {"runs": runs, "params": params, "tags": tags, "metrics": metrics}


# --- writers: one per (server, backend) ----------------------------------------------------------


def _mlgate_tables(rows: dict[str, list[tuple]], eid: int, id_base: int) -> list[tuple]:
    runs = [
        (id_base + i, uid, eid, name, "bench", "FINISHED", start, end, "active", art, None)
        for i, uid, name, start, end, art in rows["runs"]
    ]
    kv = lambda rs: [(id_base + i, k, v) for i, _u, k, v in rs]  # noqa: E731
    latest = [(id_base + i, k, step, ts, v, False) for i, _u, k, v, ts, step in rows["metrics"]]
    hist = [(id_base + i, k, step, ts, v, False) for i, _u, k, v, ts, step in rows["metrics"]]
    run_cols = ["id", "run_uuid", "experiment_id", "name", "user_id", "status", "start_time",
                "end_time", "lifecycle_stage", "artifact_uri", "deleted_time"]  # fmt: skip
    metric_cols = ["run_id", "key", "step", "timestamp", "value", "is_nan"]
    return [
        ("runs", run_cols, runs),
        ("params", ["run_id", "key", "value"], kv(rows["params"])),
        ("tags", ["run_id", "key", "value"], kv(rows["tags"])),
        ("latest_metrics", metric_cols, latest),
        ("metrics", metric_cols, hist),
    ]


def _mlflow_tables(rows: dict[str, list[tuple]], eid: int) -> list[tuple]:
    runs = [
        (uid, name, "UNKNOWN", "", "", "bench", "FINISHED", start, end, "", "active", art, eid)
        for _i, uid, name, start, end, art in rows["runs"]
    ]
    run_cols = ["run_uuid", "name", "source_type", "source_name", "entry_point_name", "user_id",
                "status", "start_time", "end_time", "source_version", "lifecycle_stage",
                "artifact_uri", "experiment_id"]  # fmt: skip
    kv = lambda rs: [(k, v, uid) for _i, uid, k, v in rs]  # noqa: E731
    metric = [(k, v, ts, uid, step, False) for _i, uid, k, v, ts, step in rows["metrics"]]
    latest = [(k, v, ts, step, False, uid) for _i, uid, k, v, ts, step in rows["metrics"]]
    return [
        ("runs", run_cols, runs),
        ("params", ["key", "value", "run_uuid"], kv(rows["params"])),
        ("tags", ["key", "value", "run_uuid"], kv(rows["tags"])),
        ("metrics", ["key", "value", "timestamp", "run_uuid", "step", "is_nan"], metric),
        ("latest_metrics", ["key", "value", "timestamp", "step", "is_nan", "run_uuid"], latest),
    ]


async def _write_postgres(url: str, tables: list[tuple], serial: str | None) -> None:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        async with conn.transaction():
            for table, cols, records in tables:
                await conn.copy_records_to_table(table, records=records, columns=cols)
            if serial:  # ids were given explicitly: move the identity past them
                await conn.execute(
                    f"SELECT setval(pg_get_serial_sequence('{serial}', 'id'), "
                    f"(SELECT max(id) FROM {serial}))"
                )
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()


def _write_sqlite(url: str, tables: list[tuple]) -> None:
    conn = sqlite3.connect(url.removeprefix("sqlite:///"))
    try:
        with conn:
            for table, cols, records in tables:
                marks = ",".join("?" * len(cols))
                quoted = ",".join(f'"{c}"' for c in cols)
                conn.executemany(f"INSERT INTO {table} ({quoted}) VALUES ({marks})", records)
        conn.execute("ANALYZE")
    finally:
        conn.close()


async def _max_run_id(url: str) -> int:
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        try:
            return int(conn.execute("SELECT coalesce(max(id), 0) FROM runs").fetchone()[0])
        finally:
            conn.close()
    import asyncpg

    pg = await asyncpg.connect(url)
    try:
        return int(await pg.fetchval("SELECT coalesce(max(id), 0) FROM runs"))
    finally:
        await pg.close()


async def bulk_seed(
    server: str, url: str, eid: int, location: str, specs: list, first: int
) -> None:
    rows = rows_for(specs, first, location)
    if server == "mlflow":
        tables = _mlflow_tables(rows, eid)
        serial = None
    else:
        base = await _max_run_id(url) + 1 - first
        tables = _mlgate_tables(rows, eid, base)
        serial = "runs"
    if url.startswith("sqlite"):
        await asyncio.to_thread(_write_sqlite, url, tables)
    else:
        await _write_postgres(url, tables, serial)


# --- measuring -----------------------------------------------------------------------------------


class AuthConnection(bt.Connection):
    """bt.Connection with an Authorization header on every request."""

    def __init__(self, host: str, port: int, authorization: str | None = None) -> None:
        super().__init__(host, port)
        if authorization:
            self.host_header += b"\r\nAuthorization: " + authorization.encode()


def search_body(eid: str, page_token: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "experiment_ids": [eid],
        "filter": bt.FILTER,
        "order_by": bt.ORDER_BY,
        "max_results": 100,
    }
    if page_token:
        body["page_token"] = page_token
    return body


async def walk_pages(conn: bt.Connection, eid: str, pages: int) -> list[list[str]]:
    """The run ids of the first ``pages`` pages, following page tokens."""
    out: list[list[str]] = []
    token = None
    for _ in range(pages):
        page = await bt.call(conn, "POST", f"{API}/runs/search", search_body(eid, token))
        out.append([r["info"]["run_id"] for r in page.get("runs", [])])
        token = page.get("next_page_token")
        if not token:
            break
    return out


async def time_search(conn: bt.Connection, eid: str, n: int) -> list[float]:
    body = bt.jbody(search_body(eid))
    for _ in range(3):  # warm caches and prepared statements
        await conn.request("POST", f"{API}/runs/search", body)
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        status, data = await conn.request("POST", f"{API}/runs/search", body)
        samples.append((time.perf_counter() - t0) * 1000)
        if status != 200:
            raise bt.HttpError(f"search -> {status}: {data[:200]!r}")
    return samples


async def mlgate_plan(url: str, eid: str) -> dict[str, Any]:
    """EXPLAIN (ANALYZE, BUFFERS) of mlgate's own search statement (PostgreSQL): the database
    time, and the pages it touched, which unlike time do not depend on the machine's load."""
    import asyncpg
    from sqlalchemy.dialects import postgresql

    from tracking.search import run_search_select

    stmt = run_search_select([int(eid)], bt.FILTER, bt.ORDER_BY, "ACTIVE_ONLY").limit(101)
    sql = str(stmt.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}))
    conn = await asyncpg.connect(url)
    try:
        raw = await conn.fetchval(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {sql}")
    finally:
        await conn.close()
    top = (json.loads(raw) if isinstance(raw, str) else raw)[0]
    plan = top["Plan"]
    return {
        "ms": top["Execution Time"],
        "pages": plan.get("Shared Hit Blocks", 0) + plan.get("Shared Read Blocks", 0),
    }


async def cpu_per_request(
    server: bt.Server, conn: bt.Connection, requests: list[tuple[str, str, bytes]]
) -> float:
    """Server CPU (user+sys of its process tree, plus its PostgreSQL backends) per request, us."""
    for method, path, body in requests[:20]:
        await conn.request(method, path, body)
    cpu0, db0 = server.cpu(), server.db_cpu()
    for method, path, body in requests:
        status, data = await conn.request(method, path, body)
        if status != 200:
            raise bt.HttpError(f"{path} -> {status}: {data[:200]!r}")
    used = server.cpu() - cpu0 + server.db_cpu() - db0
    return used / len(requests) * 1e6


# --- auth setup ----------------------------------------------------------------------------------


def mlgate_cli(url: str, *argv: str) -> str:
    import subprocess

    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "MLGATE_DATABASE_URL": url}
    done = subprocess.run(
        [sys.executable, "-m", "gates.server", *argv],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO_ROOT,
    )
    return done.stdout


async def setup_token(server_url: str) -> str:
    """A non-admin, token-only user with an editor grant on the experiment; its token."""
    await asyncio.to_thread(mlgate_cli, server_url, "users", "create", "bench", "--no-password")
    await asyncio.to_thread(
        mlgate_cli, server_url, "grants", "add", "bench", "experiment", EXPERIMENT, "editor"
    )
    out = await asyncio.to_thread(mlgate_cli, server_url, "tokens", "create", "bench", "bench")
    return out.strip().splitlines()[-1].strip()


# --- the run -------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backend", choices=("sqlite", "postgres"), default="postgres")
    p.add_argument("--scales", default="10000,100000", help="cumulative run counts")
    p.add_argument("--requests", type=int, default=60, help="timed searches per server and scale")
    p.add_argument("--servers", default="mlgate,mlflow")
    p.add_argument("--auth", action="store_true", help="also measure auth-on vs auth-off CPU")
    p.add_argument("--auth-requests", type=int, default=1000)
    p.add_argument("--pg-admin-url", default="postgresql://postgres@127.0.0.1:5432")
    p.add_argument("--mlflow-bin", default=None)
    p.add_argument("--out", default=None, help="markdown results (default: results-search-...)")
    return p.parse_args(argv)


def mlgate_argv(url: str, art: str, port: int) -> list[str]:
    return [sys.executable, "-m", "gates.server", "server", "--host", "127.0.0.1",
            "--port", str(port), "--database-url", url, "--artifacts-destination", art]  # fmt: skip


def mlflow_argv(exe: str, url: str, art: str, port: int) -> list[str]:
    # mlflow server's own defaults (4 uvicorn workers); job execution and telemetry off.
    return [exe, "server", "--backend-store-uri", url, "--artifacts-destination", art,
            "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip


async def start_servers(
    args: argparse.Namespace, dbs: bt.Databases, workdir: Path
) -> dict[str, bt.Server]:
    names = [n for n in ("mlgate", "mlflow") if n in args.servers.split(",")]
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("MLGATE_", "MLFLOW_"))}
    servers: dict[str, bt.Server] = {}
    for name in names:
        (workdir / name).mkdir()
        url = await dbs.url_for(name)
        port = bt.free_port()
        art = str(workdir / name / "artifacts")
        if name == "mlgate":
            argv = mlgate_argv(url, art, port)
            env = {**base_env, "PYTHONPATH": str(REPO_ROOT)}
        else:
            argv = mlflow_argv(bt.find_exe("mlflow", args.mlflow_bin), url, art, port)
            env = {
                **base_env,
                "MLFLOW_DISABLE_TELEMETRY": "true",
                "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            }
        servers[name] = bt.Server(name, argv, env, port, workdir / name / "server.log", url)
    for s in servers.values():
        s.start()
    await asyncio.gather(*(s.wait_healthy() for s in servers.values()))
    if args.auth and "mlgate" in servers:
        plain = servers["mlgate"]
        (workdir / "mlgate-auth").mkdir()
        port = bt.free_port()
        env = {**plain.env, "MLGATE_AUTH": "true", "MLGATE_ADMIN_USERNAME": "root",
               "MLGATE_ADMIN_PASSWORD": "bench-root-password"}  # fmt: skip
        argv = mlgate_argv(plain.db_url, str(workdir / "mlgate" / "artifacts"), port)
        auth = bt.Server(
            "mlgate-auth", argv, env, port, workdir / "mlgate-auth" / "log", plain.db_url
        )
        auth.start()
        await auth.wait_healthy()
        servers["mlgate-auth"] = auth
    return servers


async def create_experiment(port: int) -> tuple[str, str]:
    conn = bt.Connection("127.0.0.1", port)
    try:
        made = await bt.call(conn, "POST", f"{API}/experiments/create", {"name": EXPERIMENT})
        eid = str(made["experiment_id"])
        got = await bt.call(conn, "GET", f"{API}/experiments/get?experiment_id={eid}")
        return eid, got["experiment"]["artifact_location"]
    finally:
        conn.close()


async def measure_scale(
    servers: dict[str, bt.Server], eids: dict[str, str], n_requests: int
) -> dict[str, list[float]]:
    walks: dict[str, list[list[str]]] = {}
    samples: dict[str, list[float]] = {}
    for name in ("mlgate", "mlflow"):
        if name not in servers:
            continue
        conn = bt.Connection("127.0.0.1", servers[name].port)
        try:
            walks[name] = await walk_pages(conn, eids[name], 3)
            samples[name] = await time_search(conn, eids[name], n_requests)
        finally:
            conn.close()
    if len(walks) == 2 and walks["mlgate"] != walks["mlflow"]:
        raise SystemExit("mlgate and mlflow disagree on the search pages: results are wrong")
    if walks:
        first = next(iter(walks.values()))
        log(f"  pages agree: {[len(p) for p in first]} runs on the first pages")
    return samples


async def measure_auth(
    servers: dict[str, bt.Server], eid: str, token: str, n: int
) -> dict[str, dict[str, float]]:
    """Server CPU per request (us) of log-metric and search, auth off and auth on."""
    out: dict[str, dict[str, float]] = {}
    for name, authorization in (("mlgate", None), ("mlgate-auth", f"Bearer {token}")):
        conn = AuthConnection("127.0.0.1", servers[name].port, authorization)
        try:
            made = await bt.call(conn, "POST", f"{API}/runs/create",
                                 {"experiment_id": eid, "start_time": 1})  # fmt: skip
            run_id = made["run"]["info"]["run_id"]
            log_metric = [
                ("POST", f"{API}/runs/log-metric", bt.jbody(
                    {"run_id": run_id, "key": "auth", "value": i, "timestamp": i, "step": i}))
                for i in range(n)
            ]  # fmt: skip
            search = bt.jbody({"experiment_ids": [eid], "max_results": 10})
            searches = [("POST", f"{API}/runs/search", search)] * max(50, n // 4)
            out[name] = {
                "log-metric": await cpu_per_request(servers[name], conn, log_metric),
                "search (10 runs)": await cpu_per_request(servers[name], conn, searches),
            }
        finally:
            conn.close()
    return out


def report(
    args: argparse.Namespace,
    scales: dict[int, dict[str, list[float]]],
    auth: dict[str, dict[str, float]] | None,
    loads: dict[int, float],
    plans: dict[int, dict[str, Any]],
) -> str:
    lines = [
        f"# search_runs at scale ({args.backend})",
        "",
        f"`{bt.FILTER}`, order_by `{bt.ORDER_BY[0]}`, max_results 100; 1 client, "
        f"{args.requests} timed requests per cell; both servers on their defaults.",
        "",
        "| runs | server | p50 ms | p95 ms | mean ms | load avg (1 min) |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for n, per in scales.items():
        for name, s in per.items():
            lines.append(
                f"| {n:,} | {name} | {statistics.median(s):.1f} | {percentile(s, 0.95):.1f} | "
                f"{statistics.fmean(s):.1f} | {loads.get(n, 0):.1f} |"
            )
    if plans:
        lines += ["", "mlgate's statement alone (EXPLAIN ANALYZE, BUFFERS; pages do not depend "
                  "on load):", ""]  # fmt: skip
        lines += [f"- {n:,} runs: {p['ms']:.1f} ms, {p['pages']} pages" for n, p in plans.items()]
    ns = list(scales)
    if len(ns) >= 2:
        lines.append("")
        for name in scales[ns[0]]:
            a, b = statistics.median(scales[ns[0]][name]), statistics.median(scales[ns[-1]][name])
            lines.append(f"- {name}: p50 growth {ns[0]:,} -> {ns[-1]:,} runs: {b / a:.2f}x")
        for n in ns:
            per = scales[n]
            if "mlgate" in per and "mlflow" in per:
                ratio = statistics.median(per["mlflow"]) / statistics.median(per["mlgate"])
                lines.append(f"- {n:,} runs: mlgate is {ratio:.1f}x faster than MLflow (p50)")
    if auth:
        lines += ["", "## Authentication cost (server CPU per request, us; incl. PostgreSQL)", "",
                  "| op | auth off | auth on (bearer token, non-admin) | extra |",
                  "|---|---:|---:|---:|"]  # fmt: skip
        for op in auth["mlgate"]:
            off, on = auth["mlgate"][op], auth["mlgate-auth"][op]
            lines.append(f"| {op} | {off:.0f} | {on:.0f} | {on - off:+.0f} ({on / off - 1:+.0%}) |")
    return "\n".join(lines) + "\n"


async def main_async(args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-search-{args.backend}-"))
    dbs = bt.Databases(args.backend, workdir, args.pg_admin_url)
    servers: dict[str, bt.Server] = {}
    log(f"workdir {workdir}")
    try:
        servers = await start_servers(args, dbs, workdir)
        made = {n: await create_experiment(servers[n].port) for n in ("mlgate", "mlflow")
                if n in servers}  # fmt: skip
        eids = {n: e for n, (e, _loc) in made.items()}
        scales = [int(x) for x in args.scales.split(",")]
        specs = bt.run_specs(scales[-1])
        done = 0
        results: dict[int, dict[str, list[float]]] = {}
        loads: dict[int, float] = {}
        plans: dict[int, dict[str, Any]] = {}
        for n in scales:
            t0 = time.monotonic()
            for name, (eid, location) in made.items():
                await bulk_seed(name, servers[name].db_url, int(eid), location, specs[done:n], done)
            log(f"seeded {n:,} runs in each database ({time.monotonic() - t0:.0f}s)")
            done = n
            results[n] = await measure_scale(servers, eids, args.requests)
            loads[n] = os.getloadavg()[0]
            for name, s in results[n].items():
                log(
                    f"  {name}: p50 {statistics.median(s):.1f} ms, p95 {percentile(s, 0.95):.1f} ms"
                )
            if args.backend == "postgres" and "mlgate" in servers:
                plans[n] = await mlgate_plan(servers["mlgate"].db_url, eids["mlgate"])
                log(f"  mlgate SQL: {plans[n]['ms']:.1f} ms, {plans[n]['pages']} pages")
        auth = None
        if args.auth and "mlgate-auth" in servers:
            token = await setup_token(servers["mlgate"].db_url)
            auth = await measure_auth(servers, eids["mlgate"], token, args.auth_requests)
        text = report(args, results, auth, loads, plans)
        write_report(text, args.out, PERF_DIR / f"results-search-scale-{args.backend}.md")
        return 0
    finally:
        for s in servers.values():
            s.stop()
        await dbs.drop_all()


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(main_async(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
