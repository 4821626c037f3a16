"""Version integrity: fingerprints at registration, immutable files, resolve, ``mlgate verify``.

Service tests on a rolled-back session with a local store; then a live server (local folder)
driven over HTTP and with the official client; then the S3 backend end to end against a moto
server process.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import boto3
import httpx
import mlflow
import pytest
from mlflow import MlflowClient
from sqlalchemy.ext.asyncio import AsyncSession

from registry import service
from registry.artifacts.manifest import (
    ManifestEntry,
    compare_manifests,
    fingerprint_tree,
    manifest_digest,
)
from registry.artifacts.paths import (
    FROZEN_AREA,
    ArtifactPath,
    parse_artifact_path,
    parse_artifact_uri,
)
from registry.artifacts.storage import LocalStorage
from registry.schemas import CreateModelVersion
from tests.conftest import REPO_ROOT, LiveServer
from tests.registry import test_artifacts
from tests.registry.factories import ACTOR, make_model, make_run
from tracking import service as tracking
from tracking.core.errors import InvalidParameter, InvalidState, MlflowError, PermissionDenied

ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts"
MLGATE = "/api/2.0/mlgate"
BUCKET, S3_ENV = test_artifacts.BUCKET, test_artifacts.S3_ENV
# The moto process and the S3-backed server of the artifact tests, as fixtures of this module.
moto_endpoint = test_artifacts.moto_endpoint
s3_server = test_artifacts.s3_server


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def write(storage: LocalStorage, path: str, data: bytes) -> None:
    async def body() -> Any:
        yield data

    await storage.put(parse_artifact_path(path), body())


# --- the manifest format -------------------------------------------------------------------------


def test_manifest_digest_is_sha256_over_sorted_lines() -> None:
    entries = [
        ManifestEntry("model/weights.bin", 3, sha256_hex(b"abc")),
        ManifestEntry("MLmodel", 0, sha256_hex(b"")),
        ManifestEntry("dir with space/ünï.txt", 1, sha256_hex(b"x")),
    ]
    lines = sorted(f"{e.sha256}  {e.size}  {e.path}\n".encode() for e in entries)
    assert manifest_digest(entries) == sha256_hex(b"".join(lines))
    assert manifest_digest(reversed(entries)) == manifest_digest(entries)
    assert manifest_digest([]) is None


async def test_shell_pipeline_from_the_docstring_recomputes_the_digest(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "store")
    files = {
        "v/MLmodel": b"flavors: {}\n",
        "v/model.pkl": os.urandom(300_000),
        "v/sub dir/ünï code.txt": b"text",
        "v/sub dir/deeper/empty": b"",
    }
    for path, data in files.items():
        await write(storage, path, data)
    entries = await fingerprint_tree(storage, parse_artifact_path("v"))
    pipeline = (
        "find . -type f | sed 's|^\\./||' | while IFS= read -r f; do "
        'printf \'%s  %s  %s\\n\' "$(sha256sum < "$f" | cut -c1-64)" "$(stat -c %s "$f")" '
        '"$f"; done | LC_ALL=C sort | sha256sum | cut -c1-64'
    )
    out = subprocess.run(
        ["bash", "-c", pipeline],
        cwd=tmp_path / "store" / "v",
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == manifest_digest(entries)


async def test_fingerprint_tree_hashes_every_file_by_streaming(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "store")
    big = os.urandom(3 * 1024 * 1024 + 17)  # several storage chunks
    await write(storage, "root/a.txt", b"alpha")
    await write(storage, "root/nested/deep/big.bin", big)
    await write(storage, "root/nested/b.txt", b"")
    await write(storage, "elsewhere/c.txt", b"not under root")
    entries = await fingerprint_tree(storage, parse_artifact_path("root"))
    assert entries == [
        ManifestEntry("a.txt", 5, sha256_hex(b"alpha")),
        ManifestEntry("nested/b.txt", 0, sha256_hex(b"")),
        ManifestEntry("nested/deep/big.bin", len(big), sha256_hex(big)),
    ]
    assert await fingerprint_tree(storage, parse_artifact_path("nothing/here")) == []


async def test_fingerprint_tree_refuses_too_many_files(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "store")
    for n in range(4):
        await write(storage, f"root/{n}.txt", b"x")
    with pytest.raises(InvalidParameter, match="more than 3 files"):
        await fingerprint_tree(storage, parse_artifact_path("root"), max_files=3)


def test_compare_manifests_names_each_kind_of_difference() -> None:
    a, b, c, d = (ManifestEntry(p, 1, sha256_hex(p.encode())) for p in "abcd")
    changed = ManifestEntry("b", 1, sha256_hex(b"tampered"))
    resized = ManifestEntry("c", 2, c.sha256)
    checks = compare_manifests([a, b, c, d], [a, changed, resized, ManifestEntry("e", 0, "0")])
    assert [(x.path, x.status) for x in checks] == [
        ("a", "OK"),
        ("b", "MISMATCH"),
        ("c", "MISMATCH"),
        ("d", "MISSING"),
        ("e", "EXTRA"),
    ]


# --- the migration --------------------------------------------------------------------------------


async def test_migration_0003_backfills_artifact_roots_of_existing_versions(
    make_database: Any,
) -> None:
    import asyncio

    from sqlalchemy import text

    from gates.server import migrate
    from tracking.core.db import Database

    url = make_database("backfill")
    await asyncio.to_thread(migrate.upgrade, url, "0002")
    db = Database(url, pool_size=1)
    try:
        async with db.write() as s:
            await s.execute(
                text(
                    "INSERT INTO registered_models (name, creation_timestamp, "
                    "last_updated_timestamp, user_id, last_version) VALUES ('m', 1, 1, 'u', 1)"
                )
            )
            await s.execute(
                text(
                    "INSERT INTO model_versions (model_id, version, creation_timestamp, "
                    "last_updated_timestamp, user_id, current_stage, source, storage_location, "
                    "status) SELECT id, 1, 1, 1, 'u', 'None', 'runs:/r/model', "
                    "'mlflow-artifacts:/0/r/artifacts/model', 'READY' FROM registered_models"
                )
            )
        await asyncio.to_thread(migrate.upgrade, url, "0003")
        async with db.read() as s:
            row = (
                await s.execute(text("SELECT artifact_root, manifest_digest FROM model_versions"))
            ).one()
            assert tuple(row) == ("0/r/artifacts/model", None)
            assert await _writable(s, "0/r/artifacts/other.txt")
            assert not await _writable(s, "0/r/artifacts/model/MLmodel")
    finally:
        await db.dispose()


# --- registration, the write guard and resolve (service level) -----------------------------------


async def _run_root(session: AsyncSession, run_id: str) -> ArtifactPath:
    return parse_artifact_uri((await tracking.get_run(session, run_id)).info.artifact_uri)


async def _register(
    session: AsyncSession, storage: LocalStorage, name: str, run_id: str, path: str = "model"
) -> Any:
    """What the API does: check, freeze the files outside the transaction, create."""
    req = CreateModelVersion(name=name, source=f"runs:/{run_id}/{path}", run_id=run_id)
    location = await service.model_version_location(session, req)
    fingerprint = await service.freeze_version_files(storage, location)
    return await service.create_model_version(session, req, actor=ACTOR, fingerprint=fingerprint)


async def _register_unfrozen(session: AsyncSession, name: str, run_id: str) -> Any:
    """A version as registered before frozen copies (or with no store attached): its files
    are the run's own, protected by the write guard."""
    req = CreateModelVersion(name=name, source=f"runs:/{run_id}/model", run_id=run_id)
    return await service.create_model_version(session, req, actor=ACTOR)


