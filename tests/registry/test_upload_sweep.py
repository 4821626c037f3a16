"""Abandoned uploads are swept; uploads in progress are not (issue 12, case 8).

A server is killed (SIGKILL) in the middle of uploads, which leaves exactly what a crash leaves:
a temp file and a multipart folder in the local store's staging area, or an incomplete
multipart upload on S3 (moto's server process). A second server, two workers sweeping at once,
must remove those once they are older than ``MLGATE_STAGING_MAX_AGE`` while an upload it is
receiving (older than that age, but still being written) completes intact.
"""

from __future__ import annotations

import hashlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from registry.artifacts.storage.local import STAGING_DIR
from tests.conftest import LiveServer, start_server, stop_server
from tests.registry.test_artifacts import (  # noqa: F401  (moto_endpoint is a fixture)
    BUCKET,
    S3_ENV,
    moto_endpoint,
    s3_client,
)

ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts"
MPU = "/api/2.0/mlflow-artifacts/mpu"
KiB = 1024
MiB = 1024 * KiB


def _slow_body(chunks: int, chunk: bytes, pause: float, digest: Any = None) -> Iterator[bytes]:
    for _ in range(chunks):
        if digest is not None:
            digest.update(chunk)
        yield chunk
        time.sleep(pause)


def _put_in_background(url: str, body: Iterator[bytes]) -> tuple[threading.Thread, list[Any]]:
    outcome: list[Any] = []

    def send() -> None:
        try:
            outcome.append(httpx.put(url, content=body, timeout=120).status_code)
        except httpx.HTTPError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread, outcome


