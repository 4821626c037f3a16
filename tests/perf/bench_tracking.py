"""Side-by-side tracking REST benchmark: mlgate against the reference MLflow server.

Both servers run as subprocesses on this machine, over the same kind of database (fresh
databases for each), either each on its own defaults (``--pairing defaults``) or with the same
worker count (``--pairing equal --workers N``). A raw asyncio HTTP/1.1 keep-alive client
drives MLflow's REST API with 16 concurrent connections, so the load generator's own cost stays
small and is measured (client CPU per request, plus a ceiling against a null server).

    .venv/bin/python tests/perf/bench_tracking.py --backend sqlite --pairing defaults
    .venv/bin/python tests/perf/bench_tracking.py --backend postgres --pairing equal --workers 2

The ``mlflow`` executable is looked up next to the running interpreter (``pip install -e
'.[bench]'``) unless ``--mlflow-bin`` names it. PostgreSQL needs a server that the
``--pg-admin-url`` role can create and drop databases on; the reference server also needs
``psycopg2`` in its environment. Not collected by pytest (``norecursedirs``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

API = "/api/2.0/mlflow"
CONCURRENCY = 16
SEED_RUNS = 10_000
HISTORY_POINTS = 1_000
BATCH_METRICS = 100
FILTER = "metrics.m1 > 0.5 AND params.model = 'rf' AND tags.team = 'a'"
ORDER_BY = ["metrics.m1 DESC"]
PERF_DIR = Path(__file__).resolve().parent
REPO_ROOT = PERF_DIR.parents[1]
CLK_TCK = os.sysconf("SC_CLK_TCK")
sys.path.insert(0, str(PERF_DIR))  # benchlib, the sibling module, from any working directory

from benchlib import (  # noqa: E402
    LoadStats,
    PhaseClock,
    drive,
    log,
    machine_busy_seconds,
    machine_line,
    write_report,
)

Request = tuple[str, str, bytes | None]  # method, path (with query), JSON body


# --- a small keep-alive HTTP/1.1 client --------------------------------------------------------
# httpx costs ~300-500 us of CPU per request; on a 2-core box shared with the server that would
# throttle the faster server. This client costs a few tens of microseconds and is measured.


class HttpError(Exception):
    pass


# Header lines every connection to a port sends (``Authorization`` for an auth-on server), set
# once the server's token exists and before any load; empty for the others.
EXTRA_HEADERS: dict[int, bytes] = {}


class Connection:
    """One persistent HTTP/1.1 connection; requests on it are strictly sequential."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.host_header = f"{host}:{port}".encode()
        self.extra_headers = EXTRA_HEADERS.get(port, b"")
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.reconnects = 0

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port, limit=2**20)
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        try:
            return await self._request(method, path, body)
        except (ConnectionError, asyncio.IncompleteReadError, HttpError):
            # An idle keep-alive connection the server timed out: reconnect once and retry.
            self.close()
            self.reconnects += 1
            return await self._request(method, path, body)

    async def _request(self, method: str, path: str, body: bytes | None) -> tuple[int, bytes]:
        if self.writer is None:
            await self.open()
        assert self.reader is not None and self.writer is not None
        head = b"%s %s HTTP/1.1\r\nHost: %s\r\nAccept: */*\r\n%s" % (
            method.encode(),
            path.encode(),
            self.host_header,
            self.extra_headers,
        )
        if body is not None:
            head += b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
        self.writer.write(head + b"\r\n" + (body or b""))
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
            raise HttpError(f"bad status line {lines[0]!r}")
        status = int(parts[1])
        length = -1
        chunked = close = False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
        if chunked:
            data = bytearray()
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    await self.reader.readuntil(b"\r\n")
                    break
                data += await self.reader.readexactly(size)
                await self.reader.readexactly(2)
            payload = bytes(data)
        elif length >= 0:
            payload = await self.reader.readexactly(length)
        else:
            payload = await self.reader.read()
            close = True
        if close:
            self.close()
        return status, payload


def jbody(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


async def call(conn: Connection, method: str, path: str, obj: Any = None) -> Any:
    status, data = await conn.request(method, path, None if obj is None else jbody(obj))
    if status != 200:
        raise HttpError(f"{method} {path} -> {status}: {data[:300]!r}")
    return json.loads(data) if data.strip() else {}


# --- processes ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _children(pid: int) -> list[int]:
    out: list[int] = []
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(x) for x in f.read().split()]
    return out


def tree_pids(root: int) -> list[int]:
    pids, todo = [], [root]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        todo += _children(pid)
    return pids


async def wait_quiet(own: Callable[[], float], limit: float, budget: float) -> float:
    """Wait (at most ``budget`` s) until other processes use under ``limit`` cores; return it."""
    deadline = time.monotonic() + budget
    while True:
        m0, o0, t0 = machine_busy_seconds(), own(), time.monotonic()
        await asyncio.sleep(1.0)
        other = (machine_busy_seconds() - m0 - (own() - o0)) / (time.monotonic() - t0)
        if other < limit or time.monotonic() > deadline:
            return other
        log(f"  machine busy ({other:.2f} cores used by other processes); waiting")


_NOT_A_BACKEND: dict[str, set[int]] = {}