async def test_create_records_files_and_digest_and_resolve_returns_them(
    session: AsyncSession, tmp_path: Path
) -> None:
    storage = LocalStorage(tmp_path / "store")
    name = await make_model(session)
    run_id = await make_run(session)
    root = await _run_root(session, run_id)
    await write(storage, f"{root}/model/MLmodel", b"flavors: {}\n")
    await write(storage, f"{root}/model/data/model.pkl", b"\x80\x04pickle")
    await write(storage, f"{root}/notes.txt", b"outside the version")

    mv = await _register(session, storage, name, run_id)
    assert mv.status == "READY"
    resolved = await service.resolve_model_uri(session, f"models:/{name}/{mv.version}")
    expected = [
        ManifestEntry("MLmodel", 12, sha256_hex(b"flavors: {}\n")),
        ManifestEntry("data/model.pkl", 8, sha256_hex(b"\x80\x04pickle")),
    ]
    assert [(f.path, f.size, f.sha256) for f in resolved.files] == [
        (e.path, e.size, e.sha256) for e in expected
    ]
    assert resolved.digest == manifest_digest(expected)
    frozen = f"{FROZEN_AREA}/sha256/{resolved.digest}"
    assert resolved.download_uri == f"mlflow-artifacts:/{frozen}"
    assert resolved.artifact_url == f"{ARTIFACTS}/{frozen}"
    assert resolved.source == f"runs:/{run_id}/model"
    assert resolved.run_id == run_id
    assert (resolved.name, resolved.version, resolved.current_stage) == (name, "1", "None")