def _wait_for(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _kill(server: LiveServer) -> None:
    os.kill(server.process.pid, signal.SIGKILL)
    server.process.wait(timeout=10)


def _sweeping_env(max_age: float) -> dict[str, str]:
    return {"MLGATE_STAGING_MAX_AGE": str(max_age), "MLGATE_STAGING_SWEEP_INTERVAL": "0.3"}


NO_SWEEP = {"MLGATE_STAGING_SWEEP_INTERVAL": "0"}


def test_local_sweep_removes_a_killed_servers_uploads_and_spares_live_ones(
    database_url: str, tmp_path: Path, unique: str
) -> None:
    (tmp_path / "a").mkdir()
    first = start_server(database_url, tmp_path / "a", extra_env=NO_SWEEP)
    staging = first.artifacts / STAGING_DIR
    folder = f"{first.url}{ARTIFACTS}/sweep-{unique}"
    # A multipart upload with one part, never completed; a PUT cut short by the kill.
    created = httpx.post(f"{first.url}{MPU}/create/sweep-{unique}", json={"path": "parts.bin"})
    assert created.status_code == 200, created.text
    part = httpx.put(
        f"{first.url}{MPU}/upload-part/sweep-{unique}/parts.bin",
        params={"upload_id": created.json()["upload_id"], "part_number": 1},
        content=b"p" * 1000,
    )
    assert part.status_code == 200, part.text
    _put_in_background(f"{folder}/killed.bin", _slow_body(1000, b"k" * (256 * KiB), 0.05))
    _wait_for(lambda: any(n.startswith("tmp-") for n in os.listdir(staging)), 30, "the temp file")
    _kill(first)
    leftovers = sorted(os.listdir(staging))
    assert [n[:4] for n in leftovers] == ["mpu-", "tmp-"], leftovers

    max_age = 6.0
    second = start_server(database_url, tmp_path / "a", extra_env=_sweeping_env(max_age), workers=2)
    try:
        # An upload that outlives the age but keeps writing (~2 MiB/s, ~8 s) is never touched.
        digest = hashlib.sha256()
        body = _slow_body(32, b"L" * (512 * KiB), 0.25, digest)
        thread, outcome = _put_in_background(
            f"{second.url}{ARTIFACTS}/sweep-{unique}/live.bin", body
        )
        _wait_for(lambda: not set(leftovers) & set(os.listdir(staging)), 30, "the sweep")
        thread.join(60)
        assert outcome == [200], outcome
        got = httpx.get(f"{second.url}{ARTIFACTS}/sweep-{unique}/live.bin", timeout=60)
        assert got.status_code == 200
        assert hashlib.sha256(got.content).hexdigest() == digest.hexdigest()
        assert not (first.artifacts / f"sweep-{unique}" / "killed.bin").exists()
    finally:
        stop_server(second)
    log = second.log.read_text(errors="replace")
    assert "Traceback" not in log, log[-3000:]


def _open_uploads(endpoint: str, prefix: str) -> dict[str, str]:
    listed = s3_client(endpoint).list_multipart_uploads(Bucket=BUCKET, Prefix=prefix)
    return {u["UploadId"]: u["Key"] for u in listed.get("Uploads", ())}


def _has_a_part(endpoint: str, prefix: str) -> bool:
    """An upload under ``prefix`` has received a part (moto gives an upload with no part a
    fixed 2010 start, which any sweep would find old at once)."""
    client = s3_client(endpoint)
    return any(
        client.list_parts(Bucket=BUCKET, Key=key, UploadId=upload_id).get("Parts")
        for upload_id, key in _open_uploads(endpoint, prefix).items()
    )


def test_s3_sweep_aborts_a_killed_servers_multipart_upload_and_spares_recent_ones(
    database_url: str,
    tmp_path: Path,
    unique: str,
    moto_endpoint: str,  # noqa: F811
) -> None:
    prefix = f"sweep-{unique}"
    env = {
        "MLGATE_ARTIFACTS_DESTINATION": f"s3://{BUCKET}/{prefix}",
        "MLGATE_S3_ENDPOINT_URL": moto_endpoint,
        **S3_ENV,
    }
    client = s3_client(moto_endpoint)
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    # Another tenant's abandoned upload in the same bucket, outside mlgate's prefix.
    foreign = client.create_multipart_upload(Bucket=BUCKET, Key=f"other-{unique}/x.bin")
    first = start_server(database_url, tmp_path / "a", extra_env={**env, **NO_SWEEP})
    # Bodies over 8 MiB go to S3 as multipart uploads; kill the server after the first part.
    # The upload's age runs from its last part, which arrived after this moment but may be
    # reported up to a second earlier (S3 gives part times to the second).
    began = time.monotonic()
    _put_in_background(f"{first.url}{ARTIFACTS}/big/killed.bin", _slow_body(1000, b"k" * MiB, 0.02))
    _wait_for(lambda: _has_a_part(moto_endpoint, prefix), 60, "the multipart upload's part")
    killed_at = time.monotonic()
    _kill(first)
    abandoned = _open_uploads(moto_endpoint, f"{prefix}/")
    assert list(abandoned.values()) == [f"{prefix}/big/killed.bin"]

    # A client's upload that received a part a few seconds later (moto reports a fixed 2010
    # "Initiated" for every upload, so on moto only a part's time makes an upload recent).
    # The margin between the two is 5 s; the second server must be up before the first one's
    # age runs out (a 24 s budget: a two-worker start takes over 15 s on a loaded 2-core CI
    # machine), so that it sweeps between the two expiries.
    max_age = 30.0
    time.sleep(5)
    recent_key = f"{prefix}/recent/r.bin"
    recent = client.create_multipart_upload(Bucket=BUCKET, Key=recent_key)["UploadId"]
    etag = client.upload_part(
        Bucket=BUCKET, Key=recent_key, UploadId=recent, PartNumber=1, Body=b"r" * 1000
    )["ETag"]
    second = start_server(
        database_url, tmp_path / "b", extra_env={**env, **_sweeping_env(max_age)}, workers=2
    )
    assert time.monotonic() - killed_at < max_age - 1, "the server took too long to start"
    try:
        _wait_for(
            lambda: not set(abandoned) & set(_open_uploads(moto_endpoint, f"{prefix}/")),
            60,
            "the sweep",
        )
        assert time.monotonic() - began >= max_age - 1  # not before its age
        assert recent in _open_uploads(moto_endpoint, f"{prefix}/")  # younger: untouched
        done = httpx.post(
            f"{second.url}{MPU}/complete/recent",
            json={
                "path": "r.bin",
                "upload_id": recent,
                "parts": [{"part_number": 1, "etag": etag}],
            },
        )
        assert done.status_code == 200, done.text
        got = httpx.get(f"{second.url}{ARTIFACTS}/recent/r.bin")
        assert got.content == b"r" * 1000
        assert foreign["UploadId"] in _open_uploads(moto_endpoint, f"other-{unique}/")
    finally:
        stop_server(second)
        client.abort_multipart_upload(
            Bucket=BUCKET, Key=f"other-{unique}/x.bin", UploadId=foreign["UploadId"]
        )
    log = second.log.read_text(errors="replace")
    assert "Traceback" not in log, log[-3000:]
