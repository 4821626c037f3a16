"""Attestation keys: configured PEM files sign, a rotation keeps every earlier key published
(from the database, even once its file is gone from the setting), so old attestations verify."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import mlflow
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.conftest import REPO_ROOT, LiveServer, start_server, stop_server
from tests.gates.attest_support import (
    KEYS_PATH,
    attest_verify,
    attestations,
    independently_verified,
    logged_run,
    make_gate,
    promote,
    published_keys,
)

pytestmark = pytest.mark.compat


def _key_file(path: Path) -> Path:
    key = Ed25519PrivateKey.generate()
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    return path


@pytest.fixture
def tracking_restored() -> Iterator[None]:
    saved = mlflow.get_tracking_uri()
    yield
    mlflow.set_tracking_uri(saved)
    mlflow.set_registry_uri(saved)


def _serve(database_url: str, workdir: Path, keys: str) -> LiveServer:
    workdir.mkdir()
    server = start_server(database_url, workdir, extra_env={"MLGATE_ATTESTATION_KEYS": keys})
    mlflow.set_tracking_uri(server.url)
    mlflow.set_registry_uri(server.url)
    return server


def _attest_once(server: LiveServer, unique: str) -> dict[str, object]:
    name = f"rot-{unique}"
    _, secret = make_gate(server, name, "Staging")
    decision = promote(
        server, secret, model=name, run_id=logged_run(unique, {"m": 1.0}), target="Staging"
    )
    (att,) = attestations(server, name, str(decision["version"]))
    return att  # type: ignore[no-any-return]


def test_rotation_keeps_old_attestations_verifiable(
    database_url: str, tmp_path: Path, unique: str, tracking_restored: None
) -> None:
    old_key = _key_file(tmp_path / "old.pem")
    new_key = _key_file(tmp_path / "new.pem")
    server = _serve(database_url, tmp_path / "a", str(old_key))
    try:
        old = _attest_once(server, f"{unique}a")
    finally:
        stop_server(server)
    # Rotated: only the new key is configured now.
    server = _serve(database_url, tmp_path / "b", str(new_key))
    try:
        new = _attest_once(server, f"{unique}b")
        assert new["key_id"] != old["key_id"]
        keys = published_keys(server)
        assert {old["key_id"], new["key_id"]} <= set(keys)
        listed = httpx.get(f"{server.url}{KEYS_PATH}").json()["keys"]
        active = {k["key_id"]: k["active"] for k in listed}
        assert active[new["key_id"]] is True and active[old["key_id"]] is False
        # Both verify independently against the published keys.
        independently_verified(old["envelope"], keys)  # type: ignore[arg-type]
        independently_verified(new["envelope"], keys)  # type: ignore[arg-type]
        # And with mlgate attest verify, from the published keys (files: none given match,
        # so the signature line is what is checked here, the files by the other tests).
        envelope = tmp_path / "old.json"
        envelope.write_text(json.dumps(old))
        empty = tmp_path / "empty"
        empty.mkdir()
        checked = attest_verify(
            "--envelope",
            str(envelope),
            "--keys-url",
            f"{server.url}{KEYS_PATH}",
            "--files",
            str(empty),
            "--json",
        )
        report = json.loads(checked.stdout)
        assert report["key_id"] == old["key_id"]
        assert report["problems"] and all(p.endswith(": missing") for p in report["problems"])
    finally:
        stop_server(server)


def test_server_refuses_to_start_with_an_unusable_attestation_key(
    database_url: str, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("not a key")
    env = {
        "MLGATE_DATABASE_URL": database_url,
        "MLGATE_ATTESTATION_KEYS": str(bad),
        "MLGATE_ARTIFACTS_DESTINATION": str(tmp_path / "art"),
        "PATH": "/usr/bin:/bin",
        "MLGATE_DATA_DIR": str(tmp_path),
    }
    done = subprocess.run(
        [sys.executable, "-m", "gates.server", "server", "--port", "1"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "attestation key" in done.stderr