async def test_a_version_over_an_empty_location_is_ready_with_no_digest(
    session: AsyncSession, tmp_path: Path
) -> None:
    storage = LocalStorage(tmp_path / "store")
    name = await make_model(session)
    mv = await _register(session, storage, name, await make_run(session))
    assert mv.status == "READY"
    resolved = await service.resolve_model_uri(session, f"models:/{name}/latest")
    assert resolved.digest is None and resolved.files == []
    assert resolved.download_uri == f"mlflow-artifacts:/{FROZEN_AREA}/empty"


async def test_a_fingerprint_of_another_location_is_refused(
    session: AsyncSession, tmp_path: Path
) -> None:
    storage = LocalStorage(tmp_path / "store")
    name = await make_model(session)
    run_id = await make_run(session)
    other = await service.freeze_version_files(storage, "mlflow-artifacts:/0/elsewhere")
    with pytest.raises(InvalidState):
        async with session.begin_nested():
            await service.create_model_version(
                session,
                CreateModelVersion(name=name, source=f"runs:/{run_id}/model", run_id=run_id),
                actor=ACTOR,
                fingerprint=other,
            )


async def _writable(session: AsyncSession, path: str) -> bool:
    try:
        await service.check_artifact_writable(session, parse_artifact_path(path))
    except PermissionDenied as exc:
        assert exc.error_code == "PERMISSION_DENIED"
        return False
    return True


async def test_guard_refuses_the_frozen_area_and_leaves_a_frozen_versions_run_writable(
    session: AsyncSession, tmp_path: Path
) -> None:
    storage = LocalStorage(tmp_path / "store")
    name = await make_model(session)
    run_id = await make_run(session)
    root = await _run_root(session, run_id)
    await write(storage, f"{root}/model/MLmodel", b"x")
    mv = await _register(session, storage, name, run_id)
    frozen = parse_artifact_uri(await service.get_download_uri(session, name, mv.version))
    for protected in (f"{frozen}/MLmodel", f"{frozen}", FROZEN_AREA, f"{FROZEN_AREA}/x/y"):
        assert not await _writable(session, protected), protected
    for free in (f"{root}/model/MLmodel", f"{root}", f"{root}/model/new.bin"):
        assert await _writable(session, free), free


async def test_guard_refuses_an_unfrozen_versions_root_what_is_inside_and_what_contains_it(
    session: AsyncSession, tmp_path: Path
) -> None:
    storage = LocalStorage(tmp_path / "store")
    name = await make_model(session)
    run_id = await make_run(session)
    root = await _run_root(session, run_id)
    await write(storage, f"{root}/model/MLmodel", b"x")
    await _register_unfrozen(session, name, run_id)

    for protected in (
        f"{root}/model",
        f"{root}/model/MLmodel",
        f"{root}/model/new/file.bin",
        f"{root}",  # deleting the run's folder would delete the version's files
        f"{root.parent}",
        root.parts[0],
    ):
        assert not await _writable(session, protected), protected
    for free in (
        f"{root}/notes.txt",
        f"{root}/mod",  # a string prefix of the root, not a segment prefix
        f"{root}/model-2/MLmodel",  # '-' sorts before '/'
        f"{root}/model0/MLmodel",  # '0' sorts right after '/'
        f"{root}/modelx",
    ):
        assert await _writable(session, free), free

    with pytest.raises(PermissionDenied) as err:
        await service.check_artifact_writable(session, parse_artifact_path(f"{root}/model/a"))
    assert f"name={name}, version=1" in err.value.message


