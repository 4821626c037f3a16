"""``mlgate follow`` against a live server while the pointer moves: it downloads and verifies
each new version, restarts the served command on it, reports it, and refuses tampered bytes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import REPO_ROOT, LiveServer, stop_server
from tests.gates.deployments_support import SETTINGS, deployments, new_model, new_version, resolve
from tests.gates.events_support import events_server, migrated_database, mlflow_client
from tests.gates.webhook_receiver import wait_until

pytestmark = pytest.mark.compat

# The served command: records which version it was started on, then serves until stopped.
SERVE = """
import os, pathlib, sys, time
version, path, marker = sys.argv[1:4]
text = pathlib.Path(path, "model.txt").read_text()
with open(marker, "a") as out:
    out.write(f"{version} {os.getpid()} {text} {path}\\n")
time.sleep(600)
"""


@pytest.fixture(scope="module")
def server(make_database: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    url = migrated_database(make_database, "follow")
    live = events_server(url, tmp_path_factory.mktemp("follow"), **SETTINGS)
    yield live
    stop_server(live)


def _lines(marker: Path) -> list[list[str]]:
    return [line.split(" ") for line in marker.read_text().splitlines()] if marker.exists() else []


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by the loader) counts as gone.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(") ")[1][0] != "Z"


def _start_loader(server: LiveServer, uri: str, tmp_path: Path) -> tuple[Any, Path, Path]:
    script = tmp_path / "serve.py"
    script.write_text(SERVE)
    marker = tmp_path / "served.txt"
    log = tmp_path / "follow.log"
    command = f"{sys.executable} {script} {{version}} {{path}} {marker}"
    argv = [sys.executable, "-m", "gates.server", "follow", uri, "--url", server.url]
    argv += ["--dir", str(tmp_path / "models"), "--deployment", "svc", "--replica-id", "pod-1"]
    argv += ["--timeout", "2", "--exec", command]
    with log.open("wb") as out:
        process = subprocess.Popen(argv, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT)
    return process, marker, log


def _replica(server: LiveServer, name: str) -> dict[str, Any]:
    [deployment] = deployments(server, name, deployment="svc")
    [replica] = deployment["replicas"]
    return {
        **replica,
        "desired": deployment["desired"],
        "deployment_in_sync": deployment["in_sync"],
    }


def test_the_loader_follows_an_alias_and_reports_what_it_runs(
    server: LiveServer, tmp_path: Path
) -> None:
    client = mlflow_client(server)
    name = new_model(client)
    v1, v2, v3 = (new_version(client, name, text) for text in ("one", "two", "three"))
    d1, d2, d3 = (resolve(server, f"models:/{name}/{v}")["digest"] for v in (v1, v2, v3))
    client.set_registered_model_alias(name, "champion", v1)
    loader, marker, log = _start_loader(server, f"models:/{name}@champion", tmp_path)
    try:
        first = wait_until(lambda: _lines(marker), timeout=60, what="the first version served")
        assert [first[0][0], first[0][2]] == [v1, "one"]
        served_path = Path(first[0][3])
        assert (served_path / "sub" / "weights.bin").stat().st_size == 2048
        reported = wait_until(lambda: (r := _replica(server, name))["digest"] == d1 and r)
        assert reported["version"] == v1 and reported["in_sync"]

        moved_at = time.monotonic()
        client.set_registered_model_alias(name, "champion", v2)
        second = wait_until(lambda: len(_lines(marker)) >= 2 and _lines(marker), timeout=60)
        assert time.monotonic() - moved_at < 10
        assert [second[1][0], second[1][2]] == [v2, "two"]
        # The command was restarted: the one serving v1 is gone.
        wait_until(lambda: not _alive(int(first[0][1])), timeout=15, what="the old command gone")
        assert _alive(int(second[1][1]))
        reported = wait_until(lambda: (r := _replica(server, name))["digest"] == d2 and r)
        assert reported["version"] == v2 and reported["deployment_in_sync"] is True

        # v3's stored bytes are altered behind the registry's back: the loader must not run it.
        frozen = server.artifacts / "mlgate-frozen" / "sha256" / d3 / "model.txt"
        frozen.write_text("tampered")
        client.set_registered_model_alias(name, "champion", v3)
        wait_until(lambda: "differs from the registry" in log.read_text(), timeout=30)
        time.sleep(1.0)
        assert len(_lines(marker)) == 2, "a tampered version was served"
        assert _alive(int(second[1][1]))
        stuck = _replica(server, name)
        assert (stuck["digest"], stuck["in_sync"]) == (d2, False)
        assert stuck["desired"] == {"version": v3, "digest": d3}
    finally:
        loader.send_signal(signal.SIGTERM)
        loader.wait(timeout=30)
    # Stopping the loader stops the command it runs.
    for line in _lines(marker):
        wait_until(lambda pid=int(line[1]): not _alive(pid), timeout=15, what="command stopped")
    assert loader.returncode == 0, log.read_text()


def test_the_loader_refuses_a_uri_that_is_not_a_pointer(server: LiveServer) -> None:
    for uri in ("models:/m/3", "models:/m/latest", "runs:/abc/model"):
        done = subprocess.run(
            [sys.executable, "-m", "gates.server", "follow", uri, "--url", server.url],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2, (uri, done.stderr)
        assert "mlgate:" in done.stderr
    assert httpx.get(f"{server.url}/health").status_code == 200