def postgres_backends(database: str) -> dict[int, float]:
    """CPU seconds of each PostgreSQL backend serving ``database`` (found by process title)."""
    out: dict[int, float] = {}
    needle = f" {database} ".encode()
    skip = _NOT_A_BACKEND.setdefault(database, set())  # keeps the 10 Hz sampling cheap
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in skip:
            continue
        with contextlib.suppress(OSError):
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                title = f.read()
            if not (title.startswith(b"postgres: ") and needle in title):
                if b"postgres" not in title:  # a just-forked backend still has the postmaster's
                    skip.add(int(entry))
                continue
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            out[int(entry)] = (int(fields[11]) + int(fields[12])) / CLK_TCK
    return out


class BackendMeter:
    """CPU of one database's PostgreSQL backends over a phase, including short-lived ones.

    Pool overflow connections come and go during a phase, so the backends are sampled every
    100 ms and a backend that exits keeps its last sample.
    """

    def __init__(self, database: str) -> None:
        self.database = database
        self.start_cpu: dict[int, float] = {}
        self.last_cpu: dict[int, float] = {}
        self.task: asyncio.Task[None] | None = None

    async def _sample(self) -> None:
        while True:
            for pid, cpu in postgres_backends(self.database).items():
                self.start_cpu.setdefault(pid, 0.0)  # born during the phase: count from 0
                self.last_cpu[pid] = cpu
            await asyncio.sleep(0.1)

    def start(self) -> None:
        self.start_cpu = postgres_backends(self.database)
        self.last_cpu = dict(self.start_cpu)
        self.task = asyncio.create_task(self._sample())

    async def stop(self) -> float:
        assert self.task is not None
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        for pid, cpu in postgres_backends(self.database).items():
            self.start_cpu.setdefault(pid, 0.0)
            self.last_cpu[pid] = cpu
        return sum(self.last_cpu[pid] - self.start_cpu[pid] for pid in self.last_cpu)


def tree_cpu_seconds(root: int) -> float:
    """User+system CPU of a live process tree (uvicorn's supervisor and its workers)."""
    ticks = 0
    for pid in tree_pids(root):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
    return ticks / CLK_TCK