async def test_deleting_an_unfrozen_version_unprotects_files_unless_another_shares_them(
    session: AsyncSession, tmp_path: Path
) -> None:
    storage = LocalStorage(tmp_path / "store")
    name = await make_model(session)
    run_id = await make_run(session)
    root = await _run_root(session, run_id)
    await write(storage, f"{root}/model/MLmodel", b"x")
    first = await _register_unfrozen(session, name, run_id)
    second = await _register_unfrozen(session, name, run_id)
    assert first.version != second.version

    await service.delete_model_version(session, name, first.version, actor=ACTOR)
    assert not await _writable(session, f"{root}/model/MLmodel")
    await service.delete_model_version(session, name, second.version, actor=ACTOR)
    assert await _writable(session, f"{root}/model/MLmodel")


async def test_resolve_follows_stages_aliases_and_latest(
    session: AsyncSession, tmp_path: Path
) -> None:
    storage = LocalStorage(tmp_path / "store")
    name = await make_model(session)
    for _ in range(3):
        await _register(session, storage, name, await make_run(session))
    await service.transition_stage(session, name, "2", "Production", actor=ACTOR)
    await service.set_alias(session, name, "champion", "1", actor=ACTOR)

    async def version(uri: str) -> str:
        return (await service.resolve_model_uri(session, uri)).version

    assert await version(f"models:/{name}/Production") == "2"
    assert await version(f"models:/{name}/pRoDuCtIoN") == "2"
    assert await version(f"models:/{name}/latest") == "3"
    assert await version(f"models:/{name}/LATEST") == "3"
    assert await version(f"models:/{name}/1") == "1"
    assert await version(f"models:/{name}@champion") == "1"
    assert (await service.resolve_model_uri(session, f"models:/{name}@champion")).aliases == [
        "champion"
    ]
    for missing in (
        f"models:/{name}/Staging",
        f"models:/{name}/9",
        f"models:/{name}@nobody",
        f"models:/{name}-nope/1",
    ):
        with pytest.raises(MlflowError) as err:
            await service.resolve_model_uri(session, missing)
        assert (err.value.status_code, err.value.error_code) == (404, "RESOURCE_DOES_NOT_EXIST")


async def test_verify_reports_ok_then_each_kind_of_tampering(
    session: AsyncSession, tmp_path: Path
) -> None:
    storage = LocalStorage(tmp_path / "store")
    name = await make_model(session)
    run_id = await make_run(session)
    root = await _run_root(session, run_id)
    for file in ("MLmodel", "model.pkl", "conda.yaml"):
        await write(storage, f"{root}/model/{file}", file.encode() * 10)
    await _register(session, storage, name, run_id)
    uri = f"models:/{name}/1"

    report = await service.verify_fingerprint(
        storage, await service.recorded_fingerprint(session, uri)
    )
    assert report.ok and [c.status for c in report.checks] == ["OK"] * 3

    # Tampering below the store (an operator's access, not a client's) is what verify finds.
    frozen = parse_artifact_uri(await service.get_download_uri(session, name, "1"))
    store_dir = tmp_path / "store" / frozen.posix
    (store_dir / "model.pkl").unlink()
    (store_dir / "model.pkl").write_bytes(b"evil")
    (store_dir / "conda.yaml").unlink()
    (store_dir / "extra.py").write_bytes(b"import os")
    report = await service.verify_fingerprint(
        storage, await service.recorded_fingerprint(session, uri)
    )
    assert not report.ok
    assert {c.path: c.status for c in report.checks} == {
        "MLmodel": "OK",
        "conda.yaml": "MISSING",
        "extra.py": "EXTRA",
        "model.pkl": "MISMATCH",
    }
    assert report.actual_digest != report.recorded.digest


# --- a live server over HTTP (local folder) ------------------------------------------------------


def _register_over_http(server: LiveServer, files: dict[str, bytes]) -> tuple[str, str, str]:
    """A run whose ``model/`` folder holds ``files``, registered as version 1 of a new model."""
    api = f"{server.url}/api/2.0/mlflow"
    name = f"integrity-{uuid.uuid4().hex[:10]}"
    with httpx.Client(timeout=60) as http:
        run = http.post(f"{api}/runs/create", json={"experiment_id": "0"}).json()["run"]["info"]
        root = run["artifact_uri"].removeprefix("mlflow-artifacts:/")
        for path, data in files.items():
            http.put(f"{server.url}{ARTIFACTS}/{root}/model/{path}", content=data)
        http.post(f"{api}/registered-models/create", json={"name": name}).raise_for_status()
        created = http.post(
            f"{api}/model-versions/create",
            json={"name": name, "source": f"runs:/{run['run_id']}/model", "run_id": run["run_id"]},
        )
        created.raise_for_status()
        assert created.json()["model_version"]["status"] == "READY"
    return name, run["run_id"], root


