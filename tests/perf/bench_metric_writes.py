"""Concurrent metric writes in one process: CPU per request, this process's and PostgreSQL's.

Builds the app in-process on a fresh PostgreSQL database (as ``bench_handlers.py``), makes
``--clients`` runs, then ``--clients`` tasks each send ``log-metric`` (or a ``log-batch`` of
``--batch`` metrics) to their own run, one request at a time, through
``httpx.ASGITransport``. Reported per request:

- this process's CPU (``time.process_time``; the test client's share included);
- the PostgreSQL backends' CPU (user + system time of the bench database's backends, read
  from ``/proc``: the server must be on this machine);
- statements sent, per request.

Run the same file against two checkouts (old and new code) back to back::

    PYTHONPATH=/path/to/checkout .venv/bin/python tests/perf/bench_metric_writes.py --batch 1

Not collected by pytest (``norecursedirs``).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from sqlalchemy import event

API = "/api/2.0/mlflow"


def _backend_cpu(pids: set[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


async def _backend_pids(admin: str, name: str) -> set[int]:
    conn = await asyncpg.connect(f"{admin}/postgres")
    try:
        rows = await conn.fetch("SELECT pid FROM pg_stat_activity WHERE datname = $1", name)
    finally:
        await conn.close()
    return {r["pid"] for r in rows}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=4000, help="in all, after warm-up")
    parser.add_argument("--batch", type=int, default=1, help="1: log-metric; more: log-batch")
    parser.add_argument("--pg-admin-url", default="postgresql://postgres@127.0.0.1:5432")
    args = parser.parse_args()

    from gates.server import migrate
    from gates.server.app import create_app
    from tracking.core.settings import Settings

    admin = args.pg_admin_url.rstrip("/")
    name = f"bench_metric_writes_{os.getpid()}_{int(time.time())}"
    conn = await asyncpg.connect(f"{admin}/postgres")
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    workdir = Path(tempfile.mkdtemp(prefix="bench-metric-writes-"))
    try:
        await asyncio.to_thread(migrate.upgrade, f"{admin}/{name}")
        settings = Settings(
            database_url=f"{admin}/{name}",
            artifacts_destination=str(workdir / "artifacts"),
            webhook_worker=False,
            approval_sweep_interval=0,
            staging_sweep_interval=0,
            audit_checkpoint_interval=0,
            access_log=False,
        )
        app = create_app(settings)
        logging.getLogger("httpx").setLevel(logging.WARNING)
        statements = 0

        def count(*_args: Any) -> None:
            nonlocal statements
            statements += 1

        async with app.lifespan():
            event.listen(app.state["db"].write_engine.sync_engine, "before_cursor_execute", count)
            transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
            async with httpx.AsyncClient(transport=transport, base_url="http://x") as client:
                exp = await client.post(f"{API}/experiments/create", json={"name": "bench"})
                eid = exp.json()["experiment_id"]
                runs = []
                for _ in range(args.clients):
                    made = await client.post(f"{API}/runs/create", json={"experiment_id": eid})
                    runs.append(made.json()["run"]["info"]["run_id"])
                step = itertools.count()
                keys = [f"m{i}" for i in range(args.batch)]

                async def writer(run_id: str, n: int) -> None:
                    for _ in range(n):
                        s = next(step)
                        if args.batch == 1:
                            body = {"run_id": run_id, "key": "m", "value": s / 7,
                                    "timestamp": s, "step": s}  # fmt: skip
                            r = await client.post(f"{API}/runs/log-metric", json=body)
                        else:
                            metrics = [{"key": k, "value": s / 7, "timestamp": s, "step": s}
                                       for k in keys]  # fmt: skip
                            body = {"run_id": run_id, "metrics": metrics}
                            r = await client.post(f"{API}/runs/log-batch", json=body)
                        if r.status_code != 200:
                            raise RuntimeError(r.text)

                async def phase(total: int) -> None:
                    per = total // args.clients
                    await asyncio.gather(*(writer(r, per) for r in runs))

                await phase(min(400, args.requests))
                pids = await _backend_pids(admin, name)
                before_db, before_statements = _backend_cpu(pids), statements
                start_cpu, start = time.process_time(), time.perf_counter()
                await phase(args.requests)
                cpu, wall = time.process_time() - start_cpu, time.perf_counter() - start
                pids_after = await _backend_pids(admin, name)
                db_cpu = _backend_cpu(pids | pids_after) - before_db
                n = args.requests // args.clients * args.clients
                op = "log-metric" if args.batch == 1 else f"log-batch ({args.batch} metrics)"
                print(
                    f"{op} clients={args.clients}: process CPU {cpu / n * 1000:.3f} ms/req, "
                    f"PostgreSQL CPU {db_cpu / n * 1000:.3f} ms/req, "
                    f"statements {(statements - before_statements) / n:.2f}/req, "
                    f"{n / wall:.0f} req/s wall (noisy), backends {len(pids | pids_after)}"
                )
    finally:
        conn = await asyncpg.connect(f"{admin}/postgres")
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()


if __name__ == "__main__":
    asyncio.run(main())
