"""Per-request fixed cost of mlgate's request path, measured in-process (not collected by pytest).

Drives the ASGI app directly (no HTTP server, no client library): each request is a plain
ASGI scope, one body message and a ``send`` that keeps the status. What is counted is the CPU
of everything mlgate runs for a request: the outer layers (request observer, access line,
Prometheus counters, Host check), Litestar's routing, middleware and guard, authentication
(``--auth``: an administrator's Bearer token) and the handler itself.

    PYTHONPATH=$PWD .venv/bin/python tests/perf/bench_path.py [--auth] [-n 2000]
    valgrind --tool=callgrind .venv/bin/python tests/perf/bench_path.py --ops health -n 500

The numbers are CPU ms per request (``time.process_time``), the best of ``--repeat`` rounds,
so other processes on the machine matter less than they do to wall-clock timings. The
access log goes to /dev/null through the real handler and formatter (``MLGATE_ACCESS_LOG``
on, as by default), so its formatting is counted but no terminal is.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

API = "/api/2.0/mlflow"
ADMIN, PASSWORD = "bench-admin", "bench-admin-password"


class Driver:
    """Sends one request at a time straight into an ASGI app."""

    def __init__(self, app: Any, headers: list[tuple[bytes, bytes]]) -> None:
        self.app = app
        self.headers = headers

    async def request(
        self, method: str, path: str, query: bytes = b"", body: bytes = b""
    ) -> tuple[int, bytes]:
        headers = [(b"host", b"127.0.0.1:5000"), *self.headers]
        if body:
            headers += [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ]
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": query,
            "root_path": "",
            "headers": headers,
            "client": ("127.0.0.1", 40000),
            "server": ("127.0.0.1", 5000),
            "state": {},
        }
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:
                await asyncio.sleep(3600)
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        status = 0
        chunks: list[bytes] = []

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, send)
        return status, b"".join(chunks)

    async def json(self, method: str, path: str, obj: Any = None, query: bytes = b"") -> Any:
        body = json.dumps(obj).encode() if obj is not None else b""
        status, out = await self.request(method, path, query, body)
        if status != 200:
            raise RuntimeError(f"{method} {path}: {status} {out[:300]!r}")
        return json.loads(out) if out else None


async def fixture(driver: Driver) -> dict[str, Any]:
    exp = await driver.json("POST", f"{API}/experiments/create", {"name": "bench-path"})
    run = await driver.json(
        "POST", f"{API}/runs/create", {"experiment_id": exp["experiment_id"], "start_time": 1}
    )
    run_id = run["run"]["info"]["run_id"]
    await driver.json("POST", f"{API}/registered-models/create", {"name": "bench-path-model"})
    await driver.json(
        "POST",
        f"{API}/model-versions/create",
        {"name": "bench-path-model", "source": f"runs:/{run_id}/model", "run_id": run_id},
    )
    return {"run_id": run_id}


def operations(fx: dict[str, Any]) -> dict[str, Callable[[Driver, int], Any]]:
    def health(d: Driver, k: int) -> Any:
        return d.request("GET", "/health")

    def download_uri(d: Driver, k: int) -> Any:
        return d.request(
            "GET", f"{API}/model-versions/get-download-uri", b"name=bench-path-model&version=1"
        )

    def log_metric(d: Driver, k: int) -> Any:
        body = json.dumps(
            {"run_id": fx["run_id"], "key": "m", "value": k * 0.5, "timestamp": 1000 + k, "step": k}
        ).encode()
        return d.request("POST", f"{API}/runs/log-metric", body=body)

    return {"health": health, "download_uri": download_uri, "log_metric": log_metric}


async def mint_token(app: Any) -> bytes:
    basic = base64.b64encode(f"{ADMIN}:{PASSWORD}".encode())
    driver = Driver(app, [(b"authorization", b"Basic " + basic)])
    answer = await driver.json("POST", "/api/2.0/mlgate/tokens/create", {"name": "bench"})
    return b"Bearer " + answer["secret"].encode()


def build_app(args: argparse.Namespace, workdir: Path, url: str) -> Any:
    from gates.server.app import create_app
    from tracking.core.settings import Settings

    settings = Settings(
        database_url=url,
        artifacts_destination=str(workdir / "artifacts"),
        data_dir=str(workdir),
        auth=args.auth,
        admin_username=ADMIN if args.auth else "",
        admin_password=PASSWORD if args.auth else "",
        webhook_worker=False,
        approval_sweep_interval=0,
        audit_checkpoint_interval=0,
        drift_sweep_interval=0,
        staging_sweep_interval=0,
        log_level="warning",
    )
    return create_app(settings)


async def rounds(args: argparse.Namespace, op: Any, driver: Driver, first: int) -> float:
    """The best round's CPU seconds per request."""
    best = float("inf")
    for r in range(args.repeat):
        started = time.process_time()
        for k in range(args.n):
            await op(driver, first + r * args.n + k)
        best = min(best, (time.process_time() - started) / args.n)
    return best


