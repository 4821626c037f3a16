"""Pooled PostgreSQL connections the server dropped while idle are replaced before use.

mlgate no longer pings on every checkout (only a connection idle for a while is pinged), so this
guards the promise that pre-ping used to keep: after the database ends every connection of an
idle server, the next requests succeed, none answers 503.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import make_url

from tests.conftest import BACKEND, _pg_admin, start_server, stop_server
from tracking.core.db import PING_IDLE_AFTER_S


@pytest.mark.skipif(BACKEND != "postgres", reason="PostgreSQL backends can be terminated")
def test_connections_killed_while_idle_are_replaced_before_a_request_uses_them(
    make_database: object, tmp_path: Path
) -> None:
    from gates.server import migrate

    url = make_database("pingidle")  # type: ignore[operator]
    migrate.upgrade(url)
    name = make_url(url).database
    server = start_server(url, tmp_path)
    try:
        api = httpx.Client(base_url=server.url, timeout=30)

        def call(n: int) -> int:
            with httpx.Client(base_url=server.url, timeout=30) as c:
                return c.get(
                    "/api/2.0/mlflow/experiments/search", params={"max_results": 1 + n % 3}
                ).status_code

        # Several connections in the pool, all checked in afterwards.
        with ThreadPoolExecutor(8) as pool:
            assert set(pool.map(call, range(40))) == {200}
        _pg_admin(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = '{name}' AND pid <> pg_backend_pid()"
        )
        time.sleep(PING_IDLE_AFTER_S + 0.5)
        statuses = [
            api.post(
                "/api/2.0/mlflow/experiments/create", json={"name": f"after-kill-{i}"}
            ).status_code
            for i in range(5)
        ]
        with ThreadPoolExecutor(8) as pool:
            statuses += list(pool.map(call, range(16)))
        assert statuses == [200] * len(statuses), statuses
        api.close()
    finally:
        stop_server(server)
    assert "Traceback" not in server.log.read_text(errors="replace")