def _frozen_root(server: LiveServer, name: str, version: str = "1") -> str:
    r = httpx.get(
        f"{server.url}/api/2.0/mlflow/model-versions/get-download-uri",
        params={"name": name, "version": version},
    )
    return str(r.json()["artifact_uri"]).removeprefix("mlflow-artifacts:/")


def test_writes_to_a_registered_versions_files_are_refused_and_its_run_stays_writable(
    live_server: LiveServer,
) -> None:
    name, _, root = _register_over_http(live_server, {"MLmodel": b"original", "w.bin": b"w"})
    frozen = _frozen_root(live_server, name)
    assert frozen.startswith(f"{FROZEN_AREA}/sha256/")
    base = f"{live_server.url}{ARTIFACTS}/{frozen}"
    with httpx.Client(timeout=60) as http:
        for method, url in (
            ("PUT", f"{base}/MLmodel"),
            ("PUT", f"{base}/new.txt"),
            ("DELETE", f"{base}/MLmodel"),
            ("DELETE", base),
        ):
            r = http.request(method, url, content=b"tampered" if method == "PUT" else None)
            assert r.status_code == 403, (method, url, r.text)
            body = r.json()
            assert set(body) == {"error_code", "message"}
            assert body["error_code"] == "PERMISSION_DENIED"
        mpu = http.post(
            f"{live_server.url}/api/2.0/mlflow-artifacts/mpu/create/{frozen}",
            json={"path": "big.bin", "num_parts": 1},
        )
        assert mpu.status_code == 403
        assert http.get(f"{base}/MLmodel").content == b"original"

        # The run's folder is the run's: changing or deleting it leaves the version alone.
        run = f"{live_server.url}{ARTIFACTS}/{root}"
        assert http.put(f"{run}/model/MLmodel", content=b"rewritten").status_code == 200
        assert http.delete(f"{run}/model").status_code == 200
        assert http.get(f"{base}/MLmodel").content == b"original"

        # Deleting the version keeps its frozen copy read-only (another version may share it).
        http.request(
            "DELETE",
            f"{live_server.url}/api/2.0/mlflow/model-versions/delete",
            json={"name": name, "version": "1"},
        ).raise_for_status()
        assert http.put(f"{base}/MLmodel", content=b"rewritten").status_code == 403
        assert http.get(f"{base}/MLmodel").content == b"original"


def test_resolve_and_files_endpoints_over_http(live_server: LiveServer) -> None:
    files = {"MLmodel": b"m", "a/b.txt": b"bb", "c.bin": b"ccc"}
    name, run_id, _ = _register_over_http(live_server, files)
    frozen = _frozen_root(live_server, name)
    with httpx.Client(base_url=f"{live_server.url}{MLGATE}", timeout=60) as http:
        r = http.get("/models/resolve", params={"uri": f"models:/{name}/1"})
        assert r.status_code == 200, r.text
        got = r.json()
        expected_files = [
            {"path": p, "size": len(files[p]), "sha256": sha256_hex(files[p])}
            for p in sorted(files)
        ]
        assert got == {
            "name": name,
            "version": "1",
            "current_stage": "None",
            "aliases": [],
            "run_id": run_id,
            "source": f"runs:/{run_id}/model",
            "download_uri": f"mlflow-artifacts:/{frozen}",
            "artifact_url": f"{ARTIFACTS}/{frozen}",
            "digest": manifest_digest(ManifestEntry(**f) for f in expected_files),
            "files": expected_files,
        }
        page = http.get(
            "/model-versions/files", params={"name": name, "version": 1, "max_results": 2}
        )
        assert page.status_code == 200
        first = page.json()
        assert [f["path"] for f in first["files"]] == ["MLmodel", "a/b.txt"]
        assert first["digest"] == got["digest"]
        rest = http.get(
            "/model-versions/files",
            params={"name": name, "version": 1, "page_token": first["next_page_token"]},
        ).json()
        assert [f["path"] for f in rest["files"]] == ["c.bin"] and "next_page_token" not in rest

        for uri, code in (
            (f"models:/{name}/2", "RESOURCE_DOES_NOT_EXIST"),
            (f"models:/{name}/Production", "RESOURCE_DOES_NOT_EXIST"),
            (f"models:/{name}@champion", "RESOURCE_DOES_NOT_EXIST"),
            (f"models:/{name}-missing/1", "RESOURCE_DOES_NOT_EXIST"),
            (f"models:/{name}/Nonsense", "INVALID_PARAMETER_VALUE"),
        ):
            r = http.get("/models/resolve", params={"uri": uri})
            assert r.json()["error_code"] == code, uri
            assert r.status_code == (404 if code == "RESOURCE_DOES_NOT_EXIST" else 400)

    # The MLflow API's version JSON is unchanged: the digest is only on mlgate's own API.
    mv = httpx.get(
        f"{live_server.url}/api/2.0/mlflow/model-versions/get", params={"name": name, "version": 1}
    ).json()["model_version"]
    assert not {"digest", "manifest_digest", "files", "artifact_root"} & set(mv)


