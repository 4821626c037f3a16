"""Side-by-side registry benchmark: resolve, transition and gate promotion, mlgate against MLflow.

Both servers run as subprocesses on this machine over the same kind of database (a fresh one
each) and are driven through MLflow's REST API by 16 concurrent keep-alive clients, with the
raw HTTP/1.1 client of ``bench_tracking.py``. Two pairings:

- ``--pairing defaults``: each server as it starts with no ``--workers`` flag (mlgate: its
  default worker count; ``mlflow server``: uvicorn's 4 workers plus its job processes);
- ``--pairing equal --workers N``: both with N workers, MLflow's job processes off.

Operations (each one timed as the client sees it, all its requests included):

- resolve stage: what ``mlflow.pyfunc.load_model("models:/m/Production")`` sends before
  downloading, ``POST registered-models/get-latest-versions`` then ``GET
  model-versions/get-download-uri``;
- resolve alias: ``models:/m@champion``, ``GET registered-models/alias`` then
  ``get-download-uri``;
- transition: ``model-versions/transition-stage`` to Production with
  ``archive_existing_versions=true``, each client cycling through the versions of its own models;
- gate promote (mlgate only): Standard-Webhooks-signed ``POST /api/2.0/mlgate/gates/promote``,
  a finished run registered as a new version (files frozen and fingerprinted) and moved to
  Staging, 16 callers each on its own model.

``--auth`` runs mlgate with authentication on; every request then carries an administrator's
API token. The report goes to ``tests/perf/results-registry-<backend>-<pairing>[-auth].md``.

    .venv/bin/python tests/perf/bench_registry.py --backend sqlite --pairing defaults
    .venv/bin/python tests/perf/bench_registry.py --backend postgres --pairing equal --workers 2

Not collected by pytest (``norecursedirs``).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

PERF_DIR = Path(__file__).resolve().parent
REPO_ROOT = PERF_DIR.parents[1]
sys.path[:0] = [str(REPO_ROOT), str(PERF_DIR)]

from bench_tracking import (  # noqa: E402
    CONCURRENCY,
    Connection,
    Databases,
    HttpError,
    Server,
    find_exe,
    free_port,
    git_rev,
    tree_pids,
    wait_quiet,
)
from benchlib import (  # noqa: E402
    LoadStats,
    PhaseClock,
    drive,
    log,
    machine_line,
    write_report,
)

from gates.policies.signatures import signed_headers  # noqa: E402

API = "/api/2.0/mlflow"
MLGATE = "/api/2.0/mlgate"
ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts"
VERSIONS_PER_MODEL = 4
ADMIN = ("bench-admin", "bench-admin-password")
TARGET_PROMOTE_P99_MS = 250.0


class Client(Connection):
    """``Connection`` with optional extra request headers (an Authorization line)."""

    def __init__(self, port: int, headers: dict[str, str] | None = None) -> None:
        super().__init__("127.0.0.1", port)
        extra = "".join(f"\r\n{k}: {v}" for k, v in (headers or {}).items())
        # The base client writes "Host: <host_header>\r\n"; extra lines ride on it.
        self.host_header += extra.encode()
        self.base_header = self.host_header

    async def request_with(
        self, lines: bytes, method: str, path: str, body: bytes | None
    ) -> tuple[int, bytes]:
        """One request with extra header lines (``b"Name: value\\r\\n"...``)."""
        self.host_header = self.base_header + b"\r\n" + lines.rstrip(b"\r\n")
        try:
            return await self.request(method, path, body)
        finally:
            self.host_header = self.base_header

    async def call(self, method: str, path: str, obj: Any = None, raw: bytes | None = None) -> Any:
        body = raw if raw is not None else (None if obj is None else json.dumps(obj).encode())
        status, data = await self.request(method, path, body)
        if status != 200:
            raise HttpError(f"{method} {path} -> {status}: {data[:300]!r}")
        return json.loads(data) if data.strip() else {}

    async def seed(self, method: str, path: str, obj: Any = None) -> Any:
        """``call`` for seeding: a 5xx (a shared PostgreSQL out of connections) is retried."""
        for attempt in range(6):
            try:
                return await self.call(method, path, obj)
            except HttpError as exc:
                if " -> 5" not in str(exc) or attempt == 5:
                    raise
                await asyncio.sleep(1 + attempt)
        raise AssertionError("unreachable")


# --- seeding -------------------------------------------------------------------------------------


@dataclass
class Fixture:
    models: list[str] = field(default_factory=list)
    gate_secret: str = ""
    gate_runs: list[list[str]] = field(default_factory=list)  # per caller: finished runs
    gate_model_prefix: str = ""


async def finished_run(c: Client, experiment_id: str, auc: float = 0.95) -> tuple[str, str]:
    """A FINISHED run with metrics, a tag and a small model folder; (run_id, model source)."""
    info = (await c.seed("POST", f"{API}/runs/create", {"experiment_id": experiment_id}))["run"][
        "info"
    ]
    metrics = [
        {"key": "val_auc", "value": auc, "timestamp": 1, "step": 0},
        {"key": "latency_ms", "value": 20.0, "timestamp": 1, "step": 0},
    ]
    tags = [{"key": "git_commit", "value": "abc123"}]
    batch = {"run_id": info["run_id"], "metrics": metrics, "tags": tags}
    await c.seed("POST", f"{API}/runs/log-batch", batch)
    root = info["artifact_uri"].removeprefix("mlflow-artifacts:/").strip("/")
    for name, size in (("MLmodel", 200), ("model.pkl", 16 * 1024)):
        status, data = await c.request("PUT", f"{ARTIFACTS}/{root}/model/{name}", os.urandom(size))
        if status != 200:
            raise HttpError(f"upload -> {status}: {data[:200]!r}")
    done = {"run_id": info["run_id"], "status": "FINISHED"}
    await c.seed("POST", f"{API}/runs/update", done)
    return info["run_id"], info["artifact_uri"].rstrip("/") + "/model"


async def seed_models(port: int, headers: dict[str, str], n_models: int) -> list[str]:
    """``n_models`` models with 4 versions each; v4 in Production, v3 Staging, @champion -> v4."""
    c = Client(port, headers)
    exp = await c.seed("POST", f"{API}/experiments/create", {"name": f"reg-{uuid.uuid4().hex[:8]}"})
    run_id, source = await finished_run(c, exp["experiment_id"])
    c.close()
    names = [f"m{i:04d}-{uuid.uuid4().hex[:4]}" for i in range(n_models)]
    todo = list(names)

    async def worker() -> None:
        c = Client(port, headers)
        while todo:
            name = todo.pop()
            await c.seed("POST", f"{API}/registered-models/create", {"name": name})
            for _ in range(VERSIONS_PER_MODEL):
                body = {"name": name, "source": source, "run_id": run_id}
                await c.seed("POST", f"{API}/model-versions/create", body)
            for version, stage in ((VERSIONS_PER_MODEL, "Production"), (3, "Staging")):
                move: dict[str, Any] = {"name": name, "version": str(version), "stage": stage}
                move["archive_existing_versions"] = False
                await c.seed("POST", f"{API}/model-versions/transition-stage", move)
            alias = {"name": name, "alias": "champion", "version": str(VERSIONS_PER_MODEL)}
            await c.seed("POST", f"{API}/registered-models/alias", alias)
        c.close()

    await asyncio.gather(*(worker() for _ in range(4)))
    return names


async def seed_gate(port: int, headers: dict[str, str], per_caller: int, fx: Fixture) -> None:
    """A glob gate on Staging with a signing secret, and finished runs for each caller."""
    c = Client(port, headers)
    prefix = f"gp{uuid.uuid4().hex[:4]}-"
    gate = {
        "name": f"{prefix}staging",
        "model": f"{prefix}*",
        "target": "Staging",
        "metrics": ["val_auc >= 0.9", "latency_ms <= 50"],
        "required_tags": ["git_commit"],
    }
    await c.seed("POST", f"{MLGATE}/gates/create", gate)
    secret = await c.seed("POST", f"{MLGATE}/gates/secrets/add", {"gate": gate["name"]})
    exp = await c.seed("POST", f"{API}/experiments/create", {"name": f"gate-{prefix}"})
    c.close()
    fx.gate_secret = secret["secret"]["secret"]
    fx.gate_model_prefix = prefix
    fx.gate_runs = [[] for _ in range(CONCURRENCY)]

    async def worker(i: int) -> None:
        c = Client(port, headers)
        for _ in range(per_caller):
            fx.gate_runs[i].append((await finished_run(c, exp["experiment_id"]))[0])
        c.close()

    await asyncio.gather(*(worker(i) for i in range(CONCURRENCY)))


async def admin_token(port: int) -> str:
    basic = base64.b64encode(f"{ADMIN[0]}:{ADMIN[1]}".encode()).decode()
    c = Client(port, {"Authorization": f"Basic {basic}"})
    out = await c.call("POST", f"{MLGATE}/tokens/create", {"name": f"bench-{uuid.uuid4().hex[:6]}"})
    c.close()
    return str(out["secret"])


# --- operations ----------------------------------------------------------------------------------

Step = Callable[[Client, int, int], Awaitable[None]]


def _model(fx: Fixture, client: int, seq: int) -> str:
    return fx.models[(client + CONCURRENCY * seq) % len(fx.models)]


async def _download_uri(c: Client, name: str, version: str) -> None:
    out = await c.call(
        "GET", f"{API}/model-versions/get-download-uri?name={name}&version={version}"
    )
    assert out["artifact_uri"], out


def op_resolve_stage(fx: Fixture) -> Step:
    async def step(c: Client, client: int, seq: int) -> None:
        name = _model(fx, client, seq)
        body = {"name": name, "stages": ["Production"]}
        out = await c.call("POST", f"{API}/registered-models/get-latest-versions", body)
        version = max(int(v["version"]) for v in out["model_versions"])
        await _download_uri(c, name, str(version))

    return step


def op_resolve_alias(fx: Fixture) -> Step:
    async def step(c: Client, client: int, seq: int) -> None:
        name = _model(fx, client, seq)
        out = await c.call("GET", f"{API}/registered-models/alias?name={name}&alias=champion")
        await _download_uri(c, name, out["model_version"]["version"])

    return step


def op_transition(fx: Fixture) -> Step:
    # Client i moves only its own models (i, i+16, ...), so no two clients contend on a model.
    async def step(c: Client, client: int, seq: int) -> None:
        name = fx.models[(client + CONCURRENCY * (seq % 4)) % len(fx.models)]
        # The version as the MLflow client sends it, a string. `mlflow server` 3.17 on
        # PostgreSQL answers every such move with 400 ("operator does not exist: integer <>
        # character varying"), and a JSON number with 400 too (its request validation), so on
        # PostgreSQL its transition row is all errors.
        version = str(1 + (seq // 4) % VERSIONS_PER_MODEL)
        body: dict[str, Any] = {"name": name, "version": version, "stage": "Production"}
        body["archive_existing_versions"] = True
        await c.call("POST", f"{API}/model-versions/transition-stage", body)

    return step


def op_promote(fx: Fixture) -> Step:
    async def step(c: Client, client: int, seq: int) -> None:
        runs = fx.gate_runs[client]
        run = runs[seq % len(runs)]
        body = {
            "model": f"{fx.gate_model_prefix}{client:02d}",
            "target": "Staging",
            "run_id": run,
            "idempotency_key": f"k-{run}-{seq}",
        }
        raw = json.dumps(body).encode()
        headers = signed_headers(fx.gate_secret, f"msg_{uuid.uuid4().hex}", int(time.time()), raw)
        lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode()
        status, data = await c.request_with(lines, "POST", f"{MLGATE}/gates/promote", raw)
        if status != 200:
            raise HttpError(f"promote -> {status}: {data[:300]!r}")

    return step


@dataclass
class Op:
    key: str
    title: str
    make: Callable[[Fixture], Step]
    mlgate_only: bool = False


OPS = [
    Op("resolve_stage", "resolve stage (get-latest-versions + get-download-uri)", op_resolve_stage),
    Op("resolve_alias", "resolve alias (alias + get-download-uri)", op_resolve_alias),
    Op("transition", "transition to Production, archive_existing_versions", op_transition),
    Op("promote", "gate promote (signed, new version + move)", op_promote, mlgate_only=True),
]


# --- load ----------------------------------------------------------------------------------------


@dataclass
class Result(LoadStats):
    @property
    def other_cores(self) -> float:
        """Cores used by neither the server (with its database) nor the load generator."""
        busy = self.machine_busy - self.server_cpu - self.client_cpu
        return max(0.0, busy) / self.seconds if self.seconds else 0.0


async def run_load(
    port: int, headers: dict[str, str], step: Step, n: int, warmup: int, cpu: Callable[[], float]
) -> Result:
    """``n`` operations from 16 keep-alive clients (after ``warmup`` uncounted ones)."""
    conns = [Client(port, headers) for _ in range(CONCURRENCY)]
    res = Result(n=n)
    seqs = [itertools.count() for _ in range(CONCURRENCY)]

    def attempt(record: bool) -> Callable[[int, int], Awaitable[None]]:
        async def one(i: int, _k: int) -> None:
            t0 = time.perf_counter()
            try:
                await step(conns[i], i, next(seqs[i]))
            except Exception as exc:  # any failure counts as an error
                conns[i].close()  # a broken connection is reopened by the next request
                if record:  # warm-up failures are not counted
                    res.error(repr(exc))
                return
            if record:
                res.latencies_ms.append((time.perf_counter() - t0) * 1000)

        return one

    await drive(CONCURRENCY, warmup, attempt(record=False))
    clock = PhaseClock(cpu)
    await drive(CONCURRENCY, n, attempt(record=True))
    clock.stop(res)
    for c in conns:
        c.close()
    return res


# --- servers -------------------------------------------------------------------------------------


def server_argv(
    name: str, exe: str, url: str, art: str, port: int, workers: int | None
) -> list[str]:
    flag = [] if workers is None else ["--workers", str(workers)]
    if name == "mlgate":
        return [exe, "server", "--host", "127.0.0.1", "--port", str(port), "--database-url", url,
                "--artifacts-destination", art, *flag]  # fmt: skip
    return [exe, "server", "--backend-store-uri", url, "--artifacts-destination", art,
            "--host", "127.0.0.1", "--port", str(port), *flag]  # fmt: skip


def server_env(name: str, base: dict[str, str], pairing: str, auth: bool) -> dict[str, str]:
    if name == "mlgate":
        # This checkout's code, not whatever the executable's environment has installed.
        env = {**base, "MLGATE_LOG_LEVEL": "warning", "PYTHONPATH": str(REPO_ROOT)}
        if auth:
            env |= {"MLGATE_AUTH": "true", "MLGATE_ADMIN_USERNAME": ADMIN[0]}
            env["MLGATE_ADMIN_PASSWORD"] = ADMIN[1]
        return env
    # A pool that fits 16 clients (MLflow's 5 + 10 answers some requests "QueuePool limit
    # reached" after 30 s); job processes stay on in the defaults pairing, as users run it.
    env = {**base, "MLFLOW_DISABLE_TELEMETRY": "true"}
    env |= {"MLFLOW_SQLALCHEMYSTORE_POOL_SIZE": "16", "MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW": "16"}
    if pairing == "equal":
        env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    return env


def worker_count(server: Server) -> int:
    """Processes in the server's tree that are Python (supervisor and workers, jobs too)."""
    return len(tree_pids(server.pid))


