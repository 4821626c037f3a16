"""Test harness: one switch (MLGATE_TEST_BACKEND=sqlite|postgres) picks the database for everything.

- ``database_url``: a fresh, migrated database for this test session (a temp SQLite file, or a
  new PostgreSQL database on 127.0.0.1:5432 that is dropped afterwards).
- ``session``: an AsyncSession inside a transaction that is rolled back after the test;
  ``app_hooks`` gives it the registry hooks an app gives its sessions.
- ``live_server``: a real ``mlgate server`` process on that database; ``mlflow_tracking``
  points the official MLflow client at it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

# The official client must fail fast in tests instead of retrying 5xx for minutes.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
# Server-made files (the signing key) of every server and app the tests start go to a temp
# folder, never to ./mlgate-data, which is a developer's own `make serve` data.
_TEST_DATA_DIR = tempfile.mkdtemp(prefix="mlgate-test-data-")
os.environ.setdefault("MLGATE_DATA_DIR", _TEST_DATA_DIR)

BACKEND = os.environ.get("MLGATE_TEST_BACKEND", "sqlite").lower()
PG_ADMIN_URL = os.environ.get("MLGATE_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REPO_ROOT = Path(__file__).resolve().parent.parent

if BACKEND not in {"sqlite", "postgres"}:
    raise RuntimeError(f"MLGATE_TEST_BACKEND must be sqlite or postgres, not {BACKEND!r}")


@pytest.fixture(scope="session", autouse=True)
def _server_files_in_a_temp_folder() -> Iterator[None]:
    """Apps built in-process from ``Settings(...)`` fall back to the default data folder."""
    from tracking.core import settings

    saved = settings.DEFAULT_DATA_DIR
    settings.DEFAULT_DATA_DIR = Path(_TEST_DATA_DIR)
    yield
    settings.DEFAULT_DATA_DIR = saved


def pytest_report_header(config: pytest.Config) -> str:
    return f"mlgate test backend: {BACKEND}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pg_admin(sql: str) -> None:
    """Run one admin statement; on its own thread so it works inside a running event loop."""
    import asyncio
    import threading

    import asyncpg

    errors: list[BaseException] = []

    async def run() -> None:
        conn = await asyncpg.connect(PG_ADMIN_URL)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    def target() -> None:
        try:
            asyncio.run(run())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]


def _make_database(tmp_root: Path, label: str) -> tuple[str, object]:
    """Create an empty database; returns its URL and a callable that drops it."""
    if BACKEND == "sqlite":
        path = tmp_root / f"{label}.db"
        return f"sqlite:///{path}", lambda: None
    name = f"mlgate_test_{label}_{uuid.uuid4().hex[:10]}"
    _pg_admin(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]

    def drop() -> None:
        _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return f"{base}/{name}", drop


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from gates.server import migrate

    url, drop = _make_database(tmp_path_factory.mktemp("db"), "main")
    migrate.upgrade(url)
    yield url
    drop()  # type: ignore[operator]


@pytest.fixture(scope="session")
def make_database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """Factory for extra empty (unmigrated) databases, dropped at the end of the session."""
    drops: list[object] = []

    def make(label: str) -> str:
        url, drop = _make_database(tmp_path_factory.mktemp(label), label)
        drops.append(drop)
        return url

    yield make
    for drop in drops:
        drop()  # type: ignore[operator]


@pytest.fixture(scope="session")
async def database(database_url: str) -> AsyncIterator[object]:
    from tracking.core.db import Database

    db = Database(database_url, pool_size=5)
    yield db
    await db.dispose()


@pytest.fixture
async def session(database: object) -> AsyncIterator[object]:
    """A session whose work is rolled back after the test (service tests)."""
    from sqlalchemy.ext.asyncio import AsyncSession

    engine = database.write_engine  # type: ignore[attr-defined]
    async with engine.connect() as conn:
        trans = await conn.begin()
        s = AsyncSession(
            bind=conn, join_transaction_mode="create_savepoint", expire_on_commit=False
        )
        try:
            yield s
        finally:
            await s.close()
            await trans.rollback()


def give_app_hooks(session: Any) -> Any:
    """Give ``session`` the registry hooks an app with auth off gives its sessions (the outbox
    and audit listeners, the gate guard: gates.server.hooks), built by the app's own builder."""
    from gates.server.hooks import registry_hooks
    from registry import events

    hooks = registry_hooks(auth=False)
    events.attach_hooks(session, hooks)
    return hooks


@pytest.fixture
def app_hooks(session: object) -> Any:
    """The test's ``session`` with the app's registry hooks (:func:`give_app_hooks`)."""
    return give_app_hooks(session)


class LiveServer:
    def __init__(self, url: str, process: subprocess.Popen[bytes], artifacts: Path, log: Path):
        self.url = url
        self.process = process
        self.artifacts = artifacts
        self.log = log

    def api(self, path: str) -> str:
        return f"{self.url}/api/2.0/mlflow/{path.lstrip('/')}"


def start_server(
    database_url: str, workdir: Path, *, extra_env: dict[str, str] | None = None, workers: int = 1
) -> LiveServer:
    port = free_port()
    artifacts = workdir / "artifacts"
    log = workdir / f"server-{port}.log"
    env = {
        **os.environ,
        "MLGATE_DATABASE_URL": database_url,
        "MLGATE_ARTIFACTS_DESTINATION": str(artifacts),
        "MLGATE_PORT": str(port),
        "MLGATE_HOST": "127.0.0.1",
        "MLGATE_WORKERS": str(workers),
        "MLGATE_LOG_LEVEL": "warning",
        **(extra_env or {}),
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gates.server", "server"],
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            # Its own process group: stopping it takes its uvicorn workers too, and the session's
            # end reaps any group a failed test left behind (no orphaned servers, parent 1).
            start_new_session=True,
        )
    _SERVER_GROUPS.add(process.pid)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"mlgate server exited early:\n{log.read_text()}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return LiveServer(url, process, artifacts, log)
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    _kill_group(process.pid)
    process.wait(timeout=10)
    raise RuntimeError(f"mlgate server did not start:\n{log.read_text()}")


# Process groups of the servers this session started and has not reaped yet.
_SERVER_GROUPS: set[int] = set()


def _kill_group(pgid: int) -> None:
    """SIGKILL a server's whole process group (its supervisor and any worker left)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def stop_server(server: LiveServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait(timeout=10)
    # A worker that outlived its supervisor (it was killed, or ignored SIGTERM) goes too.
    _kill_group(server.process.pid)
    _SERVER_GROUPS.discard(server.process.pid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    for pgid in list(_SERVER_GROUPS):
        _kill_group(pgid)
    _SERVER_GROUPS.clear()


@pytest.fixture(scope="session")
def live_server(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    server = start_server(database_url, tmp_path_factory.mktemp("server"))
    yield server
    stop_server(server)
    # A server-side traceback means some input got a 500: surface it.
    text = server.log.read_text(errors="replace")
    if "Traceback" in text:
        print(text[-5000:], file=sys.stderr)


@pytest.fixture
def mlflow_tracking(live_server: LiveServer) -> Iterator[str]:
    """Point the official MLflow client at the live server for one test."""
    import mlflow

    mlflow.set_tracking_uri(live_server.url)
    mlflow.set_registry_uri(live_server.url)
    yield live_server.url
    while mlflow.active_run() is not None:
        mlflow.end_run()


@pytest.fixture
def unique() -> str:
    return uuid.uuid4().hex[:10]
