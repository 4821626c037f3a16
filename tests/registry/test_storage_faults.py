"""Artifact store faults answer like a service (issue 12, case 8).

A full disk answers 507 with MLflow's error JSON and leaves nothing half-written: the artifact
root is a 1 MiB tmpfs mounted for the test (needs root; skipped otherwise), so the store's
writes fail with the kernel's own ENOSPC; nothing in mlgate is patched. An S3 endpoint that
cannot be reached answers 503 with Retry-After.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from registry.artifacts.storage.local import STAGING_DIR
from tests.conftest import BACKEND, LiveServer, free_port, start_server, stop_server

ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts"
MPU = "/api/2.0/mlflow-artifacts/mpu"
MiB = 1024 * 1024


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "tiny"
    _mount_tiny(mount, "1m")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _mount_tiny(mount: Path, size: str) -> None:
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a size-limited tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace')}")


@pytest.fixture
def full_disk_server(database_url: str, tmp_path: Path, tiny_disk: Path) -> Iterator[LiveServer]:
    server = start_server(
        database_url,
        tmp_path,
        extra_env={"MLGATE_ARTIFACTS_DESTINATION": str(tiny_disk / "artifacts")},
    )
    yield server
    stop_server(server)


def _staged(root: Path) -> list[str]:
    staging = root / STAGING_DIR
    return sorted(os.listdir(staging)) if staging.exists() else []


def _assert_507(resp: httpx.Response) -> None:
    assert resp.status_code == 507, (resp.status_code, resp.text[:300])
    body = resp.json()
    assert body["error_code"] == "INSUFFICIENT_STORAGE", body
    assert body["message"]


def test_upload_to_a_full_disk_answers_507_and_leaves_no_temp_file(
    full_disk_server: LiveServer, tiny_disk: Path, unique: str
) -> None:
    root = tiny_disk / "artifacts"
    url = f"{full_disk_server.url}{ARTIFACTS}/disk-{unique}"
    small = httpx.put(f"{url}/small.bin", content=b"x" * 1000, timeout=60)
    assert small.status_code == 200, small.text

    _assert_507(httpx.put(f"{url}/big.bin", content=os.urandom(3 * MiB), timeout=60))
    # Nothing half-written: no temp file in staging, no partial artifact.
    assert _staged(root) == []
    assert not (root / f"disk-{unique}" / "big.bin").exists()
    assert httpx.get(f"{url}/big.bin", timeout=30).status_code == 404
    # The store still works for what fits.
    again = httpx.put(f"{url}/small2.bin", content=b"y" * 1000, timeout=60)
    assert again.status_code == 200, again.text

    # A multipart part that does not fit: 507, its temp file removed, the upload still there.
    created = httpx.post(
        f"{full_disk_server.url}{MPU}/create/disk-{unique}", json={"path": "multi.bin"}
    )
    assert created.status_code == 200, created.text
    upload_id = created.json()["upload_id"]
    part = httpx.put(
        f"{full_disk_server.url}{MPU}/upload-part/disk-{unique}/multi.bin",
        params={"upload_id": upload_id, "part_number": 1},
        content=os.urandom(3 * MiB),
        timeout=60,
    )
    _assert_507(part)
    assert [name for name in _staged(root) if name.startswith("tmp-")] == []
    log = full_disk_server.log.read_text(errors="replace")
    assert "Traceback" not in log, log[-3000:]


def test_unreachable_s3_answers_503_with_retry_after(database_url: str, tmp_path: Path) -> None:
    server = start_server(
        database_url,
        tmp_path,
        extra_env={
            "MLGATE_ARTIFACTS_DESTINATION": "s3://nowhere-bucket/store",
            # Nothing listens there: every S3 call is refused.
            "MLGATE_S3_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1",
            "MLGATE_STAGING_SWEEP_INTERVAL": "0",
        },
    )
    try:
        for resp in (
            httpx.get(f"{server.url}{ARTIFACTS}/some/file.bin", timeout=60),
            httpx.put(f"{server.url}{ARTIFACTS}/some/file.bin", content=b"x", timeout=60),
        ):
            assert resp.status_code == 503, resp.text
            assert int(resp.headers["Retry-After"]) >= 1
            assert resp.json()["error_code"] == "TEMPORARILY_UNAVAILABLE"
    finally:
        stop_server(server)


def test_sqlite_database_on_a_full_disk_answers_507_and_keeps_serving_reads(
    tmp_path: Path, unique: str
) -> None:
    if BACKEND != "sqlite":
        pytest.skip("the database file itself on a full disk is SQLite's case")
    from gates.server import migrate

    mount = tmp_path / "tiny-db"
    _mount_tiny(mount, "2m")
    try:
        url = f"sqlite:///{mount / 'mlgate.db'}"
        migrate.upgrade(url)
        server = start_server(url, tmp_path, extra_env={"MLGATE_STAGING_SWEEP_INTERVAL": "0"})
        try:
            api = httpx.Client(base_url=f"{server.url}/api/2.0/mlflow", timeout=60)
            exp = api.post("experiments/create", json={"name": f"full-{unique}"}).json()
            run = api.post(
                "runs/create", json={"experiment_id": exp["experiment_id"], "start_time": 1}
            ).json()["run"]["info"]["run_id"]
            statuses = []
            for batch in range(12):
                params = [{"key": f"p{batch}-{i}", "value": "v" * 2000} for i in range(100)]
                resp = api.post("runs/log-batch", json={"run_id": run, "params": params})
                statuses.append(resp.status_code)
                if resp.status_code == 507:
                    assert resp.json()["error_code"] == "INSUFFICIENT_STORAGE"
                    break
            assert statuses[-1] == 507, statuses
            assert set(statuses) <= {200, 507}, statuses
            # The refused batch wrote nothing; what was stored before is still served.
            got = api.get("runs/get", params={"run_id": run})
            assert got.status_code == 200
            keys = {p["key"] for p in got.json()["run"]["data"].get("params", [])}
            assert not any(k.startswith(f"p{len(statuses) - 1}-") for k in keys)
            assert len(keys) == 100 * (len(statuses) - 1)
            api.close()
        finally:
            stop_server(server)
        log = server.log.read_text(errors="replace")
        assert "Traceback" not in log, log[-3000:]
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