# --- report --------------------------------------------------------------------------------------


def fmt(x: float) -> str:
    return "-" if x != x else (f"{x:.1f}" if x < 100 else f"{x:.0f}")


def render(
    args: argparse.Namespace, meta: dict[str, str], results: dict[str, dict[str, Result]]
) -> str:
    out = [f"# Registry benchmark: {args.backend}, pairing `{args.pairing}`"
           + (", mlgate auth on" if args.auth else ""), ""]  # fmt: skip
    out += [f"- {k}: {v}" for k, v in meta.items()]
    out += ["", "| operation | server | n | ops/s | p50 ms | p95 ms | p99 ms | server CPU ms/op "
            "| other cores | errors |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for op in OPS:
        for name, r in results.get(op.key, {}).items():
            out.append(
                f"| {op.title} | {name} | {r.n} | {r.rps:.0f} | {fmt(r.pct(0.5))} | "
                f"{fmt(r.pct(0.95))} | {fmt(r.pct(0.99))} | {r.server_cpu / r.n * 1e3:.2f} | "
                f"{r.other_cores:.2f} | {r.errors} |"
            )
    out += ["", "| operation | throughput mlgate/MLflow | p50 MLflow/mlgate | "
            "CPU per op MLflow/mlgate |", "|---|---:|---:|---:|"]  # fmt: skip
    for op in OPS:
        pair = results.get(op.key, {})
        if "mlgate" in pair and "mlflow" in pair and pair["mlflow"].rps and pair["mlgate"].rps:
            g, m = pair["mlgate"], pair["mlflow"]
            cpu = (m.server_cpu / m.n) / (g.server_cpu / g.n) if g.server_cpu else float("nan")
            out.append(f"| {op.title} | {g.rps / m.rps:.1f}x | "
                       f"{m.pct(0.5) / g.pct(0.5):.1f}x | {cpu:.1f}x |")  # fmt: skip
    promote = results.get("promote", {}).get("mlgate")
    if promote is not None:
        verdict = "met" if promote.pct(0.99) <= TARGET_PROMOTE_P99_MS else "missed"
        out += ["", f"Gate promotion p99 {fmt(promote.pct(0.99))} ms against the target "
                f"<= {TARGET_PROMOTE_P99_MS:.0f} ms (PostgreSQL): {verdict}."]  # fmt: skip
    errors = [(k, n, r.first_error) for k, p in results.items() for n, r in p.items() if r.errors]
    for key, name, err in errors:
        out.append(f"- first error, {key} on {name}: `{err}`")
    return "\n".join(out) + "\n"


# --- main ----------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    add = p.add_argument
    add("--backend", choices=["sqlite", "postgres"], default="sqlite")
    add("--pairing", choices=["defaults", "equal"], default="defaults")
    add("--workers", type=int, default=2, help="workers of both servers with --pairing equal")
    add("--auth", action="store_true", help="mlgate with authentication on (admin API token)")
    add("--models", type=int, default=64, help="registered models (4 versions each)")
    add("--requests", type=int, default=1000, help="measured operations per resolve op")
    add("--transitions", type=int, default=640, help="measured transitions")
    add("--promotions", type=int, default=320, help="measured gate promotions (20 per caller)")
    add("--ops", default=",".join(o.key for o in OPS), help="comma-separated subset of ops")
    add("--servers", default="mlgate,mlflow", help="'mlgate' alone skips the reference server")
    add("--mlflow-bin", help="the reference 'mlflow' executable (default: next to python)")
    add("--mlgate-bin", help="the 'mlgate' executable (default: next to python)")
    add("--pg-admin-url", default="postgresql://postgres@127.0.0.1:5432")
    add("--quiet-wait", type=float, default=60.0,
        help="wait up to this many seconds before each phase for the machine to be quiet")  # fmt: skip
    add(
        "--output",
        help="markdown file (default tests/perf/results-registry-<backend>-<pairing>.md)",
    )
    add("--keep", action="store_true", help="keep the temp dir (server logs, SQLite files)")
    return p.parse_args(argv)


async def start(args: argparse.Namespace, workdir: Path, dbs: Databases) -> dict[str, Server]:
    names = [n for n in ("mlgate", "mlflow") if n in args.servers.split(",")]
    workers = None if args.pairing == "defaults" else args.workers
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MLGATE_", "MLFLOW_"))}
    servers: dict[str, Server] = {}
    for name in names:
        (workdir / name).mkdir()
        url, port = await dbs.url_for(name), free_port()
        exe = find_exe(name, getattr(args, f"{name}_bin"))
        argv = server_argv(name, exe, url, str(workdir / name / "artifacts"), port, workers)
        env = server_env(name, base, args.pairing, args.auth)
        servers[name] = Server(name, argv, env, port, workdir / name / "server.log", url)
    for s in servers.values():
        s.start()
    await asyncio.gather(*(s.wait_healthy() for s in servers.values()))
    return servers


async def measure(
    args: argparse.Namespace, servers: dict[str, Server], headers: dict[str, dict[str, str]]
) -> tuple[dict[str, dict[str, Result]], dict[str, float]]:
    fixtures: dict[str, Fixture] = {}
    seed_s: dict[str, float] = {}
    wanted = [o for o in OPS if o.key in args.ops.split(",")]
    for name, s in servers.items():
        t0 = time.monotonic()
        fx = fixtures[name] = Fixture()
        fx.models = await seed_models(s.port, headers[name], args.models)
        if name == "mlgate" and any(o.key == "promote" for o in wanted):
            # One more run per caller for the warm-up round.
            await seed_gate(s.port, headers[name], args.promotions // CONCURRENCY + 1, fx)
        seed_s[name] = time.monotonic() - t0
        log(f"  {name}: seeded in {seed_s[name]:.0f}s")
    results: dict[str, dict[str, Result]] = {}
    counts = {"transition": args.transitions, "promote": args.promotions}
    for idx, op in enumerate(wanted):
        order = list(servers) if idx % 2 == 0 else list(reversed(servers))
        for name in order:
            if op.mlgate_only and name != "mlgate":
                continue
            s = servers[name]
            n = counts.get(op.key, args.requests)
            cpu = lambda s=s: s.cpu() + s.db_cpu()  # noqa: E731
            if args.quiet_wait > 0:
                own = lambda: sum(x.cpu() + x.db_cpu() for x in servers.values())  # noqa: E731
                await wait_quiet(own, 0.3, args.quiet_wait)
            warmup = CONCURRENCY if op.key == "promote" else max(CONCURRENCY, n // 20)
            r = await run_load(s.port, headers[name], op.make(fixtures[name]), n, warmup, cpu)
            results.setdefault(op.key, {})[name] = r
            log(f"{op.key:14s} {name:6s} {r.rps:7.1f} ops/s  p50 {r.pct(0.5):7.1f} ms  "
                f"p99 {r.pct(0.99):7.1f} ms  errors {r.errors}  other {r.other_cores:.2f} cores")  # fmt: skip
    return results, seed_s


async def main_async(args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-registry-{args.backend}-"))
    dbs = Databases(args.backend, workdir, args.pg_admin_url)
    servers: dict[str, Server] = {}
    load0 = os.getloadavg()[0]
    try:
        servers = await start(args, workdir, dbs)
        headers: dict[str, dict[str, str]] = {name: {} for name in servers}
        if args.auth and "mlgate" in servers:
            token = await admin_token(servers["mlgate"].port)
            headers["mlgate"] = {"Authorization": f"Bearer {token}"}
        procs = {name: worker_count(s) for name, s in servers.items()}
        log(f"servers healthy: {procs} processes")
        results, seed_s = await measure(args, servers, headers)
        workers = (
            "(no --workers flag)" if args.pairing == "defaults" else f"--workers {args.workers}"
        )
        meta = {
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": machine_line(load0),
            "mlgate": f"git {git_rev()}, `mlgate server {workers}`"
            + (" with MLGATE_AUTH=true, requests carry an admin API token" if args.auth else ""),
            "MLflow": f"`mlflow server {workers}`"
            + (", job processes on" if args.pairing == "defaults" else ", job execution off")
            + ", pool 16 + 16",
            "processes at start": ", ".join(f"{k} {v}" for k, v in procs.items()),
            "database": "a fresh SQLite file per server"
            if args.backend == "sqlite"
            else "a fresh PostgreSQL database per server",
            "data": f"{args.models} models x {VERSIONS_PER_MODEL} versions (Production, Staging, "
            "@champion set); 16 keep-alive clients",
            "seeding (not measured)": ", ".join(f"{k} {v:.0f}s" for k, v in seed_s.items()),
            "server CPU": "the server's process tree plus its PostgreSQL backends",
        }
        report = render(args, meta, results)
        suffix = "-auth" if args.auth else ""
        default = PERF_DIR / f"results-registry-{args.backend}-{args.pairing}{suffix}.md"
        write_report(report, args.output, default)
        return 0
    finally:
        for s in servers.values():
            s.stop()
        await dbs.drop_all()
        if args.keep:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(main_async(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
