"""A live reference ``mlflow server`` (the full mlflow package, bench extra) for side-by-side tests.

Tests that compare mlgate's answers with MLflow's own start one with :func:`start_reference`;
when the ``mlflow`` executable is not installed they skip that comparison with the reason, and
keep their mlgate-only assertions, so CI always checks mlgate's side.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.conftest import free_port

# Telemetry off (offline machines); the background job runner is not needed for these tests.
REFERENCE_ENV = {"MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def mlflow_executable() -> str | None:
    """The ``mlflow`` CLI next to this interpreter (the venv's), else on PATH, else None."""
    beside = Path(sys.executable).with_name("mlflow")
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("mlflow")


@contextmanager
def start_reference(workdir: Path) -> Iterator[str]:
    """Run ``mlflow server`` on SQLite with proxied artifacts; yield its base URL."""
    exe = mlflow_executable()
    if exe is None:
        raise FileNotFoundError("the 'mlflow' executable (full mlflow package) is not installed")
    port = free_port()
    log = workdir / f"mlflow-{port}.log"
    command = [
        exe,
        "server",
        "--backend-store-uri",
        f"sqlite:///{workdir / 'mlflow.db'}",
        "--artifacts-destination",
        str(workdir / "mlflow-artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, env={**os.environ, **REFERENCE_ENV}, stdout=out, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"mlflow server exited early:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.25)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
