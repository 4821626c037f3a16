"""The artifact proxy on both backends (local directory, S3 via a moto server process).

Three levels: the storage backends directly, the HTTP API of a live ``mlgate server``, and the
official MLflow client against that server.
"""

from __future__ import annotations

import filecmp
import hashlib
import random
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from litestar.testing import TestClient

from registry.artifacts.paths import ArtifactPath, parse_artifact_path
from registry.artifacts.storage import (
    ArtifactStorage,
    LocalStorage,
    S3Storage,
    StorageUnavailable,
    UploadedPart,
    build_storage,
)
from registry.artifacts.storage.local import STAGING_DIR
from tests.conftest import LiveServer, free_port, start_server, stop_server
from tracking.core.errors import (
    InvalidParameter,
    PermissionDenied,
    ResourceNotFound,
)
from tracking.core.settings import Settings

ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts"
MPU = "/api/2.0/mlflow-artifacts/mpu"
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "test",
    "AWS_DEFAULT_REGION": "us-east-1",
}
BUCKET = "mlgate-artifacts"
MiB = 1024 * 1024


# --- helpers -----------------------------------------------------------------------------------


def p(raw: str) -> ArtifactPath:
    return parse_artifact_path(raw)


async def body(*chunks: bytes) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


async def read_all(storage: ArtifactStorage, path: ArtifactPath) -> bytes:
    reader = await storage.open(path)
    data = b"".join([chunk async for chunk in reader])
    assert len(data) == reader.size
    return data


def generated_chunks(total: int, seed: int, chunk: int = MiB) -> Iterator[bytes]:
    """Deterministic pseudo-random bytes, produced on the fly (never held whole)."""
    rng = random.Random(seed)
    sent = 0
    while sent < total:
        n = min(chunk, total - sent)
        yield rng.randbytes(n)
        sent += n


def sha256_of(chunks: Iterator[bytes]) -> str:
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


def s3_client(endpoint: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        region_name="us-east-1",
    )


