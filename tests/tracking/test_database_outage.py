"""A database that goes away answers 503 with Retry-After, never 500, and comes back by itself.

PostgreSQL: the live server reaches the database through a TCP proxy this test controls; cutting
it resets every open connection and every new one, as a restart or a failover does. The shared
PostgreSQL server itself is never touched. SQLite: another process holds the database's write
lock beyond ``MLGATE_DB_LOCK_TIMEOUT`` (issue 12, case 8).
"""

from __future__ import annotations

import contextlib
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import make_url

from tests.conftest import BACKEND, LiveServer, free_port, start_server, stop_server
from tests.web.support import Browser

ADMIN = "outage-admin"
ADMIN_PASSWORD = "outage-admin-password"
MLGATE = "/api/2.0/mlgate"
API = "/api/2.0/mlflow"


class CuttableProxy:
    """A TCP relay that can drop every connection and refuse (accept, then close) new ones."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.port = free_port()
        self.up = True
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._stopped = False
        threading.Thread(target=self._accept_loop, daemon=True).start()

    def _accept_loop(self) -> None:
        while not self._stopped:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if not self.up:
                client.close()
                continue
            try:
                server = socket.create_connection(self.upstream)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self.up = False
        with self._lock:
            sockets, self._open = self._open, []
        for s in sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def restore(self) -> None:
        self.up = True

    def close(self) -> None:
        self._stopped = True
        self.cut()
        self._listener.close()


def _assert_unavailable_json(resp: httpx.Response) -> None:
    assert resp.status_code == 503, (resp.request.url, resp.status_code, resp.text[:300])
    assert int(resp.headers["Retry-After"]) >= 1
    body = resp.json()
    assert body["error_code"] == "TEMPORARILY_UNAVAILABLE", body
    assert body["message"]


def _assert_unavailable_page(resp: httpx.Response) -> None:
    assert resp.status_code == 503, (resp.request.url, resp.status_code, resp.text[:300])
    assert int(resp.headers["Retry-After"]) >= 1
    assert "text/html" in resp.headers["content-type"]


def _wait_until_ok(check: object, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            check()  # type: ignore[operator]
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.fixture
def proxied_server(database_url: str, tmp_path: Path) -> Iterator[tuple[LiveServer, CuttableProxy]]:
    if BACKEND != "postgres":
        pytest.skip("the TCP proxy stands between mlgate and PostgreSQL")
    url = make_url(database_url)
    proxy = CuttableProxy((url.host or "127.0.0.1", url.port or 5432))
    proxied = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    server = start_server(
        proxied,
        tmp_path,
        extra_env={
            "MLGATE_AUTH": "true",
            "MLGATE_ADMIN_USERNAME": ADMIN,
            "MLGATE_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "MLGATE_WEBHOOK_POLL_INTERVAL": "0.2",
            "MLGATE_APPROVAL_SWEEP_INTERVAL": "0.5",
        },
    )
    yield server, proxy
    stop_server(server)
    proxy.close()


def test_postgres_outage_answers_503_then_recovers_without_restart(
    proxied_server: tuple[LiveServer, CuttableProxy], unique: str
) -> None:
    server, proxy = proxied_server
    api = httpx.Client(base_url=server.url, auth=(ADMIN, ADMIN_PASSWORD), timeout=60)
    browser = Browser(server.url)
    assert browser.login(ADMIN, ADMIN_PASSWORD).status_code == 303

    def reads() -> list[httpx.Response]:
        return [
            api.get("/api/2.0/mlflow/experiments/search", params={"max_results": 5}),
            api.get("/api/2.0/mlflow/registered-models/search"),
            api.get(f"{MLGATE}/approvals/list"),
        ]

    def write(n: int) -> httpx.Response:
        return api.post("/api/2.0/mlflow/experiments/create", json={"name": f"out-{unique}-{n}"})

    model = f"out-{unique}"
    assert api.post(f"{API}/registered-models/create", json={"name": model}).status_code == 200
    experiment_id = write(0).json()["experiment_id"]
    run_id = api.post(f"{API}/runs/create", json={"experiment_id": experiment_id}).json()["run"][
        "info"
    ]["run_id"]

    def hot() -> list[httpx.Response]:
        # The requests served on the driver connection (tracking.core.driver).
        metric = {"run_id": run_id, "key": "m", "value": 1.0, "timestamp": 1}
        return [
            api.post(f"{API}/runs/create", json={"experiment_id": experiment_id}),
            api.post(f"{API}/runs/log-metric", json=metric),
            api.post(f"{API}/registered-models/get-latest-versions", json={"name": model}),
        ]

    for resp in [*reads(), *hot()]:
        assert resp.status_code == 200, resp.text
    assert browser.get("/models").status_code == 200

    proxy.cut()
    for n in range(1, 4):
        for resp in [*reads(), write(n), *hot()]:
            _assert_unavailable_json(resp)
        _assert_unavailable_page(browser.get("/models", follow=False))
        # A fresh client's credentials cannot be checked either: 503, not 401 or 500.
        _assert_unavailable_json(
            httpx.get(
                f"{server.url}/api/2.0/mlflow/experiments/search",
                auth=(ADMIN, "a-wrong-password-1"),
            )
        )
    time.sleep(1.5)  # background loops (webhook worker, approval sweep) fail a few rounds too

    proxy.restore()

    def back() -> None:
        for resp in [*reads(), write(99), *hot()]:
            assert resp.status_code == 200, resp.text

    _wait_until_ok(back)
    assert browser.get("/models").status_code == 200
    created = api.get(
        "/api/2.0/mlflow/experiments/get-by-name", params={"experiment_name": f"out-{unique}-99"}
    )
    assert created.status_code == 200
    # Requests made during the outage wrote nothing.
    missing = api.get(
        "/api/2.0/mlflow/experiments/get-by-name", params={"experiment_name": f"out-{unique}-1"}
    )
    assert missing.status_code == 404
    api.close()
    browser.close()
    log = server.log.read_text(errors="replace")
    assert "Traceback" not in log, log[-3000:]
    assert "INTERNAL_ERROR" not in log, log[-3000:]


def test_sqlite_locked_beyond_the_lock_timeout_answers_503_then_recovers(
    database_url: str, tmp_path: Path, unique: str
) -> None:
    if BACKEND != "sqlite":
        pytest.skip("SQLite's own outage: another process holding the database's lock")
    path = make_url(database_url).database
    assert path
    server = start_server(database_url, tmp_path, extra_env={"MLGATE_DB_LOCK_TIMEOUT": "0.5"})
    try:
        api = httpx.Client(base_url=server.url, timeout=60)

        def write(n: int) -> httpx.Response:
            return api.post(
                "/api/2.0/mlflow/experiments/create", json={"name": f"lock-{unique}-{n}"}
            )

        first = write(0)
        assert first.status_code == 200
        run = api.post(f"{API}/runs/create", json={"experiment_id": first.json()["experiment_id"]})
        metric = {
            "run_id": run.json()["run"]["info"]["run_id"],
            "key": "m",
            "value": 1.0,
            "timestamp": 1,
        }
        # Another process (a backup tool, a second mlgate pointed at the same file) takes the
        # write lock and keeps it.
        holder = sqlite3.connect(path, isolation_level=None, timeout=5)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            for n in range(1, 4):
                _assert_unavailable_json(write(n))
                # The driver connection's writes wait for the lock the same way.
                _assert_unavailable_json(api.post(f"{API}/runs/log-metric", json=metric))
            # Reads go on under WAL.
            assert api.get("/api/2.0/mlflow/experiments/search").status_code == 200
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        _wait_until_ok(lambda: _assert_status(write(99), 200))
        _assert_status(api.post(f"{API}/runs/log-metric", json=metric), 200)
        api.close()
    finally:
        stop_server(server)
    log = server.log.read_text(errors="replace")
    assert "Traceback" not in log, log[-3000:]


def _assert_status(resp: httpx.Response, status: int) -> None:
    assert resp.status_code == status, resp.text
