"""Runs-table benchmark: the first page of an experiment with 10,000 runs, mlgate against MLflow.

Starts ``mlgate server`` (auth off) and the reference ``mlflow server`` side by side, as in
``bench_tracking.py`` (its ``Server``/``Databases`` helpers: this machine, the same database kind
with a fresh database each, the same ``--workers``), seeds both the same way through the REST API
(``runs/create`` + ``runs/log-batch``: 3 params, 4 metrics, 3 tags each, from a pool of 16
concurrent clients), then times each scenario's first page, ~20 requests per target after 2
warm-ups, the targets interleaved request by request so machine noise lands on all of them:

- mlgate's rendered UI page ``GET /experiments/<id>?...``: wall time, and the server's own time
  from its ``Server-Timing: app;dur=`` header (handler entry to the rendered HTML body);
- mlgate's ``POST /api/2.0/mlflow/runs/search`` with the same body as below (the API ratio);
- the request MLflow's own UI makes for its runs table: ``POST /ajax-api/2.0/mlflow/runs/search``
  with the same experiment, filter, order_by and max_results. MLflow's UI renders the table in
  the browser from that JSON, so its number is the data request only, not a rendered page.

Scenarios (100 rows, the page size MLflow's UI requests, unless noted): the default order (start
time, newest first), sorted by a metric, a filter (metric and param clauses) sorted by a metric,
sorted by a param, and a 500-row page; plus mlgate-only pages (its default 50-row runs page, the
charts page, a 2-run comparison, a run page). The mlgate target: a first page under 300 ms of
server time.

    .venv/bin/python tests/perf/bench_web.py --backend sqlite
    .venv/bin/python tests/perf/bench_web.py --backend postgres
    .venv/bin/python tests/perf/bench_web.py --backend both --runs 10000 --repeat 20

``--reference-runs`` seeds fewer runs into MLflow when its seeding is too slow (the report says
so). ``--servers mlgate`` skips the reference server. The ``mlflow`` executable comes from the
``bench`` extra (``pip install -e '.[dev,bench]'``), next to the running interpreter. Results go
to ``tests/perf/results-web-<backend>.md``. Not collected by pytest (``norecursedirs``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_tracking import (  # the sibling script; sys.path above makes any cwd work
    MLFLOW_ENV,
    Databases,
    Server,
    find_exe,
    free_port,
    git_rev,
    server_argv,
)

PERF_DIR = Path(__file__).resolve().parent
API = "/api/2.0/mlflow"
AJAX_API = "/ajax-api/2.0/mlflow"
SEED_CLIENTS = 16
TARGET_MS = 300.0
UI_PAGE = 100  # the first page MLflow 3.17's UI requests (its bundle: maxResults || 100)
TIMING = re.compile(r"app;dur=([0-9.]+)")
MACHINE_NOTE = "2 cores, noisy; ratios from one run"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- seeding ---------------------------------------------------------------------------------------


def run_specs(count: int) -> list[tuple[int, dict[str, str], dict[str, float], dict[str, str]]]:
    """The same runs for both servers (the first ``n`` of them when a server gets fewer)."""
    rng = random.Random(6)
    return [
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


def seed_runs(url: str, experiment_id: str, count: int, label: str) -> float:
    """``count`` runs with a few params, metrics and tags each, from a thread pool; seconds."""
    specs = run_specs(count)
    chunks = [specs[i::SEED_CLIENTS] for i in range(SEED_CLIENTS)]
    done = 0
    lock = threading.Lock()
    started = time.perf_counter()

    def work(chunk: list[tuple[int, dict[str, str], dict[str, float], dict[str, str]]]) -> None:
        nonlocal done
        with httpx.Client(base_url=url, timeout=300) as client:
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
                with lock:
                    done += 1
                    if done % 2000 == 0:
                        elapsed = time.perf_counter() - started
                        log(f"  {label}: seeded {done}/{count} runs ({elapsed:.0f}s)")

    with ThreadPoolExecutor(SEED_CLIENTS) as pool:
        for _ in pool.map(work, chunks):
            pass
    return time.perf_counter() - started


# --- scenarios -------------------------------------------------------------------------------------

BY_METRIC = "metrics.`acc` DESC"
BY_PARAM = "params.`lr` ASC"
FILTER = "metrics.acc > 0.5 AND params.model = 'rf'"
DEFAULT_ORDER = "attributes.start_time DESC"  # what MLflow's UI sends for its default order


@dataclass
class Scenario:
    label: str
    filter: str
    order_by: str  # "" = the UI's default order (newest first)
    max_results: int

    def ui_path(self, experiment_id: str) -> str:
        query = [f"max_results={self.max_results}"]
        if self.filter:
            query.append(f"filter={quote(self.filter)}")
        if self.order_by:
            query.append(f"order_by={quote(self.order_by)}")
        return f"/experiments/{experiment_id}?{'&'.join(query)}"

    def search_body(self, experiment_id: str) -> dict[str, Any]:
        """The body MLflow's UI posts for this table (and mlgate's API gets the same one)."""
        return {
            "experiment_ids": [experiment_id],
            "filter": self.filter,
            "run_view_type": "ACTIVE_ONLY",
            "max_results": self.max_results,
            "order_by": [self.order_by or DEFAULT_ORDER],
        }


SCENARIOS = [
    Scenario("default order (newest first)", "", "", UI_PAGE),
    Scenario("sorted by a metric", "", BY_METRIC, UI_PAGE),
    Scenario("filter + metric sort", FILTER, BY_METRIC, UI_PAGE),
    Scenario("sorted by a param", "", BY_PARAM, UI_PAGE),
    Scenario("500-row page, default order", "", "", 500),
]


def mlgate_only_pages(experiment_id: str, run_ids: list[str]) -> list[tuple[str, str]]:
    base = f"/experiments/{experiment_id}"
    compare = "&".join(f"run_ids={r}" for r in run_ids[:2])
    return [
        ("runs table, mlgate's default 50-row page", base),
        ("charts page, first 10 runs", f"{base}/charts"),
        ("compare 2 runs", f"/runs/compare?{compare}"),
        ("run page", f"/runs/{run_ids[0]}"),
    ]


# --- measuring -------------------------------------------------------------------------------------


@dataclass
class Target:
    """One request, timed repeatedly: a GET page or a POST of a JSON body."""

    name: str
    client: httpx.Client
    method: str
    path: str
    body: dict[str, Any] | None = None
    html: bool = False
    wall: list[float] = field(default_factory=list)
    server: list[float] = field(default_factory=list)
    size: int = 0
    rows: int = 0
    names: list[str] = field(default_factory=list)

    def once(self, record: bool) -> None:
        started = time.perf_counter()
        if self.method == "GET":
            response = self.client.get(self.path)
        else:
            response = self.client.post(self.path, json=self.body)
        wall = (time.perf_counter() - started) * 1000
        if response.status_code != 200:
            raise RuntimeError(
                f"{self.name} {self.path}: {response.status_code} {response.text[:300]}"
            )
        if not record:
            return
        self.wall.append(wall)
        found = TIMING.search(response.headers.get("server-timing", ""))
        if found is not None:
            self.server.append(float(found.group(1)))
        elif self.html:
            raise RuntimeError(f"{self.path}: no Server-Timing header")
        self.size = len(response.content)
        if self.html:
            self.rows = response.text.count('data-testid="run-row"')
        else:
            runs = response.json().get("runs", [])
            self.rows = len(runs)
            self.names = [r["info"].get("run_name", "") for r in runs]

    def stats(self) -> dict[str, Any]:
        def p90(xs: list[float]) -> float | None:
            if not xs:
                return None
            return statistics.quantiles(xs, n=10)[-1] if len(xs) > 1 else xs[0]

        return {
            "wall_p50": statistics.median(self.wall),
            "wall_p90": p90(self.wall),
            "server_p50": statistics.median(self.server) if self.server else None,
            "server_p90": p90(self.server),
            "bytes": self.size,
            "rows": self.rows,
            "n": len(self.wall),
        }


def measure(targets: list[Target], repeat: int, warmup: int = 2) -> None:
    """Interleave the targets request by request, rotating who goes first."""
    for _ in range(warmup):  # warm caches and compiled statements
        for t in targets:
            t.once(record=False)
    for i in range(repeat):
        k = i % len(targets)
        for t in targets[k:] + targets[:k]:
            t.once(record=True)


# --- one backend -----------------------------------------------------------------------------------


@dataclass
class BackendResult:
    backend: str
    meta: dict[str, str]
    compared: list[tuple[Scenario, dict[str, dict[str, Any]], str]]
    pages: list[tuple[str, dict[str, Any]]]


def bench_backend(backend: str, args: argparse.Namespace) -> BackendResult:
    names = [n for n in ("mlgate", "mlflow") if n in args.servers.split(",")]
    exes = {n: find_exe(n, getattr(args, f"{n}_bin")) for n in names}
    counts = {"mlgate": args.runs, "mlflow": args.reference_runs or args.runs}
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-web-{backend}-"))
    dbs = Databases(backend, workdir, args.pg_admin_url)
    servers: dict[str, Server] = {}
    load0 = os.getloadavg()[0]
    log(f"[{backend}] workdir {workdir}")
    try:
        base_env = {k: v for k, v in os.environ.items() if not k.startswith(("MLGATE_", "MLFLOW_"))}
        for name in names:
            (workdir / name).mkdir()
            url = asyncio.run(dbs.url_for(name))
            port = free_port()
            argv = server_argv(
                name, exes[name], url, str(workdir / name / "artifacts"), port, args.workers
            )
            if name == "mlgate":
                env = {**base_env, "MLGATE_LOG_LEVEL": "warning", "MLGATE_WEBHOOK_WORKER": "false"}
            else:
                env = {**base_env, **MLFLOW_ENV}
            servers[name] = Server(name, argv, env, port, workdir / name / "server.log", url)
        for s in servers.values():
            s.start()

        async def healthy() -> None:
            await asyncio.gather(*(s.wait_healthy() for s in servers.values()))

        asyncio.run(healthy())
        log(f"[{backend}] servers healthy: {', '.join(servers)}")
        urls = {n: f"http://127.0.0.1:{s.port}" for n, s in servers.items()}
        clients = {n: httpx.Client(base_url=u, timeout=600) for n, u in urls.items()}
        versions = {n: c.get("/version").text.strip()[:40] for n, c in clients.items()}
        experiments = {}
        for n, c in clients.items():
            created = c.post(f"{API}/experiments/create", json={"name": "bench-web"})
            created.raise_for_status()
            experiments[n] = str(created.json()["experiment_id"])

        log(f"[{backend}] seeding {', '.join(f'{n} {counts[n]}' for n in servers)} runs")
        with ThreadPoolExecutor(len(servers)) as pool:
            futures = {
                n: pool.submit(seed_runs, urls[n], experiments[n], counts[n], n) for n in servers
            }
            seed_seconds = {n: f.result() for n, f in futures.items()}
        for n, s in servers.items():
            log(f"[{backend}] {n}: seeded {counts[n]} runs in {seed_seconds[n]:.0f}s")
            asyncio.run(dbs.analyze(s.db_url))

        compared = []
        for sc in SCENARIOS:
            targets = []
            if "mlgate" in clients:
                exp = experiments["mlgate"]
                targets += [
                    Target("mlgate UI", clients["mlgate"], "GET", sc.ui_path(exp), html=True),
                    Target(
                        "mlgate API",
                        clients["mlgate"],
                        "POST",
                        f"{API}/runs/search",
                        sc.search_body(exp),
                    ),
                ]
            if "mlflow" in clients:
                body = sc.search_body(experiments["mlflow"])
                targets.append(
                    Target(
                        "MLflow ajax", clients["mlflow"], "POST", f"{AJAX_API}/runs/search", body
                    )
                )
            measure(targets, args.repeat)
            stats = {t.name: t.stats() for t in targets}
            by_name = {t.name: t for t in targets}
            agree = "-"
            if "mlgate API" in by_name and "MLflow ajax" in by_name:
                same = by_name["mlgate API"].names == by_name["MLflow ajax"].names
                agree = "same runs, same order" if same else "DIFFERENT"
            compared.append((sc, stats, agree))
            log(
                f"[{backend}] {sc.label}: "
                + "; ".join(
                    f"{n} wall p50 {s['wall_p50']:.1f} ms"
                    + (f" (server {s['server_p50']:.1f})" if s["server_p50"] is not None else "")
                    for n, s in stats.items()
                )
                + f"; {agree}"
            )

        pages = []
        if "mlgate" in clients:
            first = clients["mlgate"].post(
                f"{API}/runs/search",
                json={"experiment_ids": [experiments["mlgate"]], "max_results": 2},
            )
            run_ids = [r["info"]["run_id"] for r in first.json()["runs"]]
            for label, path in mlgate_only_pages(experiments["mlgate"], run_ids):
                target = Target("mlgate UI", clients["mlgate"], "GET", path, html=True)
                measure([target], args.repeat)
                pages.append((label, target.stats()))
                log(f"[{backend}] {label}: {pages[-1][1]}")
        for c in clients.values():
            c.close()
        for s in servers.values():
            text = s.log_path.read_text(errors="replace")
            if "Traceback" in text:
                log(f"[{backend}] {s.name} logged a traceback:\n{text[-3000:]}")

        workers = f"--workers {args.workers}"
        meta = {
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": f"{MACHINE_NOTE} ({os.cpu_count()} cores; load average {load0:.2f} at "
            f"start, {os.getloadavg()[0]:.2f} at end)",
            "mlgate": f"{versions.get('mlgate', '-')} (git {git_rev()}), `mlgate server {workers}`, "
            "auth off",
            "MLflow": f"{versions.get('mlflow', '-')}, `mlflow server {workers}`, env "
            + " ".join(f"{k}={v}" for k, v in MLFLOW_ENV.items()),
            "database": {
                "sqlite": "a fresh SQLite file per server",
                "postgres": "a fresh PostgreSQL database per server (VACUUM ANALYZE after seeding)",
            }[backend],
            "data": "one experiment per server; 3 params, 4 metrics, 3 tags per run, the same "
            "deterministic runs on both, seeded through runs/create + runs/log-batch from "
            f"{SEED_CLIENTS} concurrent clients",
            "seeding (not measured)": ", ".join(
                f"{n} {counts[n]:,} runs in {seed_seconds[n]:.0f}s" for n in servers
            ),
            "requests": f"{args.repeat} per target and row after 2 warm-ups, sequential (1 "
            "client), the targets of a row interleaved request by request",
        }
        if len(servers) == 2 and counts["mlflow"] != counts["mlgate"]:
            meta["NOTE"] = (
                f"**MLflow was seeded with {counts['mlflow']:,} runs, mlgate with "
                f"{counts['mlgate']:,}** (`--reference-runs`): MLflow searched a smaller table."
            )
        return BackendResult(backend, meta, compared, pages)
    finally:
        for s in servers.values():
            s.stop()
        asyncio.run(dbs.drop_all())
        if args.keep:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


# --- report ----------------------------------------------------------------------------------------


def ms(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.0f}" if x >= 100 else f"{x:.1f}"


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b <= 0:
        return "-"
    r = a / b
    return f"{r:.2f}x" if r >= 0.1 else f"{r:.3f}x"  # 8.8 s against 40 ms is not "0.00x"


def report(result: BackendResult) -> str:
    title = {"sqlite": "SQLite", "postgres": "PostgreSQL"}[result.backend]
    out = [f"# Web UI runs table: mlgate vs MLflow, {title}", ""]
    out += [f"- {k}: {v}" for k, v in result.meta.items()]
    out += [
        "",
        "What is timed. **mlgate UI**: `GET /experiments/<id>?filter=&order_by=&max_results=`, "
        "the whole server-rendered HTML page; *server* is its `Server-Timing: app;dur=` (handler "
        "entry to rendered body), *wall* the client's round trip. **MLflow**: the request MLflow's "
        "own UI makes for its runs table's first page, `POST /ajax-api/2.0/mlflow/runs/search` "
        "with the same experiment, filter, order_by and max_results; MLflow's UI then renders the "
        "table client-side in the browser, which is not included. **mlgate API**: mlgate's `POST "
        "/api/2.0/mlflow/runs/search` with the same body as MLflow's, for an apples-to-apples API "
        "ratio. Run names of the mlgate API and MLflow responses are compared (same seeded data).",
        "",
        "Medians, ms (p90 in the second table):",
        "",
        "| scenario | rows | mlgate UI server | mlgate UI wall | mlgate API wall | MLflow ajax "
        "wall | UI wall / MLflow | UI server / MLflow | API / MLflow API | responses |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    empty: dict[str, Any] = {"wall_p50": None, "wall_p90": None, "server_p50": None}
    for sc, stats, agree in result.compared:
        ui = stats.get("mlgate UI", empty)
        api = stats.get("mlgate API", empty)
        ref = stats.get("MLflow ajax", empty)
        rows = " / ".join(str(s["rows"]) for s in stats.values())
        out.append(
            f"| {sc.label} | {rows} | {ms(ui['server_p50'])} | {ms(ui['wall_p50'])} "
            f"| {ms(api['wall_p50'])} | {ms(ref['wall_p50'])} "
            f"| {ratio(ui['wall_p50'], ref['wall_p50'])} "
            f"| {ratio(ui['server_p50'], ref['wall_p50'])} "
            f"| {ratio(api['wall_p50'], ref['wall_p50'])} | {agree} |"
        )
    out += [
        "",
        "Rows are mlgate UI / mlgate API / MLflow. Filter: `"
        + FILTER
        + "`; metric sort: `"
        + BY_METRIC
        + "`; param sort: `"
        + BY_PARAM
        + "`; default order: `"
        + DEFAULT_ORDER
        + "`, which MLflow's UI sends (mlgate's page uses the same order without it).",
        "",
        "p90 and response sizes:",
        "",
        "| scenario | mlgate UI server p90 | mlgate UI wall p90 | mlgate API wall p90 | MLflow "
        "ajax wall p90 | KB (UI / API / MLflow) |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for sc, stats, _ in result.compared:
        ui = stats.get("mlgate UI", empty)
        api = stats.get("mlgate API", empty)
        ref = stats.get("MLflow ajax", empty)
        kb = " / ".join(f"{s['bytes'] / 1024:.0f}" for s in stats.values())
        out.append(
            f"| {sc.label} | {ms(ui.get('server_p90'))} | {ms(ui['wall_p90'])} "
            f"| {ms(api['wall_p90'])} | {ms(ref['wall_p90'])} | {kb} |"
        )
    if result.pages:
        out += [
            "",
            "mlgate-only pages (no MLflow counterpart measured):",
            "",
            "| page | rows | KB | server p50 | server p90 | wall p50 | wall p90 |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for label, r in result.pages:
            out.append(
                f"| {label} | {r['rows'] or '-'} | {r['bytes'] / 1024:.0f} | {ms(r['server_p50'])} "
                f"| {ms(r['server_p90'])} | {ms(r['wall_p50'])} | {ms(r['wall_p90'])} |"
            )
    first_pages = [
        stats["mlgate UI"]["server_p50"]
        for sc, stats, _ in result.compared
        if "mlgate UI" in stats and sc.max_results <= UI_PAGE
    ]
    first_pages += [r["server_p50"] for label, r in result.pages if label.startswith("runs table")]
    if first_pages:
        verdict = "met" if max(first_pages) < TARGET_MS else "MISSED"
        out += [
            "",
            f"mlgate target (a first runs page, up to {UI_PAGE} rows, in < {TARGET_MS:.0f} ms "
            f"server time, p50): {verdict} (worst {max(first_pages):.1f} ms).",
        ]
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    add = parser.add_argument
    add("--backend", choices=["sqlite", "postgres", "both"], default="both")
    add("--runs", type=int, default=10_000, help="runs seeded into mlgate (and MLflow)")
    add("--reference-runs", type=int, default=0, help="runs seeded into MLflow (default --runs)")
    add("--repeat", type=int, default=20)
    add("--workers", type=int, default=1, help="worker processes, the same for both servers")
    add("--servers", default="mlgate,mlflow", help="'mlgate' alone skips the reference server")
    add("--mlflow-bin", help="the reference 'mlflow' executable (default: next to python)")
    add("--mlgate-bin", help="the 'mlgate' executable (default: next to python)")
    add("--pg-admin-url", default="postgresql://postgres@127.0.0.1:5432",
        help="server URL, without a database, of a role that may create databases")  # fmt: skip
    add("--out", type=Path, help="markdown file (default tests/perf/results-web-<backend>.md)")
    add("--keep", action="store_true", help="keep the temp dir (server logs, SQLite files)")
    args = parser.parse_args()
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    if args.out and len(backends) > 1:
        parser.error("--out needs a single --backend")
    for backend in backends:
        text = report(bench_backend(backend, args))
        print(text)
        out = args.out or PERF_DIR / f"results-web-{backend}.md"
        out.write_text(text)
        log(f"wrote {out}")


if __name__ == "__main__":
    main()
