"""The `mlgate` command line: schema upgrades and a server that starts on a fresh machine."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import BACKEND, REPO_ROOT, free_port


def _mlgate(
    *args: str, cwd: Path = REPO_ROOT, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gates.server", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_db_upgrade_then_current(make_database) -> None:  # type: ignore[no-untyped-def]
    url = make_database("cli")
    up = _mlgate("db", "upgrade", "--database-url", url)
    assert up.returncode == 0, up.stderr
    current = _mlgate("db", "current", "--database-url", url)
    assert current.returncode == 0, current.stderr
    assert "(head)" in current.stdout + current.stderr


def test_bad_setting_is_a_clear_error() -> None:
    result = _mlgate("db", "current", env={"MLGATE_DB_POOL_SIZE": "lots"})
    assert result.returncode == 2
    assert "MLGATE_DB_POOL_SIZE" in result.stderr


def test_server_starts_on_embedded_default_in_empty_directory(tmp_path: Path) -> None:
    """No settings at all: SQLite file and artifact folder appear under ./mlgate-data."""
    if BACKEND != "sqlite":
        # The embedded default is SQLite by definition; the PostgreSQL run covers the rest.
        return
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLGATE_")}
    env["PYTHONPATH"] = str(REPO_ROOT)
    proc = subprocess.Popen(
        [sys.executable, "-m", "gates.server", "server", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            try:
                resp = httpx.get(
                    f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/get-by-name",
                    params={"experiment_name": "Default"},
                )
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.2)
        assert resp.status_code == 200
        assert resp.json()["experiment"]["experiment_id"] == "0"
        assert (tmp_path / "mlgate-data" / "mlgate.db").exists()
    finally:
        proc.terminate()
        proc.wait(timeout=15)
