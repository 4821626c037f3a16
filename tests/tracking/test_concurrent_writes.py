"""Concurrent writers from several worker processes never see "database is locked" (or any 5xx)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tests.conftest import start_server, stop_server


def test_two_workers_accept_concurrent_writes(database_url: str, tmp_path: Path) -> None:
    server = start_server(database_url, tmp_path, workers=2)
    # One pooled client shared by the threads (httpx.Client is thread-safe).
    client = httpx.Client(timeout=60, limits=httpx.Limits(max_connections=24))
    try:
        exp = client.post(
            server.api("experiments/create"), json={"name": f"conc-{tmp_path.name}"}
        ).json()["experiment_id"]
        run_ids = [
            client.post(server.api("runs/create"), json={"experiment_id": exp}).json()["run"][
                "info"
            ]["run_id"]
            for _ in range(4)
        ]

        def write(i: int) -> int:
            run_id = run_ids[i % len(run_ids)]
            if i % 3 == 0:
                metrics = [
                    {"key": f"b{i}", "value": float(j), "timestamp": j, "step": j}
                    for j in range(50)
                ]
                body = {
                    "run_id": run_id,
                    "metrics": metrics,
                    "params": [{"key": f"p{i}", "value": "v"}],
                }
                return client.post(server.api("runs/log-batch"), json=body).status_code
            if i % 3 == 1:
                body = {"run_id": run_id, "key": "m", "value": float(i), "timestamp": i, "step": i}
                return client.post(server.api("runs/log-metric"), json=body).status_code
            return client.post(server.api("runs/create"), json={"experiment_id": exp}).status_code

        with ThreadPoolExecutor(max_workers=24) as pool:
            statuses = list(pool.map(write, range(240)))
        assert statuses == [200] * 240

        runs = client.post(
            server.api("runs/search"), json={"experiment_ids": [exp], "max_results": 1000}
        ).json()["runs"]
        assert len(runs) == 4 + 80
        history = []
        for run_id in run_ids:
            page = client.get(
                server.api("metrics/get-history"), params={"run_id": run_id, "metric_key": "m"}
            ).json()
            history += page.get("metrics", [])
        assert len(history) == 80
        assert "database is locked" not in server.log.read_text()
    finally:
        client.close()
        stop_server(server)
