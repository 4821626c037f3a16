"""Artifact bodies stream through the server in bounded memory, whatever their size.

A dedicated live server (so other tests' traffic cannot blur the numbers) receives and then
serves a 1 GiB body; its resident set, sampled from /proc while the bytes flow and checked
against the kernel's high-water mark, must not grow by more than 100 MiB.
"""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import LiveServer, start_server, stop_server
from tests.registry.test_artifacts import BUCKET, S3_ENV, moto_endpoint  # noqa: F401 (fixture)

MiB = 1024 * 1024
RSS_GROWTH_LIMIT = 100 * MiB
ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts"

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/status").exists(), reason="needs Linux /proc to read a process's RSS"
)


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise KeyError(field)


def _reset_peak(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False when not permitted."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


class RssSampler:
    """Samples a process's VmRSS every few milliseconds on a background thread."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_kib = _status_kib(pid, "VmRSS")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_kib = max(self.peak_kib, _status_kib(self.pid, "VmRSS"))
            time.sleep(0.01)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _pattern_body(total: int) -> Iterator[bytes]:
    """1 GiB of non-repeating-looking bytes, cheap to make: a random block salted per chunk."""
    block = bytearray(hashlib.sha256(b"seed").digest() * (MiB // 32))
    for index in range(total // MiB):
        block[:8] = index.to_bytes(8, "little")
        yield bytes(block)


@pytest.fixture(scope="module")
def quiet_server(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    server = start_server(database_url, tmp_path_factory.mktemp("rss-server"))
    yield server
    stop_server(server)


@pytest.fixture(scope="module")
def quiet_s3_server(
    database_url: str,
    moto_endpoint: str,  # noqa: F811 (the fixture imported above)
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[LiveServer]:
    server = start_server(
        database_url,
        tmp_path_factory.mktemp("rss-s3-server"),
        extra_env={
            "MLGATE_ARTIFACTS_DESTINATION": f"s3://{BUCKET}/rss",
            "MLGATE_S3_ENDPOINT_URL": moto_endpoint,
            **S3_ENV,
        },
    )
    yield server
    stop_server(server)


def stream_through(server: LiveServer, total: int) -> int:
    """PUT then GET ``total`` bytes through ``server``; return its RSS growth in bytes."""
    pid = server.process.pid
    url = f"{server.url}{ARTIFACTS}/0/{uuid.uuid4().hex}/artifacts/huge.bin"
    with httpx.Client(timeout=120) as http:
        # Warm up every code path first, so imports and pools are not counted as growth.
        warm = f"{server.url}{ARTIFACTS}/0/warm-up/artifacts/w.bin"
        assert http.put(warm, content=_pattern_body(20 * MiB)).status_code == 200
        with http.stream("GET", warm) as r:
            for _ in r.iter_bytes():
                pass

        baseline_kib = _status_kib(pid, "VmRSS")
        peak_is_reset = _reset_peak(pid)
        expected = hashlib.sha256()
        with RssSampler(pid) as sampler:

            def body() -> Iterator[bytes]:
                for chunk in _pattern_body(total):
                    expected.update(chunk)
                    yield chunk

            put = http.put(url, content=body())
            assert put.status_code == 200, put.text
            got = hashlib.sha256()
            size = 0
            with http.stream("GET", url) as r:
                assert r.status_code == 200
                for chunk in r.iter_bytes(MiB):
                    got.update(chunk)
                    size += len(chunk)
        high_water_kib = _status_kib(pid, "VmHWM") if peak_is_reset else sampler.peak_kib

    assert size == total
    assert got.hexdigest() == expected.hexdigest()
    growth = (max(sampler.peak_kib, high_water_kib) - baseline_kib) * 1024
    print(f"{server.url}: RSS growth {growth / MiB:.1f} MiB for {total / MiB:.0f} MiB")
    return growth


@pytest.mark.slow
def test_a_1_gib_upload_and_download_keep_server_rss_growth_under_100_mib(
    quiet_server: LiveServer,
) -> None:
    growth = stream_through(quiet_server, 1024 * MiB)
    assert growth < RSS_GROWTH_LIMIT, f"server RSS grew by {growth / MiB:.1f} MiB"


@pytest.mark.slow
def test_s3_backend_streams_in_bounded_memory_too(quiet_s3_server: LiveServer) -> None:
    # Smaller than the local case (moto keeps the object in its own memory), but 32 S3 parts:
    # the server must hold about two parts at a time, never the body.
    growth = stream_through(quiet_s3_server, 256 * MiB)
    assert growth < RSS_GROWTH_LIMIT, f"server RSS grew by {growth / MiB:.1f} MiB"
