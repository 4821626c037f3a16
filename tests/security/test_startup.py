"""Start-up refusals: no public bind without auth, no auth without an administrator, and no
default password to fall back on."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from gates.server import migrate
from tests.conftest import REPO_ROOT, free_port
from tracking.core.settings import Settings


def _serve(
    *args: str, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("MLGATE_")}
    return subprocess.run(
        [sys.executable, "-m", "gates.server", "server", *args],
        cwd=REPO_ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_public_bind_without_auth_is_refused(tmp_path: Path) -> None:
    env = {"MLGATE_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}"}
    result = _serve("--host", "0.0.0.0", "--port", str(free_port()), env=env)
    assert result.returncode == 2
    assert "MLGATE_ALLOW_UNAUTHENTICATED_PUBLIC_BIND" in result.stderr
    assert not (tmp_path / "x.db").exists()  # refused before touching anything


def test_public_bind_without_auth_starts_when_allowed_explicitly(tmp_path: Path) -> None:
    port = free_port()
    base = {k: v for k, v in os.environ.items() if not k.startswith("MLGATE_")}
    env = {
        **base,
        "MLGATE_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}",
        "MLGATE_ARTIFACTS_DESTINATION": str(tmp_path / "a"),
        "MLGATE_ALLOW_UNAUTHENTICATED_PUBLIC_BIND": "true",
        "MLGATE_WEBHOOK_WORKER": "false",
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gates.server",
            "server",
            "--host",
            "0.0.0.0",
            "--port",
            str(port),
        ],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            try:
                assert httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline
                time.sleep(0.2)
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def test_auth_without_any_administrator_is_refused(make_database) -> None:  # type: ignore[no-untyped-def]
    url = make_database("noadmin")
    result = _serve(
        "--port", str(free_port()), env={"MLGATE_DATABASE_URL": url, "MLGATE_AUTH": "true"}
    )
    assert result.returncode == 2
    assert "no administrator exists" in result.stderr
    assert "MLGATE_ADMIN_PASSWORD" in result.stderr


@pytest.mark.parametrize("password", ["short", "", "password"])
def test_a_weak_or_missing_first_admin_password_is_refused(make_database, password: str) -> None:  # type: ignore[no-untyped-def]
    url = make_database("weakadmin")
    env = {
        "MLGATE_DATABASE_URL": url,
        "MLGATE_AUTH": "true",
        "MLGATE_ADMIN_USERNAME": "root",
        "MLGATE_ADMIN_PASSWORD": password,
    }
    result = _serve("--port", str(free_port()), env=env)
    assert result.returncode == 2, result.stderr


def test_create_app_refuses_a_public_bind_without_auth(tmp_path: Path) -> None:
    from gates.server.app import create_app

    with pytest.raises(RuntimeError, match="refusing to listen"):
        create_app(Settings(host="0.0.0.0", database_url=f"sqlite:///{tmp_path / 'x.db'}"))


def test_the_lifespan_refuses_auth_without_an_administrator(make_database, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Workers started directly (uvicorn --factory) refuse too, not only `mlgate server`."""
    from litestar.testing import TestClient

    from gates.server.app import create_app

    url = make_database("lifespan")
    migrate.upgrade(url)
    app = create_app(
        Settings(database_url=url, artifacts_destination=str(tmp_path / "a"), auth=True)
    )
    # The lifespan's task group carries the refusal (NoAdministrator, re-raised as the
    # start-up's RuntimeError) out of the test client as an exception group.
    refusal = pytest.RaisesExc(RuntimeError, match="no administrator exists")
    with pytest.RaisesGroup(refusal, allow_unwrapped=True), TestClient(app):
        pass