@dataclass
class Server:
    name: str
    argv: list[str]
    env: dict[str, str]
    port: int
    log_path: Path
    db_url: str
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = open(self.log_path, "wb")  # noqa: SIM115 - the child owns it for its lifetime
        # A session of its own, so stop() can signal the supervisor and every worker it forked.
        self.proc = subprocess.Popen(
            self.argv,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=self.log_path.parent,
        )
        log.close()

    async def wait_healthy(self, timeout: float = 240.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited early; see {self.log_path}:\n{self.log_tail()}"
                )
            conn = Connection("127.0.0.1", self.port)
            with contextlib.suppress(OSError, HttpError, asyncio.IncompleteReadError):
                status, _ = await conn._request("GET", "/health", None)
                conn.close()
                if status == 200:
                    return
            await asyncio.sleep(0.25)
        raise RuntimeError(f"{self.name} not healthy after {timeout}s; see {self.log_path}")

    def log_tail(self, n: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        return ""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def cpu(self) -> float:
        return tree_cpu_seconds(self.pid)

    def db_meter(self) -> BackendMeter | None:
        """A meter for this server's PostgreSQL backends (None on SQLite: it runs in-process)."""
        if not self.db_url.startswith("postgresql"):
            return None
        return BackendMeter(self.db_url.rsplit("/", 1)[1])

    def db_cpu(self) -> float:
        if not self.db_url.startswith("postgresql"):
            return 0.0
        return sum(postgres_backends(self.db_url.rsplit("/", 1)[1]).values())

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        pgid = self.proc.pid  # the group this script created with start_new_session
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        # Workers can outlive a supervisor killed by signal; sweep the group once more.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)


# --- databases ---------------------------------------------------------------------------------


class Databases:
    """Fresh databases for each server: SQLite files in a temp dir, or PostgreSQL databases."""

    def __init__(self, backend: str, workdir: Path, pg_admin_url: str) -> None:
        self.backend = backend
        self.workdir = workdir
        self.pg_admin_url = pg_admin_url.rstrip("/")
        self.created: list[str] = []

    async def url_for(self, server: str) -> str:
        if self.backend == "sqlite":
            return f"sqlite:///{self.workdir / (server + '.db')}"
        import asyncpg  # mlgate's own PostgreSQL driver

        name = f"bench_{server}_{os.getpid()}_{int(time.time())}"
        conn = await asyncpg.connect(f"{self.pg_admin_url}/postgres")
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        self.created.append(name)
        return f"{self.pg_admin_url}/{name}"

    async def analyze(self, url: str) -> None:
        """Fresh statistics after seeding, so the planner is not judged on an empty-table plan."""
        if self.backend != "postgres":
            return
        import asyncpg

        conn = await asyncpg.connect(url)
        try:
            await conn.execute("VACUUM ANALYZE")
        finally:
            await conn.close()

    async def drop_all(self) -> None:
        if not self.created:
            return
        import asyncpg

        conn = await asyncpg.connect(f"{self.pg_admin_url}/postgres")
        try:
            for name in self.created:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()
        self.created.clear()


# --- seeding -----------------------------------------------------------------------------------


@dataclass
class Fixture:
    """What the benchmark needs from a seeded server."""

    search_experiment: str = ""
    write_experiment: str = ""
    write_runs: list[str] = field(default_factory=list)
    history_run: str = ""
    seed_seconds: float = 0.0


CLIENT_TAGS = [
    {"key": "mlflow.user", "value": "bench"},
    {"key": "mlflow.source.name", "value": "bench_tracking.py"},
    {"key": "mlflow.source.type", "value": "LOCAL"},
]


def run_specs(n: int) -> list[dict[str, Any]]:
    """Deterministic runs (same on both servers): ~1/2 m1>0.5, 1/4 rf, 1/3 team a."""
    rng = random.Random(20240601)
    specs = []
    for i in range(n):
        specs.append(
            {
                "name": f"run-{i:05d}",
                "start_time": 1_700_000_000_000 + i * 1000,
                "tags": [*CLIENT_TAGS, {"key": "team", "value": rng.choice("abc")}],
                "params": [
                    {"key": "model", "value": rng.choice(["rf", "xgb", "lr", "svm"])},
                    {"key": "lr", "value": str(round(rng.uniform(1e-4, 1e-1), 5))},
                    {"key": "depth", "value": str(rng.randint(2, 12))},
                    {"key": "n_estimators", "value": str(rng.choice([50, 100, 200, 400]))},
                ],
                "metrics": [
                    {"key": k, "value": rng.random(), "timestamp": 1_700_000_000_000 + i, "step": 0}
                    for k in ("m1", "m2", "loss")
                ],
            }
        )
    return specs


async def create_run(conn: Connection, experiment_id: str, **extra: Any) -> str:
    body = {"experiment_id": experiment_id, "user_id": "bench", **extra}
    body.setdefault("start_time", int(time.time() * 1000))
    body.setdefault("tags", CLIENT_TAGS)
    out = await call(conn, "POST", f"{API}/runs/create", body)
    return str(out["run"]["info"]["run_id"])


async def seed(
    port: int, specs: list[dict[str, Any]], label: str, prefix: str = "bench"
) -> Fixture:
    t0 = time.monotonic()
    fx = Fixture()
    conn = Connection("127.0.0.1", port)
    new_exp = f"{API}/experiments/create"
    fx.search_experiment = (await call(conn, "POST", new_exp, {"name": f"{prefix}-search"}))[
        "experiment_id"
    ]
    fx.write_experiment = (await call(conn, "POST", new_exp, {"name": f"{prefix}-writes"}))[
        "experiment_id"
    ]
    history_exp = (await call(conn, "POST", new_exp, {"name": f"{prefix}-history"}))[
        "experiment_id"
    ]
    fx.write_runs = [await create_run(conn, fx.write_experiment) for _ in range(CONCURRENCY)]
    fx.history_run = await create_run(conn, history_exp, run_name="history")
    points = [
        {"key": "loss", "value": 1.0 / (s + 1), "timestamp": 1_700_000_000_000 + s, "step": s}
        for s in range(HISTORY_POINTS)
    ]
    await call(conn, "POST", f"{API}/runs/log-batch", {"run_id": fx.history_run, "metrics": points})
    conn.close()

    todo = iter(specs)
    done = 0

    async def worker() -> None:
        nonlocal done
        c = Connection("127.0.0.1", port)
        for spec in todo:  # a shared iterator: each spec goes to exactly one worker
            run_id = await create_run(
                c,
                fx.search_experiment,
                run_name=spec["name"],
                start_time=spec["start_time"],
                tags=spec["tags"],
            )
            await call(
                c,
                "POST",
                f"{API}/runs/log-batch",
                {"run_id": run_id, "params": spec["params"], "metrics": spec["metrics"]},
            )
            done += 1
            if done % 2000 == 0:
                log(f"  {label}: seeded {done}/{len(specs)} runs ({time.monotonic() - t0:.0f}s)")
        c.close()

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    fx.seed_seconds = time.monotonic() - t0
    return fx


# --- operations --------------------------------------------------------------------------------


@dataclass
class Op:
    key: str
    title: str
    kind: str  # "write" (target: >= 10x throughput) or "read" (target: <= 1/10 p50)
    make: Callable[[Fixture, int, int], Request]  # (fixture, client index, sequence number)
    check: Callable[[Any], str]  # a probe response's summary, compared across servers
    target: str


def _now_ms() -> int:
    return int(time.time() * 1000)


def op_create_run(fx: Fixture, _client: int, _seq: int) -> Request:
    body = {
        "experiment_id": fx.write_experiment,
        "user_id": "bench",
        "start_time": _now_ms(),
        "tags": CLIENT_TAGS,
    }
    return "POST", f"{API}/runs/create", jbody(body)


def op_log_metric(fx: Fixture, client: int, seq: int) -> Request:
    run_id = fx.write_runs[client]
    body = {
        "run_id": run_id,
        "run_uuid": run_id,
        "key": "acc",
        "value": (seq % 997) / 997,
        "timestamp": _now_ms(),
        "step": seq,
    }
    return "POST", f"{API}/runs/log-metric", jbody(body)


def op_log_batch(fx: Fixture, client: int, seq: int) -> Request:
    ts = _now_ms()
    metrics = [
        {"key": f"k{i:02d}", "value": ((seq * 31 + i) % 1000) / 1000, "timestamp": ts, "step": seq}
        for i in range(BATCH_METRICS)
    ]
    return (
        "POST",
        f"{API}/runs/log-batch",
        jbody({"run_id": fx.write_runs[client], "metrics": metrics}),
    )


def op_search_filtered(fx: Fixture, _client: int, _seq: int) -> Request:
    body = {
        "experiment_ids": [fx.search_experiment],
        "filter": FILTER,
        "run_view_type": "ACTIVE_ONLY",
        "max_results": 100,
        "order_by": ORDER_BY,
    }
    return "POST", f"{API}/runs/search", jbody(body)


def op_search_page(fx: Fixture, _client: int, _seq: int) -> Request:
    body = {
        "experiment_ids": [fx.search_experiment],
        "filter": "",
        "run_view_type": "ACTIVE_ONLY",
        "max_results": 1000,
    }
    return "POST", f"{API}/runs/search", jbody(body)


def op_history(fx: Fixture, _client: int, _seq: int) -> Request:
    r = fx.history_run
    return (
        "GET",
        f"{API}/metrics/get-history?run_id={r}&run_uuid={r}&metric_key=loss&max_results=25000",
        None,
    )


def _ok(_: Any) -> str:
    return "ok"


def _runs_summary(out: Any) -> str:
    runs = out.get("runs", [])
    names = [r["info"].get("run_name") for r in runs]
    head = ",".join(str(n) for n in names[:3])
    sig = hash(tuple(names)) & 0xFFFFFF
    more = "token" if out.get("next_page_token") else "no token"
    return f"{len(runs)} runs [{head},..] sig={sig:06x} {more}"


def _history_summary(out: Any) -> str:
    pts = out.get("metrics", [])
    steps = [int(p.get("step", 0)) for p in pts]
    return f"{len(pts)} points, steps {min(steps, default=-1)}..{max(steps, default=-1)}"


OPS = [
    Op("create_run", "create run", "write", op_create_run, _ok, ">=10x thr"),
    Op("log_metric", "log-metric", "write", op_log_metric, _ok, ">=10x thr"),
    Op(
        "log_batch", f"log-batch ({BATCH_METRICS} metrics)", "write", op_log_batch, _ok, ">=10x thr"
    ),
    Op(
        "search_filtered",
        "search: 3-clause filter + order_by, 100",
        "read",
        op_search_filtered,
        _runs_summary,
        "<=0.1x p50",
    ),
    Op(
        "search_page",
        "search: one 1,000-run page",
        "read",
        op_search_page,
        _runs_summary,
        "<=0.1x p50",
    ),
    Op(
        "history",
        f"get-history ({HISTORY_POINTS} points)",
        "read",
        op_history,
        _history_summary,
        "(none)",
    ),
]


# --- load --------------------------------------------------------------------------------------


@dataclass
class LoadResult(LoadStats):
    db_cpu: float = 0.0  # PostgreSQL backends serving this server's database
    reconnects: int = 0
    skipped: str = ""

    @property
    def other_cpu(self) -> float:
        """CPU used by neither the server under test nor the load generator: the noise."""
        return max(0.0, self.machine_busy - self.server_cpu - self.db_cpu - self.client_cpu)


async def run_load(
    port: int,
    make: Callable[[int, int], Request],
    n: int,
    concurrency: int,
    warmup: int,
    server_cpu: Callable[[], float],
    profiler: Profiler | None = None,
    db_meter: BackendMeter | None = None,
) -> LoadResult:
    conns = [Connection("127.0.0.1", port) for _ in range(concurrency)]
    await asyncio.gather(*(c.open() for c in conns))
    res = LoadResult(n=n)

    def attempt(record: bool) -> Callable[[int, int], Awaitable[None]]:
        async def one(i: int, k: int) -> None:
            method, path, body = make(i, k)
            t0 = time.perf_counter()
            status, data = await conns[i].request(method, path, body)
            dt = time.perf_counter() - t0
            if not record:
                return
            res.latencies_ms.append(dt * 1000)
            if status != 200:
                res.error(f"{status} {data[:200]!r}")

        return one

    if warmup:
        await drive(concurrency, warmup, attempt(record=False))
    if profiler is not None:
        profiler.start()
    if db_meter is not None:
        db_meter.start()
    clock = PhaseClock(server_cpu)
    await drive(concurrency, n, attempt(record=True))
    clock.stop(res)
    if db_meter is not None:
        res.db_cpu = await db_meter.stop()
    if profiler is not None:
        profiler.stop()
    res.reconnects = sum(c.reconnects for c in conns)
    for c in conns:
        c.close()
    return res


class Profiler:
    """py-spy sampling the mlgate server (all workers) during one measured phase."""

    def __init__(self, py_spy: str, pid: int, output: Path) -> None:
        self.argv = [py_spy, "record", "--pid", str(pid), "--subprocesses", "--rate", "250",
                     "--format", "raw", "--output", str(output)]  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None
        self.output = output

    def start(self) -> None:
        self.proc = subprocess.Popen(
            self.argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        time.sleep(0.5)  # let it attach before the measured phase starts

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


NULL_SERVER = textwrap.dedent(
    """
    import asyncio, sys
    RESP = (b"HTTP/1.1 200 OK\\r\\ncontent-type: application/json\\r\\n"
            b"content-length: 2\\r\\n\\r\\n{}")
    async def handle(r, w):
        try:
            while True:
                head = await r.readuntil(b"\\r\\n\\r\\n")
                n = 0
                for line in head.split(b"\\r\\n"):
                    if line.lower().startswith(b"content-length:"):
                        n = int(line.split(b":")[1])
                if n:
                    await r.readexactly(n)
                w.write(RESP)
        except (asyncio.IncompleteReadError, ConnectionError):
            w.close()
    async def main():
        srv = await asyncio.start_server(handle, "127.0.0.1", int(sys.argv[1]))
        async with srv:
            await srv.serve_forever()
    try:
        import uvloop
        uvloop.run(main())
    except ImportError:
        asyncio.run(main())
    """
)


async def client_ceiling(workdir: Path, n: int) -> LoadResult:
    """The load generator against a null server: its own ceiling and CPU per request."""
    port = free_port()
    srv = Server(
        "null",
        [sys.executable, "-c", NULL_SERVER, str(port)],
        dict(os.environ),
        port,
        workdir / "null.log",
        "",
    )
    srv.start()
    try:
        for _ in range(100):
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            await asyncio.sleep(0.05)
        fx = Fixture(write_runs=["0" * 32] * CONCURRENCY)
        return await run_load(
            port, lambda i, k: op_log_metric(fx, i, k), n, CONCURRENCY, 200, srv.cpu
        )
    finally:
        srv.stop()


# --- report ------------------------------------------------------------------------------------


def fmt_ms(x: float) -> str:
    if x != x:  # NaN
        return "-"
    return f"{x:.1f}" if x >= 10 else f"{x:.2f}"


def fmt_ratio(x: float) -> str:
    if x != x or x in (float("inf"), 0.0):
        return "-"
    return f"{x:.1f}x" if x >= 10 else f"{x:.2f}x"


def ratio(a: float, b: float) -> float:
    return a / b if b and a == a and b == b else float("nan")


def verdict(op: Op, g: LoadResult, m: LoadResult) -> str:
    if op.kind == "write":
        met = g.rps >= 10 * m.rps
    elif op.key == "history":
        return "-"
    else:
        met = g.pct(0.5) <= 0.1 * m.pct(0.5)
    return ("yes" if met else "**NO**") + (" (errors)" if g.errors or m.errors else "")


def render(
    args: argparse.Namespace,
    meta: dict[str, str],
    results: dict[str, dict[str, LoadResult]],
    serial: dict[str, dict[str, LoadResult]],
    probes: dict[str, dict[str, str]],
    ceiling: LoadResult | None,
) -> str:
    missing = LoadResult(skipped="not run")
    pairing = "both on their defaults"
    if args.pairing == "equal":
        pairing = f"{args.workers} vs {args.workers} workers"
    auth = ", mlgate with auth on" if args.auth else ""
    title = f"# Tracking REST benchmark: mlgate vs MLflow ({args.backend}, {pairing}{auth})"
    out = [title, ""]
    out += [f"- {k}: {v}" for k, v in meta.items()]
    out += [
        "",
        f"{CONCURRENCY} concurrent keep-alive clients, closed loop; req/s counts successful "
        "requests; latencies in ms. Ratios are mlgate/MLflow (throughput: higher is better; "
        "p50: lower is better).",
        "",
        "| operation | n | mlgate req/s | MLflow req/s | thr ratio | mlgate p50 | MLflow p50 "
        "| p50 ratio | mlgate p95 | MLflow p95 | target | met |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    cost_rows = []
    for op in OPS:
        if op.key not in results:
            continue
        g = results[op.key].get("mlgate", missing)
        m = results[op.key].get("mlflow", missing)
        if g.skipped or m.skipped:
            sides = (("mlgate", g), ("MLflow", m))
            why = "; ".join(f"{label}: {r.skipped}" for label, r in sides if r.skipped)
            cells = [
                "-" if r.skipped else value(r)
                for value in (lambda r: f"{r.rps:,.1f}", lambda r: fmt_ms(r.pct(0.5)))
                for r in (g, m)
            ]
            n = max(g.n, m.n) or "-"
            out.append(
                f"| {op.title} | {n} | {cells[0]} | {cells[1]} | - | {cells[2]} | {cells[3]} "
                f"| - | - | - | {op.target} | n/a ({why}) |"
            )
            if not g.skipped and g.n:
                cost_rows.append((op, g, m))  # mlgate alone (--servers mlgate): its costs
            continue
        thr = fmt_ratio(ratio(g.rps, m.rps))
        out.append(
            f"| {op.title} | {g.n} | {g.rps:,.0f} | {m.rps:,.1f} | {thr} "
            f"| {fmt_ms(g.pct(0.5))} | {fmt_ms(m.pct(0.5))} "
            f"| {fmt_ratio(ratio(g.pct(0.5), m.pct(0.5)))} "
            f"| {fmt_ms(g.pct(0.95))} | {fmt_ms(m.pct(0.95))} | {op.target} | {verdict(op, g, m)} |"
        )
        cost_rows.append((op, g, m))

    def per(r: LoadResult, cpu: float, scale: float, digits: int = 2) -> str:
        return f"{cpu / r.n * scale:.{digits}f}" if r.n else "-"

    def core(r: LoadResult, cpu: float) -> str:
        return f"{100 * cpu / r.seconds:.0f}%" if r.seconds else "-"

    out += [
        "",
        "Cost per request and noise. Server CPU is user+system time of the server's whole process "
        "tree during the measured phase (steadier than req/s on a shared machine); DB CPU is the "
        "PostgreSQL backends serving that server's database (SQLite runs inside the server); "
        "%core is CPU seconds per wall second; 'other' is CPU used by every other process on the "
        "machine meanwhile (noise); client is this load generator.",
        "",
        "| operation | mlgate CPU ms/req | MLflow CPU ms/req | CPU ratio | DB CPU ms/req "
        "(mlgate / MLflow) | %core (mlgate / MLflow) | other %core (mlgate / MLflow phase) "
        "| client us/req | errors (mlgate / MLflow) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for op, g, m in cost_rows:
        errs = f"{g.errors} / {m.errors}"
        if g.errors or m.errors:
            errs += f": {(g.first_error or m.first_error)[:160]}"
        out.append(
            f"| {op.title} | {per(g, g.server_cpu, 1e3)} | {per(m, m.server_cpu, 1e3)} "
            f"| {fmt_ratio(ratio(g.server_cpu / g.n, m.server_cpu / m.n) if m.n else 0.0)} "
            f"| {per(g, g.db_cpu, 1e3)} / {per(m, m.db_cpu, 1e3)} "
            f"| {core(g, g.server_cpu)} / {core(m, m.server_cpu)} "
            f"| {core(g, g.other_cpu)} / {core(m, m.other_cpu)} "
            f"| {per(g, g.client_cpu, 1e6, 0)} / {per(m, m.client_cpu, 1e6, 0)} | {errs} |"
        )
    if serial:
        out += [
            "",
            "Unloaded latency of the reads (1 client, sequential), ms:",
            "",
            "| operation | n | mlgate p50 | MLflow p50 | p50 ratio | mlgate max | MLflow max |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for op in OPS:
            if op.key not in serial or len(serial[op.key]) < 2:
                continue
            g, m = serial[op.key]["mlgate"], serial[op.key]["mlflow"]
            out.append(
                f"| {op.title} | {g.n} | {fmt_ms(g.pct(0.5))} | {fmt_ms(m.pct(0.5))} "
                f"| {fmt_ratio(ratio(g.pct(0.5), m.pct(0.5)))} "
                f"| {fmt_ms(g.pct(1.0))} | {fmt_ms(m.pct(1.0))} |"
            )
    if probes:
        out += [
            "",
            "Probe responses (same seeded data on both servers, so these should agree):",
            "",
        ]
        for key, per_server in probes.items():
            g_s, m_s = per_server.get("mlgate", "-"), per_server.get("mlflow", "-")
            same = " (match)" if g_s == m_s and g_s != "ok" else ""
            out.append(f"- {key}: mlgate `{g_s}`; MLflow `{m_s}`{same}")
    if ceiling is not None:
        out += [
            "",
            f"Load-generator ceiling (this client, {CONCURRENCY} connections, log-metric bodies, "
            f"against a null HTTP server on the same 2 cores): {ceiling.rps:,.0f} req/s at "
            f"{ceiling.client_cpu / ceiling.n * 1e6:.0f} us of client CPU per request.",
        ]
    return "\n".join(out) + "\n"


# --- main --------------------------------------------------------------------------------------


def find_exe(name: str, explicit: str | None) -> str:
    if explicit:
        return explicit
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if not found:
        raise SystemExit(
            f"cannot find '{name}' next to {sys.executable} or on PATH; "
            f"install it (pip install -e '.[bench]') or pass --{name}-bin"
        )
    return found


def git_rev() -> str:
    def git(*argv: str) -> str:
        done = subprocess.run(["git", "-C", str(REPO_ROOT), *argv], capture_output=True, text=True)
        return done.stdout.strip()

    rev = git("rev-parse", "--short", "HEAD") or "?"
    return rev + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    add = p.add_argument
    add("--backend", choices=["sqlite", "postgres"], default="sqlite")
    add("--pairing", choices=["defaults", "equal"], default="defaults",
        help="defaults: each server on its own defaults (mlgate: no --workers, i.e. "
        "MLGATE_WORKERS' default; mlflow server: its 4 uvicorn workers and its job processes); "
        "equal: both with --workers N and MLflow's job processes off")  # fmt: skip
    add("--workers", type=int, default=2, help="with --pairing equal: workers for both servers")
    add("--auth", action="store_true",
        help="run mlgate with authentication on; every request carries an admin's API token")  # fmt: skip
    add("--requests", type=int, default=2000, help="measured requests per write op (default 2000)")
    add("--search-requests", type=int, help="filtered search (default requests/10, at least 50)")
    add("--page-requests", type=int, help="1,000-run page (default requests/40, at least 30)")
    add("--history-requests", type=int, help="get-history (default requests/4, at least 100)")
    add("--serial-requests", type=int, default=15, help="1-client samples per read op (0: skip)")
    add("--seed-runs", type=int, default=SEED_RUNS, help="runs in the searched experiment")
    add("--ops", default=",".join(o.key for o in OPS), help="comma-separated subset of ops")
    add("--servers", default="mlgate,mlflow", help="'mlgate' alone skips the reference server")
    add("--mlflow-bin", help="the reference 'mlflow' executable (default: next to python)")
    add("--mlgate-bin", help="the 'mlgate' executable (default: next to python)")
    add("--pg-admin-url", default="postgresql://postgres@127.0.0.1:5432",
        help="server URL, without a database, of a role that may create databases")  # fmt: skip
    add("--output", help="markdown file (default tests/perf/results-<backend>-<pairing>.md)")
    add("--py-spy", help="py-spy executable: profile mlgate during each measured phase")
    add("--profile-dir", default="", help="where py-spy writes <op>.txt (default: the temp dir)")
    add("--quiet-wait", type=float, default=90.0,
        help="before each measured phase wait up to this many seconds for other processes to "
        "use under 0.3 cores (the machine is shared)")  # fmt: skip
    add("--keep", action="store_true", help="keep the temp dir (server logs, SQLite files)")
    add("--no-ceiling", action="store_true", help="skip the load-generator ceiling run")
    return p.parse_args(argv)


def server_argv(
    name: str, exe: str, url: str, art: str, port: int, workers: int | None
) -> list[str]:
    """A server's command line; ``workers=None`` leaves the worker count to its default."""
    flag = [] if workers is None else ["--workers", str(workers)]
    if name == "mlgate":
        return [exe, "server", "--host", "127.0.0.1", "--port", str(port), "--database-url", url,
                "--artifacts-destination", art, *flag]  # fmt: skip
    return [exe, "server", "--backend-store-uri", url, "--artifacts-destination", art,
            "--host", "127.0.0.1", "--port", str(port), *flag]  # fmt: skip


# The reference server's environment. Telemetry off (offline box). The background job runner
# off: seven huey processes polling the database, unrelated to the tracking API. MLflow's
# default pool (5 + 10 overflow) is smaller than the 16 clients and answers some requests with
# "QueuePool limit ... reached" after 30 s; a pool that fits gives MLflow its best numbers.
MLFLOW_ENV = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    "MLFLOW_SQLALCHEMYSTORE_POOL_SIZE": str(CONCURRENCY),
    "MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW": str(CONCURRENCY),
}
# On its defaults (``--pairing defaults``) the reference server keeps its job processes, as a
# user who runs ``mlflow server`` gets them; the pool still has to fit the 16 clients.
MLFLOW_DEFAULTS_ENV = {
    k: v for k, v in MLFLOW_ENV.items() if k != "MLFLOW_SERVER_ENABLE_JOB_EXECUTION"
}
BENCH_ADMIN = "bench-admin"


def pairing_label(args: argparse.Namespace) -> str:
    label = "defaults" if args.pairing == "defaults" else f"w{args.workers}"
    return label + ("-auth" if args.auth else "")


def mlgate_auth_env(password: str) -> dict[str, str]:
    """Authentication on, as production runs it, with a first administrator."""
    return {
        "MLGATE_AUTH": "true",
        "MLGATE_ADMIN_USERNAME": BENCH_ADMIN,
        "MLGATE_ADMIN_PASSWORD": password,
    }


async def mint_token(port: int, password: str) -> str:
    """An API token of the bench administrator (created with its password, as the CLI does)."""
    import base64

    basic = base64.b64encode(f"{BENCH_ADMIN}:{password}".encode())
    EXTRA_HEADERS[port] = b"Authorization: Basic %s\r\n" % basic
    conn = Connection("127.0.0.1", port)
    try:
        out = await call(conn, "POST", "/api/2.0/mlgate/tokens/create", {"name": "bench"})
    finally:
        conn.close()
    EXTRA_HEADERS[port] = b"Authorization: Bearer %s\r\n" % str(out["secret"]).encode()
    return str(out["secret"])


async def main_async(args: argparse.Namespace) -> int:
    names = [n for n in ("mlgate", "mlflow") if n in args.servers.split(",")]
    exes = {n: find_exe(n, getattr(args, f"{n}_bin")) for n in names}
    wanted = [o for o in OPS if o.key in set(args.ops.split(","))]
    counts = {
        "create_run": args.requests,
        "log_metric": args.requests,
        "log_batch": args.requests,
        "search_filtered": args.search_requests or max(50, args.requests // 10),
        "search_page": args.page_requests or max(30, args.requests // 40),
        "history": args.history_requests or max(100, args.requests // 4),
    }
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-{args.backend}-"))
    profile_dir = Path(args.profile_dir) if args.profile_dir else workdir / "profiles"
    dbs = Databases(args.backend, workdir, args.pg_admin_url)
    servers: dict[str, Server] = {}
    load0 = os.getloadavg()[0]
    log(f"workdir {workdir}")
    try:
        base_env = {k: v for k, v in os.environ.items() if not k.startswith(("MLGATE_", "MLFLOW_"))}
        workers = None if args.pairing == "defaults" else args.workers
        mlflow_env = MLFLOW_DEFAULTS_ENV if args.pairing == "defaults" else MLFLOW_ENV
        password = secrets.token_urlsafe(18)
        for name in names:
            (workdir / name).mkdir()
            url = await dbs.url_for(name)
            port = free_port()
            argv = server_argv(name, exes[name], url, str(workdir / name / "artifacts"), port,
                               workers)  # fmt: skip
            env = {**base_env, **mlflow_env}
            if name == "mlgate":
                env = {**base_env, **(mlgate_auth_env(password) if args.auth else {})}
            servers[name] = Server(name, argv, env, port, workdir / name / "server.log", url)
        for s in servers.values():
            s.start()
        await asyncio.gather(*(s.wait_healthy() for s in servers.values()))
        log(f"servers healthy: {', '.join(servers)}")
        if args.auth and "mlgate" in servers:
            await mint_token(servers["mlgate"].port, password)
            log("mlgate: authentication on; requests carry an admin API token")
        await asyncio.sleep(3)  # let every worker (and MLflow's job processes) come up
        processes = {n: len(tree_pids(s.pid)) for n, s in servers.items()}

        versions = {}
        for name, s in servers.items():
            c = Connection("127.0.0.1", s.port)
            _, version = await c.request("GET", "/version")
            c.close()
            versions[name] = version.decode(errors="replace").strip()[:40]

        specs = run_specs(args.seed_runs)
        log(f"seeding {args.seed_runs} runs into each server (concurrently)")
        seeded = await asyncio.gather(*(seed(s.port, specs, n) for n, s in servers.items()))
        fixtures = dict(zip(servers, seeded, strict=True))
        for name, s in servers.items():
            log(f"  {name}: seeded in {fixtures[name].seed_seconds:.0f}s")
            await dbs.analyze(s.db_url)

        ceiling = None if args.no_ceiling else await client_ceiling(workdir, 5000)
        if ceiling:
            per_req = ceiling.client_cpu / ceiling.n * 1e6
            log(f"load-generator ceiling {ceiling.rps:,.0f} req/s, {per_req:.0f} us CPU/req")

        results: dict[str, dict[str, LoadResult]] = {}
        serial: dict[str, dict[str, LoadResult]] = {}
        probes: dict[str, dict[str, str]] = {}
        for idx, op in enumerate(wanted):
            results[op.key] = {}
            # Alternate who goes first so slow drift on a noisy machine favours neither side.
            order = list(servers) if idx % 2 == 0 else list(reversed(servers))
            for name in order:
                s, fx = servers[name], fixtures[name]
                conn = Connection("127.0.0.1", s.port)
                method, path, body = op.make(fx, 0, 10**9)
                status, data = await conn.request(method, path, body)
                conn.close()
                if status != 200:
                    text = data[:120].decode(errors="replace")
                    results[op.key][name] = LoadResult(skipped=f"probe {status} {text}")
                    log(f"{op.key} on {name}: probe failed {status} {data[:300]!r}; skipped")
                    continue
                probes.setdefault(op.title, {})[name] = op.check(json.loads(data or b"{}"))
                profiler = None
                if args.py_spy and name == "mlgate":
                    profile_dir.mkdir(parents=True, exist_ok=True)
                    profiler = Profiler(args.py_spy, s.pid, profile_dir / f"{op.key}.txt")
                n = counts[op.key]
                if args.quiet_wait > 0:
                    own = lambda: sum(x.cpu() + x.db_cpu() for x in servers.values())  # noqa: E731
                    await wait_quiet(own, 0.3, args.quiet_wait)
                res = await run_load(
                    s.port,
                    functools.partial(op.make, fx),
                    n,
                    CONCURRENCY,
                    max(CONCURRENCY, n // 20),
                    s.cpu,
                    profiler,
                    s.db_meter(),
                )
                results[op.key][name] = res
                log(
                    f"{op.key:16s} {name:6s} {res.rps:8.1f} req/s  p50 {res.pct(0.5):8.2f} ms  "
                    f"p95 {res.pct(0.95):8.2f} ms  cpu {res.server_cpu / n * 1e3:6.2f} ms/req  "
                    f"db {res.db_cpu / n * 1e3:6.2f} ms/req  errors {res.errors}  "
                    f"other {res.other_cpu / res.seconds * 100:.0f}%core"
                )
                if op.kind == "read" and args.serial_requests:
                    serial.setdefault(op.key, {})[name] = await run_load(
                        s.port,
                        functools.partial(op.make, fx),
                        args.serial_requests,
                        1,
                        2,
                        s.cpu,
                    )

        flags = "(no --workers flag: its default)" if workers is None else f"--workers {workers}"
        auth = " with MLGATE_AUTH=true and a Bearer API token on every request" if args.auth else ""
        meta = {
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": machine_line(load0),
            "mlgate": f"{versions.get('mlgate', '-')} (git {git_rev()}), `mlgate server` {flags}"
            f"{auth}; {processes.get('mlgate', 0)} processes in its tree",
            "MLflow": f"{versions.get('mlflow', '-')}, `mlflow server` {flags} (uvicorn), env "
            + " ".join(f"{k}={v}" for k, v in mlflow_env.items())
            + f"; {processes.get('mlflow', 0)} processes in its tree",
            "database": {
                "sqlite": "a fresh SQLite file per server",
                "postgres": "a fresh PostgreSQL database per server (VACUUM ANALYZE after seeding)",
            }[args.backend],
            "data": f"{args.seed_runs:,} runs in the searched experiment (4 params, 5 tags, 3 "
            f"metrics each) seeded through runs/create + runs/log-batch; a history run with "
            f"{HISTORY_POINTS:,} points; writes go to a third experiment",
            "seeding (not measured)": ", ".join(
                f"{n} {fx.seed_seconds:.0f}s" for n, fx in fixtures.items()
            ),
            "filtered search": f"`{FILTER}`, order_by `{ORDER_BY[0]}`, max_results 100",
            "warm-up": "5% of n (at least 16) requests per op and server, not counted",
        }
        report = render(args, meta, results, serial, probes, ceiling)
        write_report(
            report, args.output, PERF_DIR / f"results-{args.backend}-{pairing_label(args)}.md"
        )
        if args.py_spy:
            log(f"py-spy profiles in {profile_dir}")
        return 0
    finally:
        for s in servers.values():
            s.stop()
        await dbs.drop_all()
        if args.keep or (args.py_spy and not args.profile_dir):
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main_async(args))
    return uvloop.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