def unique_root() -> str:
    return f"0/{uuid.uuid4().hex}/artifacts"


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real moto S3 server process, with the artifact bucket created."""
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    moto = Path(sys.executable).parent / "moto_server"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(moto), "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(f"{url}/moto-api/", timeout=1)
            break
        except httpx.HTTPError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise RuntimeError(f"moto did not start:\n{log.read_text()}") from None
            time.sleep(0.1)
    s3_client(url).create_bucket(Bucket=BUCKET)
    yield url
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture(scope="session")
def s3_server(
    database_url: str, moto_endpoint: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    server = start_server(
        database_url,
        tmp_path_factory.mktemp("s3-server"),
        extra_env={
            "MLGATE_ARTIFACTS_DESTINATION": f"s3://{BUCKET}/store",
            "MLGATE_S3_ENDPOINT_URL": moto_endpoint,
            **S3_ENV,
        },
    )
    yield server
    stop_server(server)
    assert "Traceback" not in server.log.read_text(errors="replace")


@pytest.fixture(params=["local", "s3"])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def server(backend: str, request: pytest.FixtureRequest) -> LiveServer:
    """A live server on the backend under test (the shared local one, or the S3 one)."""
    name = "live_server" if backend == "local" else "s3_server"
    return request.getfixturevalue(name)  # type: ignore[no-any-return]


@pytest.fixture(params=["local", "s3"])
async def storage(
    request: pytest.FixtureRequest, tmp_path: Path, moto_endpoint: str
) -> AsyncIterator[ArtifactStorage]:
    backend: ArtifactStorage
    if request.param == "local":
        backend = LocalStorage(tmp_path / "store")
    else:
        prefix = f"unit-{uuid.uuid4().hex}"
        backend = S3Storage(BUCKET, prefix, client=s3_client(moto_endpoint))
    yield backend
    await backend.aclose()


# --- storage backends --------------------------------------------------------------------------


async def test_put_then_open_round_trips_bytes(storage: ArtifactStorage) -> None:
    written = await storage.put(p("a/b/c.txt"), body(b"hello ", b"world"))
    assert written == 11
    assert await read_all(storage, p("a/b/c.txt")) == b"hello world"
    stat = await storage.stat(p("a/b/c.txt"))
    assert stat is not None and not stat.is_dir and stat.size == 11


async def test_put_overwrites_an_existing_file(storage: ArtifactStorage) -> None:
    await storage.put(p("f.txt"), body(b"first version"))
    await storage.put(p("f.txt"), body(b"second"))
    assert await read_all(storage, p("f.txt")) == b"second"


async def test_list_is_one_level_of_sorted_base_names(storage: ArtifactStorage) -> None:
    await storage.put(p("run/b.txt"), body(b"bb"))
    await storage.put(p("run/a.txt"), body(b"a"))
    await storage.put(p("run/sub/deep/c.json"), body(b"{}"))
    entries = await storage.list(p("run"))
    assert [(e.name, e.is_dir, e.file_size) for e in entries] == [
        ("a.txt", False, 1),
        ("b.txt", False, 2),
        ("sub", True, None),
    ]
    assert [e.name for e in await storage.list(p("run/sub"))] == ["deep"]


async def test_listing_a_missing_directory_or_a_file_is_empty(storage: ArtifactStorage) -> None:
    await storage.put(p("x/file.txt"), body(b"1"))
    assert await storage.list(p("nowhere/at/all")) == []
    assert await storage.list(p("x/file.txt")) == []


async def test_missing_files_and_directories_cannot_be_opened(storage: ArtifactStorage) -> None:
    await storage.put(p("d/inner.txt"), body(b"1"))
    for missing in ("d/nope.txt", "d"):
        with pytest.raises(ResourceNotFound):
            await storage.open(p(missing))
    assert await storage.stat(p("d/nope.txt")) is None
    stat = await storage.stat(p("d"))
    assert stat is not None and stat.is_dir


async def test_delete_removes_a_file_or_a_whole_prefix(storage: ArtifactStorage) -> None:
    for name in ("r/keep.txt", "r/gone.txt", "r/tree/a.txt", "r/tree/b/c.txt", "r/treehouse.txt"):
        await storage.put(p(name), body(b"x"))
    await storage.delete(p("r/gone.txt"))
    await storage.delete(p("r/tree"))
    # The prefix is segment-wise: "r/treehouse.txt" is not under "r/tree".
    assert [e.name for e in await storage.list(p("r"))] == ["keep.txt", "treehouse.txt"]
    await storage.delete(p("r/never-existed"))  # a no-op, as in MLflow
    with pytest.raises(InvalidParameter):
        await storage.delete(ArtifactPath.root())


async def test_a_failed_upload_leaves_nothing_behind(storage: ArtifactStorage) -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield b"x" * (9 * MiB)  # past one S3 part, so a multipart upload is under way
        raise ConnectionError("client went away")

    with pytest.raises(ConnectionError):
        await storage.put(p("half/written.bin"), broken())
    assert await storage.stat(p("half/written.bin")) is None
    if isinstance(storage, LocalStorage):
        assert list((Path(storage.root) / STAGING_DIR).iterdir()) == []
    if isinstance(storage, S3Storage):
        uploads = storage._client.list_multipart_uploads(Bucket=BUCKET, Prefix=storage.prefix)
        assert uploads.get("Uploads", []) == []


async def test_a_large_body_is_stored_in_parts(storage: ArtifactStorage) -> None:
    total = 20 * MiB + 123
    await storage.put(p("big/blob.bin"), body(*generated_chunks(total, seed=7, chunk=300_000)))
    reader = await storage.open(p("big/blob.bin"))
    assert reader.size == total
    digest = hashlib.sha256()
    async for chunk in reader:
        assert len(chunk) <= MiB
        digest.update(chunk)
    assert digest.hexdigest() == sha256_of(generated_chunks(total, seed=7, chunk=300_000))


async def test_multipart_upload_assembles_parts_in_order(storage: ArtifactStorage) -> None:
    target = p("mpu/model.bin")
    upload_id = await storage.create_multipart(target)
    first = b"a" * (5 * MiB)  # S3's minimum size for every part but the last
    second = b"tail"
    etag2 = await storage.upload_part(target, upload_id, 2, body(second))
    etag1 = await storage.upload_part(target, upload_id, 1, body(first[:MiB], first[MiB:]))
    await storage.complete_multipart(
        target, upload_id, [UploadedPart(1, etag1), UploadedPart(2, etag2)]
    )
    assert await read_all(storage, target) == first + second


async def test_multipart_checks_upload_id_target_and_etags(storage: ArtifactStorage) -> None:
    target = p("mpu2/model.bin")
    upload_id = await storage.create_multipart(target)
    etag = await storage.upload_part(target, upload_id, 1, body(b"data"))
    if isinstance(storage, LocalStorage):
        # The id belongs to another file. (S3 itself answers NoSuchUpload; moto does not check.)
        with pytest.raises(ResourceNotFound):
            await storage.upload_part(p("mpu2/other.bin"), upload_id, 1, body(b"x"))
    with pytest.raises(InvalidParameter):
        await storage.complete_multipart(target, upload_id, [UploadedPart(1, "0" * 32)])
    with pytest.raises(InvalidParameter):
        await storage.complete_multipart(target, upload_id, [])
    with pytest.raises(InvalidParameter):
        await storage.upload_part(target, upload_id, 0, body(b"x"))
    await storage.abort_multipart(target, upload_id)
    # S3 answers NoSuchUpload (a 404); moto answers a 500 (a 503 for us): both refuse.
    with pytest.raises((ResourceNotFound, StorageUnavailable)):
        await storage.complete_multipart(target, upload_id, [UploadedPart(1, etag)])
    assert await storage.stat(target) is None


async def test_backends_only_accept_canonical_paths(storage: ArtifactStorage) -> None:
    with pytest.raises(TypeError):
        await storage.put("../x", body(b"x"))  # type: ignore[arg-type]


async def test_local_storage_refuses_symlink_escapes(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    storage = LocalStorage(tmp_path / "store")
    (tmp_path / "store" / "link").symlink_to(outside, target_is_directory=True)
    (tmp_path / "store" / "file-link").symlink_to(outside / "secret.txt")
    with pytest.raises(PermissionDenied):
        await storage.open(p("link/secret.txt"))
    with pytest.raises(PermissionDenied):
        await storage.open(p("file-link"))
    with pytest.raises(PermissionDenied):
        await storage.put(p("link/new.txt"), body(b"x"))
    with pytest.raises(PermissionDenied):
        await storage.delete(p("link/secret.txt"))
    assert (outside / "secret.txt").read_text() == "secret"
    assert not (outside / "new.txt").exists()
    assert await storage.list(ArtifactPath.root()) == []  # links are not listed


async def test_local_storage_reserves_its_staging_folder(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "store")
    with pytest.raises(InvalidParameter):
        await storage.put(p(f"{STAGING_DIR}/x"), body(b"x"))
    await storage.put(p("visible.txt"), body(b"x"))
    assert [e.name for e in await storage.list(ArtifactPath.root())] == ["visible.txt"]


async def test_local_storage_reports_file_directory_clashes_as_bad_input(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "store")
    await storage.put(p("a/file.txt"), body(b"x"))
    with pytest.raises(InvalidParameter):
        await storage.put(p("a/file.txt/child.txt"), body(b"x"))
    with pytest.raises(InvalidParameter):
        await storage.put(p("a"), body(b"x"))


def test_build_storage_picks_the_backend_from_the_destination(tmp_path: Path) -> None:
    local = build_storage(Settings(artifacts_destination=str(tmp_path / "d")))
    assert isinstance(local, LocalStorage)
    via_uri = build_storage(Settings(artifacts_destination=f"file://{tmp_path / 'e'}"))
    assert isinstance(via_uri, LocalStorage)
    s3 = build_storage(
        Settings(artifacts_destination="s3://bkt/some/prefix/", s3_endpoint_url="http://x:1")
    )
    assert isinstance(s3, S3Storage)
    assert (s3.bucket, s3.prefix) == ("bkt", "some/prefix/")
    with pytest.raises(ValueError):
        build_storage(Settings(artifacts_destination="gs://bucket"))


# --- HTTP API, live server, both backends -------------------------------------------------------


def test_put_get_list_delete_round_trip(server: LiveServer) -> None:
    root = unique_root()
    base = f"{server.url}{ARTIFACTS}/{root}"
    with httpx.Client(timeout=60) as http:
        assert http.put(f"{base}/a.txt", content=b"alpha").json() == {}
        assert http.put(f"{base}/out/b.txt", content=b"beta!").status_code == 200
        assert http.put(f"{base}/out/sub/c.json", content=b"{}").status_code == 200

        got = http.get(f"{base}/out/b.txt")
        assert got.status_code == 200 and got.content == b"beta!"
        assert got.headers["content-length"] == "5"
        assert got.headers["content-type"].startswith("text/plain")
        assert got.headers["x-content-type-options"] == "nosniff"

        listed = http.get(f"{server.url}{ARTIFACTS}", params={"path": root}).json()
        assert listed == {
            "files": [
                {"path": "a.txt", "is_dir": False, "file_size": 5},
                {"path": "out", "is_dir": True},
            ]
        }
        nested = http.get(f"{server.url}{ARTIFACTS}", params={"path": f"{root}/out"}).json()
        assert [(f["path"], f["is_dir"]) for f in nested["files"]] == [
            ("b.txt", False),
            ("sub", True),
        ]

        assert http.delete(f"{base}/out").status_code == 200
        after = http.get(f"{server.url}{ARTIFACTS}", params={"path": root}).json()
        assert [f["path"] for f in after["files"]] == ["a.txt"]
        assert http.get(f"{base}/out/b.txt").status_code == 404


def test_missing_file_is_a_json_404(server: LiveServer) -> None:
    r = httpx.get(f"{server.url}{ARTIFACTS}/{unique_root()}/nope.txt")
    assert r.status_code == 404
    assert r.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"


def test_missing_directory_lists_empty(server: LiveServer) -> None:
    r = httpx.get(f"{server.url}{ARTIFACTS}", params={"path": f"{unique_root()}/none"})
    assert r.status_code == 200
    assert r.json().get("files", []) == []


def test_ajax_api_twin_serves_the_same_store(server: LiveServer) -> None:
    root = unique_root()
    httpx.put(f"{server.url}{ARTIFACTS}/{root}/t.txt", content=b"twin")
    r = httpx.get(f"{server.url}/ajax-api/2.0/mlflow-artifacts/artifacts/{root}/t.txt")
    assert r.content == b"twin"


def test_non_ascii_names_round_trip_with_a_safe_disposition(server: LiveServer) -> None:
    root = unique_root()
    url = f"{server.url}{ARTIFACTS}/{root}/d%C3%A4ta%20file.csv"
    assert httpx.put(url, content=b"1,2").status_code == 200
    r = httpx.get(url)
    assert r.content == b"1,2"
    assert r.headers["content-disposition"].startswith("attachment;")
    assert "filename*=UTF-8''d%C3%A4ta%20file.csv" in r.headers["content-disposition"]
    listed = httpx.get(f"{server.url}{ARTIFACTS}", params={"path": root}).json()
    assert listed["files"][0]["path"] == "däta file.csv"


def test_a_64_mib_body_streams_both_ways(server: LiveServer) -> None:
    total = 64 * MiB
    url = f"{server.url}{ARTIFACTS}/{unique_root()}/big.bin"
    with httpx.Client(timeout=120) as http:
        # A generator body is sent chunked: the server cannot know the size in advance.
        put = http.put(url, content=generated_chunks(total, seed=64))
        assert put.status_code == 200, put.text
        digest = hashlib.sha256()
        with http.stream("GET", url) as r:
            assert r.status_code == 200
            assert r.headers["content-length"] == str(total)
            for chunk in r.iter_bytes():
                digest.update(chunk)
    assert digest.hexdigest() == sha256_of(generated_chunks(total, seed=64))


def test_an_interrupted_upload_leaves_no_partial_file(live_server: LiveServer) -> None:
    root = unique_root()
    port = int(live_server.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(
            f"PUT {ARTIFACTS}/{root}/cut.bin HTTP/1.1\r\nHost: x\r\n"
            f"Content-Length: {10 * MiB}\r\n\r\n".encode()
            + b"x" * MiB
        )
        time.sleep(0.3)  # the server is now mid-body; hang up
    deadline = time.monotonic() + 10
    staging = live_server.artifacts / STAGING_DIR
    while any(staging.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(staging.iterdir())
    assert httpx.get(f"{live_server.url}{ARTIFACTS}/{root}/cut.bin").status_code == 404


def test_multipart_upload_over_http(server: LiveServer) -> None:
    root = unique_root()
    part1, part2 = b"1" * (5 * MiB), b"2" * 1000
    with httpx.Client(timeout=60) as http:
        created = http.post(
            f"{server.url}{MPU}/create/{root}/models",
            json={"path": "/home/me/weights.bin", "num_parts": 2},
        )
        assert created.status_code == 200, created.text
        upload = created.json()
        parts = []
        for credential, data in zip(upload["credentials"], (part1, part2), strict=True):
            r = http.put(credential["url"], content=data, headers=credential["headers"])
            assert r.status_code == 200, r.text
            parts.append({"part_number": credential["part_number"], "etag": r.headers["ETag"]})
        done = http.post(
            f"{server.url}{MPU}/complete/{root}/models",
            json={"path": "/home/me/weights.bin", "upload_id": upload["upload_id"], "parts": parts},
        )
        assert done.status_code == 200, done.text
        got = http.get(f"{server.url}{ARTIFACTS}/{root}/models/weights.bin")
        assert got.content == part1 + part2


def test_aborted_multipart_upload_cannot_be_completed(server: LiveServer, backend: str) -> None:
    root = unique_root()
    with httpx.Client(timeout=60) as http:
        upload = http.post(
            f"{server.url}{MPU}/create/{root}", json={"path": "f.bin", "num_parts": 1}
        ).json()
        r = http.put(upload["credentials"][0]["url"], content=b"x")
        etag = r.headers["ETag"]
        aborted = http.post(
            f"{server.url}{MPU}/abort/{root}",
            json={"path": "f.bin", "upload_id": upload["upload_id"]},
        )
        assert aborted.status_code == 200
        done = http.post(
            f"{server.url}{MPU}/complete/{root}",
            json={
                "path": "f.bin",
                "upload_id": upload["upload_id"],
                "parts": [{"part_number": 1, "etag": etag}],
            },
        )
        # S3 answers NoSuchUpload (our 404); moto answers a 500 (our 503): both refuse.
        assert done.status_code in ({404} if backend == "local" else {404, 503})


@pytest.mark.parametrize(
    "payload",
    [b"{not json", b'{"path": 5}', b'{"num_parts": 1}', b'{"path": "f", "num_parts": 0}'],
)
def test_bad_multipart_requests_are_400s(server: LiveServer, payload: bytes) -> None:
    r = httpx.post(
        f"{server.url}{MPU}/create/{unique_root()}",
        content=payload,
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 400
    assert r.json()["error_code"] == "INVALID_PARAMETER_VALUE"


def test_ui_get_artifact_serves_a_run_file_as_an_attachment(server: LiveServer) -> None:
    with httpx.Client(timeout=60) as http:
        run = http.post(
            f"{server.url}/api/2.0/mlflow/runs/create", json={"experiment_id": "0"}
        ).json()["run"]["info"]
        root = run["artifact_uri"].removeprefix("mlflow-artifacts:/")
        http.put(f"{server.url}{ARTIFACTS}/{root}/plots/page.html", content=b"<script>1</script>")
        r = http.get(
            f"{server.url}/get-artifact",
            params={"run_uuid": run["run_id"], "path": "plots/page.html"},
        )
        assert r.status_code == 200
        assert r.content == b"<script>1</script>"
        assert r.headers["content-disposition"] == "attachment; filename=page.html"
        assert r.headers["x-content-type-options"] == "nosniff"
        missing = http.get(
            f"{server.url}/get-artifact", params={"run_uuid": run["run_id"], "path": "nope"}
        )
        assert missing.status_code == 404
        no_run = http.get(f"{server.url}/get-artifact", params={"run_uuid": "0" * 32, "path": "a"})
        assert no_run.status_code == 404
        assert no_run.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"


def test_model_version_get_artifact_serves_a_version_file(server: LiveServer) -> None:
    api = f"{server.url}/api/2.0/mlflow"
    name = f"ui-art-{uuid.uuid4().hex[:10]}"
    with httpx.Client(timeout=60) as http:
        run = http.post(f"{api}/runs/create", json={"experiment_id": "0"}).json()["run"]["info"]
        root = run["artifact_uri"].removeprefix("mlflow-artifacts:/")
        http.put(f"{server.url}{ARTIFACTS}/{root}/model/MLmodel", content=b"flavors: {}\n")
        http.post(f"{api}/registered-models/create", json={"name": name}).raise_for_status()
        http.post(
            f"{api}/model-versions/create",
            json={"name": name, "source": f"runs:/{run['run_id']}/model", "run_id": run["run_id"]},
        ).raise_for_status()

        r = http.get(
            f"{server.url}/model-versions/get-artifact",
            params={"name": name, "version": "1", "path": "MLmodel"},
        )
        assert r.status_code == 200
        assert r.content == b"flavors: {}\n"
        assert r.headers["content-disposition"] == "attachment; filename=MLmodel"
        for params in (
            {"name": name, "version": "2", "path": "MLmodel"},
            {"name": f"{name}-nope", "version": "1", "path": "MLmodel"},
            {"name": name, "version": "1", "path": "missing.txt"},
        ):
            missing = http.get(f"{server.url}/model-versions/get-artifact", params=params)
            assert missing.status_code == 404, params
            assert missing.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
        traversal = http.get(
            f"{server.url}/model-versions/get-artifact",
            params={"name": name, "version": "1", "path": "../../MLmodel"},
        )
        assert traversal.status_code == 400


# --- the write guard hook (in-process app) ------------------------------------------------------


def test_write_guard_can_refuse_writes_and_deletes(tmp_path: Path, database_url: str) -> None:
    from gates.server.app import create_app

    protected = p("0/frozen/artifacts")
    seen: list[str] = []

    async def guard(path: ArtifactPath) -> None:
        seen.append(path.posix)
        if path.is_relative_to(protected) or protected.is_relative_to(path):
            raise PermissionDenied(f"'{path}' belongs to a registered model version.")

    app = create_app(
        Settings(database_url=database_url, artifacts_destination=str(tmp_path / "art"))
    )
    app.state["artifact_write_guard"] = guard
    with TestClient(app) as client:
        assert client.put(f"{ARTIFACTS}/0/free/artifacts/a.txt", content=b"x").status_code == 200
        refused = client.put(f"{ARTIFACTS}/0/frozen/artifacts/MLmodel", content=b"x")
        assert refused.status_code == 403
        assert refused.json()["error_code"] == "PERMISSION_DENIED"
        # Deleting a parent prefix would delete the protected files too.
        assert client.delete(f"{ARTIFACTS}/0/frozen").status_code == 403
        assert client.delete(f"{ARTIFACTS}/0/free/artifacts/a.txt").status_code == 200
        mpu = client.post(f"{MPU}/create/0/frozen/artifacts", json={"path": "w.bin"})
        assert mpu.status_code == 403
        # Reads are never guarded.
        assert client.get(f"{ARTIFACTS}/0/frozen/artifacts/MLmodel").status_code == 404
    assert "0/frozen/artifacts/MLmodel" in seen and "0/frozen" in seen


def test_backend_without_multipart_answers_the_clients_fallback_error(
    tmp_path: Path, database_url: str
) -> None:
    from gates.server.app import create_app

    app = create_app(
        Settings(database_url=database_url, artifacts_destination=str(tmp_path / "art"))
    )
    with TestClient(app) as client:
        app.state["artifacts"].supports_multipart = False
        r = client.post(f"{MPU}/create/0/x", json={"path": "w.bin", "num_parts": 1})
    assert r.status_code == 501
    assert r.json() == {
        "error_code": "NOT_IMPLEMENTED",
        "message": "Multipart upload is not supported for the current artifact repository",
    }


# --- the official MLflow client -----------------------------------------------------------------


def _tree(root: Path) -> dict[str, bytes]:
    return {
        f.relative_to(root).as_posix(): f.read_bytes()
        for f in sorted(root.rglob("*"))
        if f.is_file()
    }


@pytest.mark.compat
def test_official_client_logs_lists_and_downloads_artifacts(
    server: LiveServer, tmp_path: Path
) -> None:
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(server.url)
    single = tmp_path / "model_card.md"
    single.write_text("# card\n")
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "b.txt").write_text("bee")
    (src / "sub" / "c.json").write_text('{"c": 1}')
    (src / "sub" / "weights.bin").write_bytes(random.Random(3).randbytes(300_000))

    mlflow.set_experiment(f"artifacts-{uuid.uuid4().hex[:8]}")
    with mlflow.start_run() as run:
        mlflow.log_artifact(str(single))
        mlflow.log_artifacts(str(src), "out")
    run_id = run.info.run_id

    client = MlflowClient()
    top = client.list_artifacts(run_id)
    assert [(f.path, f.is_dir) for f in top] == [("model_card.md", False), ("out", True)]
    out = client.list_artifacts(run_id, "out")
    assert [(f.path, f.is_dir, f.file_size) for f in out] == [
        ("out/b.txt", False, 3),
        ("out/sub", True, None),
    ]

    dest = tmp_path / "dest"
    local = mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path="out", dst_path=str(dest)
    )
    assert _tree(Path(local)) == _tree(src)
    card = mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path="model_card.md", dst_path=str(tmp_path / "card")
    )
    assert filecmp.cmp(card, single, shallow=False)


@pytest.mark.compat
def test_official_client_multipart_upload_goes_through_the_proxy(
    server: LiveServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow
    from mlflow.store.artifact.http_artifact_repo import HttpArtifactRepository

    monkeypatch.setenv("MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD", "true")
    monkeypatch.setenv("MLFLOW_MULTIPART_UPLOAD_MINIMUM_FILE_SIZE", "1")
    monkeypatch.setenv("MLFLOW_MULTIPART_UPLOAD_CHUNK_SIZE", str(5 * MiB))
    calls: list[int] = []
    original = HttpArtifactRepository.complete_multipart_upload

    def spy(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(HttpArtifactRepository, "complete_multipart_upload", spy)

    big = tmp_path / "big.bin"
    with big.open("wb") as f:
        for chunk in generated_chunks(12 * MiB + 5, seed=12):
            f.write(chunk)
    mlflow.set_tracking_uri(server.url)
    with mlflow.start_run() as run:
        mlflow.log_artifact(str(big), "weights")
    assert calls == [1]
    got = mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id, artifact_path="weights/big.bin", dst_path=str(tmp_path / "dl")
    )
    assert filecmp.cmp(got, big, shallow=False)