def measure(args: argparse.Namespace, workdir: Path, url: str) -> dict[str, float]:
    """Each op's CPU ms per request. The measured rounds run in their own
    ``run_until_complete`` called through ``operator.call``, so that callgrind can count
    them alone: ``--toggle-collect=_operator_call --dump-after=_operator_call``."""
    import operator

    app = build_app(args, workdir, url)
    loop = asyncio.new_event_loop()
    started, stop = asyncio.Event(), asyncio.Event()

    async def lifespan() -> None:  # entered and left in one task (anyio's rule)
        async with app.lifespan():
            started.set()
            await stop.wait()

    holder = loop.create_task(lifespan())
    loop.run_until_complete(started.wait())
    results: dict[str, float] = {}
    try:
        headers = (
            [(b"authorization", loop.run_until_complete(mint_token(app)))] if args.auth else []
        )
        driver = Driver(app, headers)
        ops = operations(loop.run_until_complete(fixture(driver)))
        for name in args.ops.split(","):
            op = ops[name]

            async def warm_up(op: Any = op, name: str = name) -> None:
                for k in range(50):  # caches, the pool, statement compilation
                    status, out = await op(driver, k)
                    if status != 200:
                        raise RuntimeError(f"{name}: {status} {out[:300]!r}")

            loop.run_until_complete(warm_up())
            profile = None
            if args.profile:
                import cProfile

                profile = cProfile.Profile()
                profile.enable()
            best = operator.call(loop.run_until_complete, rounds(args, op, driver, 50))
            results[name] = best * 1000
            if profile is not None:
                profile.disable()
                profile.dump_stats(f"{args.profile}.{name}.prof")
    finally:
        stop.set()
        loop.run_until_complete(holder)
        loop.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=2000, help="requests per round")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; the best one counts")
    parser.add_argument("--auth", action="store_true", help="auth on, admin Bearer token")
    parser.add_argument("--ops", default="health,download_uri,log_metric")
    parser.add_argument("--profile", default="", help="cProfile the rounds to PREFIX.<op>.prof")
    parser.add_argument("--database-url", default="", help="default: a temp SQLite file")
    args = parser.parse_args()
    # The access line is written (and formatted) as in production, to a sink.
    sink = open(os.devnull, "w")  # noqa: SIM115
    sys.stderr = sink
    try:
        with tempfile.TemporaryDirectory(prefix="mlgate-bench-path-") as tmp:
            os.environ.setdefault("MLGATE_DATA_DIR", tmp)
            from gates.server import migrate

            url = args.database_url or f"sqlite:///{Path(tmp) / 'bench.db'}"
            migrate.upgrade(url)
            results = measure(args, Path(tmp), url)
    finally:
        sys.stderr = sys.__stderr__
    label = "auth on" if args.auth else "auth off"
    for name, ms in results.items():
        print(f"{name:14s} {label}: {ms:.3f} ms CPU/request")


if __name__ == "__main__":
    main()