def _mlgate_verify(
    uri: str, database_url: str, destination: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "gates.server",
            "verify",
            uri,
            "--database-url",
            database_url,
            "--artifacts-destination",
            destination,
        ],
        cwd=REPO_ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_mlgate_verify_passes_then_names_tampered_and_missing_files(
    live_server: LiveServer, database_url: str
) -> None:
    name, _, _ = _register_over_http(
        live_server, {"MLmodel": b"m" * 100, "model.pkl": b"p" * 1000, "conda.yaml": b"c"}
    )
    destination = str(live_server.artifacts)
    for uri in (f"models:/{name}/1", f"models:/{name}/latest"):
        ok = _mlgate_verify(uri, database_url, destination)
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert "OK        model.pkl" in ok.stdout
        assert ": OK, 3 files match" in ok.stdout

    # Tampering below the store (an operator's access, not a client's) is what verify finds.
    folder = live_server.artifacts / _frozen_root(live_server, name)
    (folder / "model.pkl").unlink()
    (folder / "model.pkl").write_bytes(b"p" * 999 + b"!")  # same size, other bytes
    bad = _mlgate_verify(f"models:/{name}/1", database_url, destination)
    assert bad.returncode == 1
    assert "MISMATCH  model.pkl" in bad.stdout
    assert "OK        MLmodel" in bad.stdout
    assert "FAILED, 1 mismatched, 0 missing, 0 extra" in bad.stdout

    (folder / "conda.yaml").unlink()
    gone = _mlgate_verify(f"models:/{name}/1", database_url, destination, {})
    assert gone.returncode == 1
    assert "MISSING   conda.yaml" in gone.stdout

    as_json = subprocess.run(
        [sys.executable, "-m", "gates.server", "verify", f"models:/{name}/1", "--json"],
        cwd=REPO_ROOT,
        env={
            **os.environ,
            "MLGATE_DATABASE_URL": database_url,
            "MLGATE_ARTIFACTS_DESTINATION": destination,
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert as_json.returncode == 1
    import json

    report = json.loads(as_json.stdout)
    assert report["ok"] is False
    assert {f["path"]: f["status"] for f in report["files"]} == {
        "MLmodel": "OK",
        "conda.yaml": "MISSING",
        "model.pkl": "MISMATCH",
    }


def test_mlgate_verify_errors_are_exit_1(live_server: LiveServer, database_url: str) -> None:
    for uri, message in (
        ("models:/no-such-model-anywhere/1", "not found"),
        ("file:///etc/passwd", "Invalid model URI"),
    ):
        r = _mlgate_verify(uri, database_url, str(live_server.artifacts))
        assert r.returncode == 1
        assert message in r.stderr


# --- the official client -------------------------------------------------------------------------


def _fitted_model() -> tuple[Any, Any]:
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    x = np.array([[0.0], [1.0], [2.0], [3.0]])
    return LogisticRegression().fit(x, np.array([0, 0, 1, 1])), x


def _check_download_matches(server: LiveServer, resolved: dict[str, Any]) -> None:
    """Fetch every listed file as a non-Python client would; recompute hashes and digest."""
    entries = []
    with httpx.Client(base_url=server.url, timeout=60) as http:
        for f in resolved["files"]:
            data = http.get(f"{resolved['artifact_url']}/{f['path']}").content
            assert (len(data), sha256_hex(data)) == (f["size"], f["sha256"]), f["path"]
            entries.append(ManifestEntry(f["path"], len(data), sha256_hex(data)))
    assert manifest_digest(entries) == resolved["digest"]


@pytest.mark.compat
def test_official_client_log_model_then_resolve_returns_a_matching_digest(
    mlflow_tracking: str, live_server: LiveServer, unique: str, tmp_path: Path
) -> None:
    model, x = _fitted_model()
    name = f"digest-{unique}"
    mlflow.set_experiment(f"digest-{unique}")
    with mlflow.start_run() as run:
        info = mlflow.sklearn.log_model(
            model, name="model", registered_model_name=name, serialization_format="cloudpickle"
        )
    client = MlflowClient()
    client.set_registered_model_alias(name, "champion", "1")
    resolved = httpx.get(
        f"{live_server.url}{MLGATE}/models/resolve", params={"uri": f"models:/{name}@champion"}
    ).json()
    assert resolved["version"] == "1" and resolved["aliases"] == ["champion"]
    assert resolved["digest"] and len(resolved["digest"]) == 64
    assert {"MLmodel", "model.pkl"} <= {f["path"] for f in resolved["files"]}
    assert resolved["download_uri"] == client.get_model_version_download_uri(name, "1")
    _check_download_matches(live_server, resolved)

    # The same bytes, downloaded by the official client.
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{name}/1", dst_path=str(tmp_path)))
    for f in resolved["files"]:
        assert sha256_hex((local / f["path"]).read_bytes()) == f["sha256"]

    # The version's files are frozen (the client's own artifact repository is refused) ...
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
    from requests import HTTPError

    extra = tmp_path / "evil.py"
    extra.write_text("import os\n")
    with pytest.raises(HTTPError, match="PERMISSION_DENIED") as err:
        get_artifact_repository(resolved["download_uri"]).log_artifact(str(extra))
    assert err.value.response.status_code == 403
    # ... while the run's own artifacts stay writable.
    client.log_text(run.info.run_id, "still writable", "notes/after-registration.txt")
    assert mlflow.artifacts.load_text(f"{run.info.artifact_uri}/notes/after-registration.txt")
    assert info.model_id not in resolved["download_uri"]  # served from the frozen copy
    assert list(mlflow.pyfunc.load_model(f"models:/{name}@champion").predict(x)) == [0, 0, 1, 1]


# --- the S3 backend end to end -------------------------------------------------------------------


@pytest.mark.compat
@pytest.mark.slow
def test_s3_backend_log_register_promote_load_resolve_and_verify(
    s3_server: LiveServer, moto_endpoint: str, database_url: str, unique: str
) -> None:
    model, x = _fitted_model()
    name = f"s3-digest-{unique}"
    mlflow.set_tracking_uri(s3_server.url)
    mlflow.set_registry_uri(s3_server.url)
    mlflow.set_experiment(f"s3-digest-{unique}")
    with mlflow.start_run():
        mlflow.sklearn.log_model(model, name="model", registered_model_name=name)  # skops
    client = MlflowClient()
    client.transition_model_version_stage(name, "1", "Production", archive_existing_versions=True)
    loaded = mlflow.pyfunc.load_model(f"models:/{name}/Production")
    assert list(loaded.predict(x)) == [0, 0, 1, 1]

    resolved = httpx.get(
        f"{s3_server.url}{MLGATE}/models/resolve", params={"uri": f"models:/{name}/production"}
    ).json()
    assert resolved["current_stage"] == "Production" and resolved["digest"]
    _check_download_matches(s3_server, resolved)

    env = {"MLGATE_S3_ENDPOINT_URL": moto_endpoint, **S3_ENV}
    destination = f"s3://{BUCKET}/store"
    ok = _mlgate_verify(f"models:/{name}/Production", database_url, destination, env)
    assert ok.returncode == 0, ok.stdout + ok.stderr

    # Tamper with one object directly in the bucket: verify names it.
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1", **_keys())
    root = resolved["download_uri"].removeprefix("mlflow-artifacts:/")
    s3.put_object(Bucket=BUCKET, Key=f"store/{root}/MLmodel", Body=b"flavors: {}\n")
    bad = _mlgate_verify(f"models:/{name}/1", database_url, destination, env)
    assert bad.returncode == 1
    assert "MISMATCH  MLmodel" in bad.stdout


def _keys() -> dict[str, str]:
    return {
        "aws_access_key_id": S3_ENV["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": S3_ENV["AWS_SECRET_ACCESS_KEY"],
    }
