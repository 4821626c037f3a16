"""Registered version bytes are frozen: the registry's own content-addressed copy, hashed from
the copy, served to every reader, never writable by a client (issue 12, case 1).

Driven against live servers on a local folder and on S3 (a moto server process), on the
database the test session runs on (``MLGATE_TEST_BACKEND``).
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import mlflow
import pytest
from mlflow import MlflowClient

from registry.artifacts.manifest import ManifestEntry, manifest_digest
from registry.artifacts.paths import FROZEN_AREA, parse_artifact_path
from registry.artifacts.storage import ArtifactStorage, LocalStorage, S3Storage
from tests.conftest import LiveServer
from tests.registry import test_artifacts
from tests.registry.test_integrity import _fitted_model, _mlgate_verify

ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts"
MPU = "/api/2.0/mlflow-artifacts/mpu"
API = "/api/2.0/mlflow"
MLGATE = "/api/2.0/mlgate"
BUCKET, S3_ENV = test_artifacts.BUCKET, test_artifacts.S3_ENV
moto_endpoint = test_artifacts.moto_endpoint
s3_server = test_artifacts.s3_server
MiB = 1024 * 1024


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(params=["local", "s3"])
def server(request: pytest.FixtureRequest) -> LiveServer:
    """A live server on the backend under test (the shared local one, or the S3 one)."""
    name = "live_server" if request.param == "local" else "s3_server"
    return request.getfixturevalue(name)  # type: ignore[no-any-return]


@pytest.fixture
def client_on(server: LiveServer) -> Iterator[MlflowClient]:
    """The official client pointed at ``server`` for one test."""
    mlflow.set_tracking_uri(server.url)
    mlflow.set_registry_uri(server.url)
    yield MlflowClient()
    while mlflow.active_run() is not None:
        mlflow.end_run()


def _new_run(http: httpx.Client) -> tuple[str, str]:
    run = http.post(f"{API}/runs/create", json={"experiment_id": "0"}).json()["run"]["info"]
    return run["run_id"], run["artifact_uri"].removeprefix("mlflow-artifacts:/")


def _register(http: httpx.Client, name: str, body: dict[str, Any]) -> dict[str, Any]:
    created = http.post(f"{API}/model-versions/create", json={"name": name, **body})
    assert created.status_code == 200, created.text
    return created.json()["model_version"]  # type: ignore[no-any-return]


def _resolve(http: httpx.Client, uri: str) -> dict[str, Any]:
    r = http.get(f"{MLGATE}/models/resolve", params={"uri": uri})
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def _download_uri(http: httpx.Client, name: str, version: str) -> str:
    r = http.get(
        f"{API}/model-versions/get-download-uri", params={"name": name, "version": version}
    )
    assert r.status_code == 200, r.text
    return r.json()["artifact_uri"]  # type: ignore[no-any-return]


class SlowBody:
    """A chunked request body sent at a limited rate; ``started`` is set once bytes flowed."""

    def __init__(self, size: int, chunk: int = 256 * 1024, delay: float = 0.15) -> None:
        self.data = os.urandom(size)
        self.chunk, self.delay = chunk, delay
        self.started = threading.Event()

    def __iter__(self) -> Iterator[bytes]:
        for start in range(0, len(self.data), self.chunk):
            yield self.data[start : start + self.chunk]
            if start >= 2 * self.chunk:
                self.started.set()
            time.sleep(self.delay)


def _verify(server: LiveServer, database_url: str, uri: str, moto: str | None) -> Any:
    if moto is None:
        return _mlgate_verify(uri, database_url, str(server.artifacts))
    env = {"MLGATE_S3_ENDPOINT_URL": moto, **S3_ENV}
    return _mlgate_verify(uri, database_url, f"s3://{BUCKET}/store", env)


def _moto_for(server: LiveServer, request: pytest.FixtureRequest) -> str | None:
    if server is request.getfixturevalue("live_server"):
        return None
    return str(request.getfixturevalue("moto_endpoint"))


# --- the reproduction --------------------------------------------------------------------


def test_upload_finishing_after_registration_never_changes_the_registered_bytes(
    server: LiveServer,
    client_on: MlflowClient,
    database_url: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    moto = _moto_for(server, request)
    name = f"race-{uuid.uuid4().hex[:10]}"
    small = b"small weights " * 10
    slow = SlowBody(12 * MiB)  # about 7 s at the limited rate; several S3 parts
    with httpx.Client(base_url=server.url, timeout=120) as http:
        run_id, root = _new_run(http)
        for path, data in (("MLmodel", b"flavors: {}\n"), ("weights.bin", small)):
            assert http.put(f"{ARTIFACTS}/{root}/model/{path}", content=data).status_code == 200
        http.post(f"{API}/registered-models/create", json={"name": name}).raise_for_status()

        answers: list[httpx.Response] = []

        def slow_put() -> None:
            with httpx.Client(base_url=server.url, timeout=120) as other:
                answers.append(other.put(f"{ARTIFACTS}/{root}/model/weights.bin", content=slow))

        uploader = threading.Thread(target=slow_put)
        uploader.start()
        assert slow.started.wait(30), "the slow upload never started"
        mv = _register(http, name, {"source": f"runs:/{run_id}/model", "run_id": run_id})
        uploader.join(120)
        assert not uploader.is_alive()
        # The upload passed every check before registration and lands in the run's folder...
        assert answers and answers[0].status_code == 200, answers[0].text if answers else None
        landed = http.get(f"{ARTIFACTS}/{root}/model/weights.bin").content
        assert sha256_hex(landed) == sha256_hex(slow.data)

        # ... but the registered version still holds exactly the bytes that were registered.
        resolved = _resolve(http, f"models:/{name}/{mv['version']}")
        recorded = {f["path"]: f["sha256"] for f in resolved["files"]}
        assert recorded["weights.bin"] == sha256_hex(small)
        download_uri = _download_uri(http, name, mv["version"])
        assert download_uri == resolved["download_uri"]
        served = http.get(
            f"{ARTIFACTS}/{download_uri.removeprefix('mlflow-artifacts:/')}/weights.bin"
        ).content
        assert sha256_hex(served) == recorded["weights.bin"]

    # The official client, through models:/ and through the download URI, gets the same bytes.
    for uri in (f"models:/{name}/{mv['version']}", download_uri):
        local = Path(
            mlflow.artifacts.download_artifacts(uri, dst_path=str(tmp_path / uuid.uuid4().hex))
        )
        got = {p: sha256_hex((local / p).read_bytes()) for p in recorded}
        assert got == recorded, uri
    entries = [ManifestEntry(f["path"], f["size"], f["sha256"]) for f in resolved["files"]]
    assert manifest_digest(entries) == resolved["digest"]

    ok = _verify(server, database_url, f"models:/{name}/{mv['version']}", moto)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert download_uri.startswith(f"mlflow-artifacts:/{FROZEN_AREA}/sha256/")


# --- the frozen area is read-only to clients -----------------------------------------------------


def test_client_writes_and_deletes_in_the_frozen_area_are_refused(server: LiveServer) -> None:
    name = f"frozen-{uuid.uuid4().hex[:10]}"
    with httpx.Client(base_url=server.url, timeout=60) as http:
        run_id, root = _new_run(http)
        http.put(f"{ARTIFACTS}/{root}/model/MLmodel", content=b"original")
        http.post(f"{API}/registered-models/create", json={"name": name}).raise_for_status()
        mv = _register(http, name, {"source": f"runs:/{run_id}/model", "run_id": run_id})
        frozen = _download_uri(http, name, mv["version"]).removeprefix("mlflow-artifacts:/")
        # A tree for bytes not registered yet: planting it would pre-empt a later freeze.
        planted = f"{FROZEN_AREA}/sha256/{'0' * 64}"
        refused = [
            ("PUT", f"{ARTIFACTS}/{frozen}/MLmodel"),
            ("PUT", f"{ARTIFACTS}/{frozen}/extra.py"),
            ("PUT", f"{ARTIFACTS}/{planted}/MLmodel"),
            ("PUT", f"{ARTIFACTS}/{FROZEN_AREA}/staging/{'a' * 32}/MLmodel"),
            ("PUT", f"{ARTIFACTS}/{FROZEN_AREA}/empty/x"),
            ("PUT", f"{ARTIFACTS}/{FROZEN_AREA.upper()}/sha256/x/MLmodel"),
            ("PUT", f"{ARTIFACTS}/%6Dlgate-frozen/sha256/x/MLmodel"),  # 'm' percent-encoded
            ("DELETE", f"{ARTIFACTS}/{frozen}/MLmodel"),
            ("DELETE", f"{ARTIFACTS}/{frozen}"),
            ("DELETE", f"{ARTIFACTS}/{FROZEN_AREA}"),
            ("DELETE", f"/ajax-api/2.0/mlflow-artifacts/artifacts/{frozen}"),
        ]
        for method, url in refused:
            r = http.request(method, url, content=b"tampered" if method == "PUT" else None)
            assert r.status_code == 403, (method, url, r.text)
            assert r.json()["error_code"] == "PERMISSION_DENIED"
            assert set(r.json()) == {"error_code", "message"}
        for directory in (frozen, planted):
            mpu = http.post(f"{MPU}/create/{directory}", json={"path": "big.bin", "num_parts": 1})
            assert mpu.status_code in (403, 501), mpu.text  # 501: the store has no multipart
            if mpu.status_code == 403:
                assert mpu.json()["error_code"] == "PERMISSION_DENIED"
            done = http.post(
                f"{MPU}/complete/{directory}",
                json={"path": "MLmodel", "upload_id": "0" * 32, "parts": []},
            )
            assert done.status_code in (403, 501), done.text
        # Traversal spellings into the area never get that far: refused as bad paths.
        for url in (
            f"{ARTIFACTS}/0/../{frozen}/MLmodel",
            f"{ARTIFACTS}/0/%2e%2e/{frozen}/MLmodel",
            f"{ARTIFACTS}/0/..%2F{frozen}/MLmodel",
            f"{ARTIFACTS}/./{frozen}/MLmodel",
        ):
            r = http.put(url, content=b"tampered")
            assert r.status_code in (400, 403, 404), (url, r.text)
            assert r.json()["error_code"] in {
                "INVALID_PARAMETER_VALUE",
                "PERMISSION_DENIED",
                "ENDPOINT_NOT_FOUND",
            }

        assert http.get(f"{ARTIFACTS}/{frozen}/MLmodel").content == b"original"
        assert http.get(f"{ARTIFACTS}/{planted}/MLmodel").status_code == 404
        listed = http.get(f"{ARTIFACTS}", params={"path": frozen}).json().get("files", [])
        assert [f["path"] for f in listed] == ["MLmodel"]


# --- every registration path freezes; readers and the run's folder are independent ------------


def test_every_source_form_registers_a_shared_frozen_copy_that_survives_the_run(
    server: LiveServer, client_on: MlflowClient, tmp_path: Path
) -> None:
    files = {"MLmodel": b"flavors: {}\n", "data/model.pkl": os.urandom(4096)}
    name = f"forms-{uuid.uuid4().hex[:10]}"
    with httpx.Client(base_url=server.url, timeout=60) as http:
        run_id, root = _new_run(http)
        for path, data in files.items():
            http.put(f"{ARTIFACTS}/{root}/model/{path}", content=data).raise_for_status()
        http.post(f"{API}/registered-models/create", json={"name": name}).raise_for_status()
        v1 = _register(http, name, {"source": f"runs:/{run_id}/model", "run_id": run_id})
        v2 = _register(http, name, {"source": f"mlflow-artifacts:/{root}/model", "run_id": run_id})
        # Other bytes, then the same bytes again: versions share a tree only when equal.
        http.put(f"{ARTIFACTS}/{root}/other/MLmodel", content=b"other").raise_for_status()
        v3 = _register(http, name, {"source": f"runs:/{run_id}/other", "run_id": run_id})
        uris = {v: _download_uri(http, name, v) for v in ("1", "2", "3")}
        assert (v1["version"], v2["version"], v3["version"]) == ("1", "2", "3")
        # The version JSON keeps naming the run's source.
        got = http.get(f"{API}/model-versions/get", params={"name": name, "version": "1"})
        assert got.json()["model_version"]["source"] == f"runs:/{run_id}/model"

        # The run's folder is the run's again: its files may change or go away entirely.
        assert http.put(f"{ARTIFACTS}/{root}/model/MLmodel", content=b"new").status_code == 200
        assert http.delete(f"{ARTIFACTS}/{root}").status_code == 200
        assert http.get(f"{ARTIFACTS}/{root}/model/MLmodel").status_code == 404

        # Deleting one of two versions sharing a tree keeps the other whole.
        http.request(
            "DELETE", f"{API}/model-versions/delete", json={"name": name, "version": "1"}
        ).raise_for_status()
        frozen = uris["2"].removeprefix("mlflow-artifacts:/")
        for path, data in files.items():
            assert http.get(f"{ARTIFACTS}/{frozen}/{path}").content == data
        # The UI's download route serves the frozen copy too.
        ui = http.get(
            "/model-versions/get-artifact",
            params={"name": name, "version": "2", "path": "data/model.pkl"},
        )
        assert ui.status_code == 200 and ui.content == files["data/model.pkl"]

    local = Path(mlflow.artifacts.download_artifacts(f"models:/{name}/2", dst_path=str(tmp_path)))
    assert {p: (local / p).read_bytes() for p in files} == files
    # One tree per distinct set of bytes, named by its manifest digest.
    assert uris["1"] == uris["2"] != uris["3"]
    digest = manifest_digest(ManifestEntry(p, len(d), sha256_hex(d)) for p, d in files.items())
    assert uris["2"] == f"mlflow-artifacts:/{FROZEN_AREA}/sha256/{digest}"


def test_a_version_registered_over_one_file_freezes_and_serves_that_file(
    server: LiveServer, client_on: MlflowClient, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    # A source may name one file (an ONNX export, say), as MLflow allows. Its copy must hold
    # that file: it was frozen as an empty folder, so the version served nothing at all.
    data = os.urandom(3000)
    name = f"one-file-{uuid.uuid4().hex[:10]}"
    with httpx.Client(base_url=server.url, timeout=60) as http:
        run_id, root = _new_run(http)
        http.put(f"{ARTIFACTS}/{root}/model.onnx", content=data).raise_for_status()
        http.post(f"{API}/registered-models/create", json={"name": name}).raise_for_status()
    version = client_on.create_model_version(
        name, f"mlflow-artifacts:/{root}/model.onnx", run_id=run_id
    )
    assert version.source == f"mlflow-artifacts:/{root}/model.onnx"
    uri = client_on.get_model_version_download_uri(name, version.version)
    digest = manifest_digest([ManifestEntry("model.onnx", len(data), sha256_hex(data))])
    assert uri == f"mlflow-artifacts:/{FROZEN_AREA}/sha256/{digest}/model.onnx"
    with httpx.Client(base_url=server.url, timeout=60) as http:
        # The run's file changes afterwards; the version's does not.
        http.put(f"{ARTIFACTS}/{root}/model.onnx", content=b"changed").raise_for_status()
        files = http.get(
            f"{MLGATE}/model-versions/files", params={"name": name, "version": version.version}
        )
        # The UI's download route finds the file in the version's tree.
        ui = http.get(
            "/model-versions/get-artifact",
            params={"name": name, "version": version.version, "path": "model.onnx"},
        )
    assert ui.status_code == 200 and ui.content == data
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(tmp_path)))
    assert local.name == "model.onnx" and local.read_bytes() == data
    assert files.status_code == 200, files.text
    assert [(f["path"], f["size"]) for f in files.json()["files"]] == [("model.onnx", 3000)]
    # The audit tool checks the copy's bytes against the recorded manifest.
    report = _verify(server, request.getfixturevalue("database_url"), f"models:/{name}/1",
                     _moto_for(server, request))  # fmt: skip
    assert report.returncode == 0, report.stdout + report.stderr
    assert "OK        model.onnx" in report.stdout


@pytest.mark.compat
def test_official_client_loads_production_after_the_logged_files_are_deleted(
    server: LiveServer, client_on: MlflowClient, database_url: str, request: pytest.FixtureRequest
) -> None:
    moto = _moto_for(server, request)
    model, x = _fitted_model()
    name = f"frozen-load-{uuid.uuid4().hex[:10]}"
    experiment = mlflow.set_experiment(f"frozen-load-{uuid.uuid4().hex[:10]}")
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(model, name="model", registered_model_name=name)
    client_on.transition_model_version_stage(name, "1", "Production")

    # Every file the experiment logged (runs and logged models) is deleted.
    with httpx.Client(base_url=server.url, timeout=60) as http:
        gone = http.delete(f"{ARTIFACTS}/{experiment.experiment_id}")
        assert gone.status_code == 200, gone.text
        logged = info.artifact_path.removeprefix("mlflow-artifacts:/")
        assert http.get(f"{ARTIFACTS}/{logged}/MLmodel").status_code == 404

    loaded = mlflow.pyfunc.load_model(f"models:/{name}/Production")
    assert list(loaded.predict(x)) == [0, 0, 1, 1]
    ok = _verify(server, database_url, f"models:/{name}/Production", moto)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    uri = client_on.get_model_version_download_uri(name, "1")
    assert uri.startswith(f"mlflow-artifacts:/{FROZEN_AREA}/sha256/")
    assert info.model_id not in uri


# --- the snapshot primitive of each backend -------------------------------------------------------


@pytest.fixture(params=["local", "s3"])
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    backend: ArtifactStorage
    if request.param == "local":
        backend = LocalStorage(tmp_path / "store")
    else:
        endpoint = request.getfixturevalue("moto_endpoint")
        # Tiny copy limits, so the part-by-part server-side copy of big objects runs too.
        backend = S3Storage(
            BUCKET,
            f"unit-{uuid.uuid4().hex}",
            client=test_artifacts.s3_client(endpoint),
            max_copy_object_bytes=6 * MiB,
            copy_part_bytes=5 * MiB,
        )
    yield backend
    await backend.aclose()


async def _put(storage: ArtifactStorage, path: str, data: bytes) -> None:
    async def body() -> Any:
        yield data

    await storage.put(parse_artifact_path(path), body())


async def _read(storage: ArtifactStorage, path: str) -> bytes:
    return b"".join([chunk async for chunk in await storage.open(parse_artifact_path(path))])


async def test_snapshot_hashes_the_copy_and_later_writes_to_the_source_do_not_reach_it(
    storage: ArtifactStorage,
) -> None:
    from registry.artifacts.freeze import freeze_tree, frozen_root

    small, big = b"first", os.urandom(13 * MiB)  # big: copied in parts on S3
    await _put(storage, "0/run/model/MLmodel", small)
    await _put(storage, "0/run/model/weights.bin", big)
    tree = await freeze_tree(storage, parse_artifact_path("0/run/model"))
    assert tree.root == frozen_root(tree.digest)
    assert {e.path: (e.size, e.sha256) for e in tree.files} == {
        "MLmodel": (len(small), sha256_hex(small)),
        "weights.bin": (len(big), sha256_hex(big)),
    }
    await _put(storage, "0/run/model/MLmodel", b"replaced")
    await storage.delete(parse_artifact_path("0/run"))
    assert await _read(storage, f"{tree.root}/MLmodel") == small
    assert sha256_hex(await _read(storage, f"{tree.root}/weights.bin")) == sha256_hex(big)
    # Nothing is left in staging, and freezing the same bytes again reuses the tree.
    assert await storage.list(parse_artifact_path(f"{FROZEN_AREA}/staging")) == []
    await _put(storage, "0/again/MLmodel", small)
    await _put(storage, "0/again/weights.bin", big)
    again = await freeze_tree(storage, parse_artifact_path("0/again"))
    assert again.root == tree.root and again.files == tree.files


def _count_publish_work(storage: ArtifactStorage, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record what publishing does: directory fsyncs and renames (local), copies and checks
    of objects into the published area (S3)."""
    done: list[str] = []
    if isinstance(storage, LocalStorage):
        from registry.artifacts.storage import local

        fsync, rename = local._fsync_directory, os.rename

        def counted_fsync(name: str) -> None:
            done.append(f"fsync {name}")
            fsync(name)

        def counted_rename(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
            done.append(f"rename {dst}")
            rename(src, dst, *args, **kwargs)

        monkeypatch.setattr(local, "_fsync_directory", counted_fsync)
        monkeypatch.setattr(local.os, "rename", counted_rename)
        return done
    assert isinstance(storage, S3Storage)
    client = storage._client
    for method in ("copy_object", "upload_part_copy", "head_object"):
        real = getattr(client, method)

        def counted(*args: Any, _real: Any = real, _name: str = method, **kwargs: Any) -> Any:
            if f"/{FROZEN_AREA}/sha256/" in f"/{kwargs.get('Key', '')}":
                done.append(f"{_name} {kwargs['Key']}")
            return _real(*args, **kwargs)

        monkeypatch.setattr(client, method, counted)
    return done


async def test_freezing_bytes_already_frozen_publishes_nothing_again(
    storage: ArtifactStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second freeze of the same bytes finds their tree and neither syncs its staged copy
    (local: only the published tree's parent is synced, in case its publisher's rename is not
    durable yet) nor copies anything (S3); the tree is served unchanged, staging is empty."""
    from registry.artifacts.freeze import freeze_tree

    small, other = b"model bytes", os.urandom(2048)
    await _put(storage, "0/a/model/MLmodel", small)
    await _put(storage, "0/a/model/sub/weights.bin", other)
    work = _count_publish_work(storage, monkeypatch)
    first = await freeze_tree(storage, parse_artifact_path("0/a/model"))
    # Local: the staged tree's two folders, the parent after the rename; S3: copy and check.
    assert len(work) >= 3, work
    work.clear()
    await _put(storage, "0/b/model/MLmodel", small)
    await _put(storage, "0/b/model/sub/weights.bin", other)
    again = await freeze_tree(storage, parse_artifact_path("0/b/model"))
    assert again.root == first.root and again.files == first.files
    if isinstance(storage, LocalStorage):
        parent = os.path.dirname(os.path.join(storage.root, *first.root.parts))
        assert work == [f"fsync {parent}"], work
    else:
        assert work == [], work
    assert await _read(storage, f"{first.root}/MLmodel") == small
    assert await _read(storage, f"{first.root}/sub/weights.bin") == other
    assert await storage.list(parse_artifact_path(f"{FROZEN_AREA}/staging")) == []


async def test_a_freeze_removes_its_staging_only_when_publishing_did_not(
    storage: ArtifactStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A published tree's staging is gone with the publish, and a folder without files stages
    nothing, so neither asks the store to delete (one thread trip or request fewer); a publish
    that fails still leaves no staging behind."""
    from registry.artifacts.freeze import EMPTY_ROOT, freeze_tree

    deleted: list[str] = []
    real_delete = storage.delete

    async def counted(path: Any) -> None:
        deleted.append(str(path))
        await real_delete(path)

    monkeypatch.setattr(storage, "delete", counted)
    staging = parse_artifact_path(f"{FROZEN_AREA}/staging")
    await _put(storage, "0/p/model/MLmodel", os.urandom(64))
    tree = await freeze_tree(storage, parse_artifact_path("0/p/model"))
    # S3's publish removes its staged objects itself (one delete); local's rename consumes them.
    by_publish = 0 if isinstance(storage, LocalStorage) else 1
    assert tree.files and len(deleted) == by_publish, deleted
    assert await storage.list(staging) == []
    empty = await freeze_tree(storage, parse_artifact_path("0/nothing-here"))
    assert empty.root == EMPTY_ROOT and empty.files == () and len(deleted) == by_publish

    async def failing(*_args: Any) -> None:
        raise OSError("the store went away mid-publish")

    monkeypatch.setattr(storage, "publish_tree", failing)
    await _put(storage, "0/q/model/MLmodel", os.urandom(64))
    with pytest.raises(OSError):
        await freeze_tree(storage, parse_artifact_path("0/q/model"))
    assert len(deleted) == by_publish + 1
    assert await storage.list(staging) == []


async def test_a_partly_published_tree_is_completed_by_the_next_freeze_of_its_bytes(
    storage: ArtifactStorage,
) -> None:
    """S3 has no atomic tree rename: a publish that failed midway leaves some of the tree (or
    an object that failed its check). The next freeze of the same bytes copies what is missing
    or differs, and keeps only what already holds the staged bytes."""
    from registry.artifacts.freeze import freeze_tree

    if isinstance(storage, LocalStorage):
        pytest.skip("a local tree is published by one atomic rename, never in part")
    assert isinstance(storage, S3Storage)
    await _put(storage, "0/a/model/MLmodel", b"first file")
    await _put(storage, "0/a/model/weights.bin", b"second file")
    tree = await freeze_tree(storage, parse_artifact_path("0/a/model"))
    # One object missing, the other replaced by wrong bytes (as a failed check leaves it).
    await storage.delete(parse_artifact_path(f"{tree.root}/MLmodel"))
    await _put(storage, f"{tree.root}/weights.bin", b"not the frozen bytes")
    await _put(storage, "0/b/MLmodel", b"first file")
    await _put(storage, "0/b/weights.bin", b"second file")
    again = await freeze_tree(storage, parse_artifact_path("0/b"))
    assert again.root == tree.root
    assert await _read(storage, f"{tree.root}/MLmodel") == b"first file"
    assert await _read(storage, f"{tree.root}/weights.bin") == b"second file"


async def test_the_upload_sweep_removes_a_killed_freeze_and_never_a_published_tree(
    storage: ArtifactStorage,
) -> None:
    """A server killed mid-freeze leaves ``mlgate-frozen/staging/<id>``; the stale-upload
    sweep removes it once it is older than the age, and never touches a published tree."""
    from registry.artifacts.freeze import freeze_tree

    await _put(storage, "0/run/model/MLmodel", b"kept")
    tree = await freeze_tree(storage, parse_artifact_path("0/run/model"))
    # What a freeze killed after its first snapshot leaves behind.
    half = parse_artifact_path(f"{FROZEN_AREA}/staging/{uuid.uuid4().hex}/sub/MLmodel")
    await storage.snapshot(parse_artifact_path("0/run/model/MLmodel"), half)
    staging = parse_artifact_path(f"{FROZEN_AREA}/staging")
    assert len(await storage.list(staging)) == 1

    await storage.sweep_stale_uploads(3600)  # younger than the age: spared
    assert len(await storage.list(staging)) == 1
    await storage.sweep_stale_uploads(-5)  # every entry now counts as older than the age
    assert await storage.list(staging) == []
    assert await _read(storage, f"{tree.root}/MLmodel") == b"kept"


async def test_local_snapshot_copies_and_hashes_when_hard_links_are_impossible(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from registry.artifacts.freeze import freeze_tree

    def no_links(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    storage = LocalStorage(tmp_path / "store")
    await _put(storage, "0/run/model/MLmodel", b"bytes")
    monkeypatch.setattr(os, "link", no_links)  # the OS refuses, as across file systems
    tree = await freeze_tree(storage, parse_artifact_path("0/run/model"))
    assert [(e.path, e.sha256) for e in tree.files] == [("MLmodel", sha256_hex(b"bytes"))]
    copy = tmp_path / "store" / tree.root.posix / "MLmodel"
    source = tmp_path / "store" / "0/run/model/MLmodel"
    assert copy.read_bytes() == b"bytes" and copy.stat().st_ino != source.stat().st_ino


# --- the gate's promotion path registers frozen versions too ---------------------------------------


@pytest.mark.compat
def test_a_version_registered_by_a_gate_promotion_is_served_from_its_frozen_copy(
    server: LiveServer, client_on: MlflowClient, database_url: str, request: pytest.FixtureRequest
) -> None:
    from tests.gates.test_webhook_live import _fitted, _gate, _logged_run, _promote

    moto = _moto_for(server, request)
    unique = uuid.uuid4().hex[:10]
    name = f"gated-{unique}"
    _, secret = _gate(server, name, "Staging", metrics=["val_auc >= 0.90"])
    run_id = _logged_run(unique, {"val_auc": 0.95})
    answer = _promote(
        server,
        secret,
        {"model": name, "run_id": run_id, "target": "Staging", "idempotency_key": unique},
    )
    assert answer.status_code == 200, answer.text
    decision = answer.json()
    assert decision["outcome"] == "passed" and decision["version"] == "1"

    experiment = client_on.get_run(run_id).info.experiment_id
    with httpx.Client(base_url=server.url, timeout=60) as http:
        assert http.delete(f"{ARTIFACTS}/{experiment}").status_code == 200
        resolved = _resolve(http, f"models:/{name}/Staging")
    assert resolved["digest"] == decision["digest"]
    _, x = _fitted()
    assert list(mlflow.pyfunc.load_model(f"models:/{name}/Staging").predict(x)) == [0, 0, 1, 1]
    ok = _verify(server, database_url, f"models:/{name}/Staging", moto)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert (
        resolved["download_uri"] == f"mlflow-artifacts:/{FROZEN_AREA}/sha256/{decision['digest']}"
    )
