"""Promotion attestations against a live server: produced by the signed webhook and by a final
approval, verified by an independent implementation and by `mlgate attest verify` (which must
refuse tampered payloads and files), and referenced from the audit trail."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import httpx
import mlflow
import pytest

from tests.conftest import LiveServer
from tests.gates.attest_support import (
    KEYS_PATH,
    MLGATE,
    attest_verify,
    attestations,
    independently_verified,
    logged_run,
    make_gate,
    promote,
    published_keys,
    sha256_tree,
)

pytestmark = pytest.mark.compat


def _download(name: str, version: str, into: Path) -> Path:
    # The version's stored files (a models:/ download would add the client's own
    # registered_model_meta file beside them, which no attestation names).
    uri = mlflow.MlflowClient().get_model_version_download_uri(name, version)
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(into)))


def _check(predicate: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [c for c in predicate["checks"] if c["name"] == name]
    return found


def test_webhook_promotion_is_attested_and_verifies_independently(
    mlflow_tracking: str, live_server: LiveServer, unique: str, tmp_path: Path
) -> None:
    name = f"att-{unique}"
    gate, secret = make_gate(live_server, name, "Staging", metrics=["val_auc >= 0.9"])
    run_id = logged_run(unique, {"val_auc": 0.95})
    decision = promote(
        live_server, secret, model=name, run_id=run_id, target="Staging", requested_by="octocat"
    )
    assert decision["outcome"] == "passed"
    (att,) = attestations(live_server, name, decision["version"])
    assert att["decision_id"] == decision["decision_id"] and att["target"] == "Staging"

    statement = independently_verified(att["envelope"], published_keys(live_server))
    assert att["envelope"]["signatures"][0]["keyid"] == att["key_id"]
    # Subjects: exactly the version's files, with the sha256 of the bytes a client downloads.
    files = sha256_tree(_download(name, decision["version"], tmp_path / "dl"))
    assert {s["name"]: s["digest"]["sha256"] for s in statement["subject"]} == files
    assert statement["predicateType"] == "https://mlgate.dev/promotion/v1"
    predicate = statement["predicate"]
    assert predicate["target"] == "Staging"
    assert predicate["model"] == {
        "name": name,
        "version": decision["version"],
        "manifest_digest": f"sha256:{decision['digest']}",
    }
    assert predicate["gate"]["name"] == gate
    assert predicate["gate"]["policy_version"] == decision["policy_version"]
    metric = _check(predicate, "metric:val_auc")
    assert (metric["verdict"], metric["observed"], metric["threshold"]) == ("pass", 0.95, 0.9)
    # The requester is the verified principal (the gate secret); the body's claim is labelled.
    assert predicate["requester"]["principal"] == decision["actor"]
    assert predicate["requester"]["principal"].startswith(f"gate:{gate}/")
    assert predicate["requester"]["claim"] == "octocat"
    assert predicate["approvers"] == []
    assert predicate["decision"]["id"] == decision["decision_id"]

    # The audit entry names the attestation and the digest of the signed payload.
    audit = httpx.get(
        f"{live_server.url}{MLGATE}/audit",
        params={"kind": "gate.attested", "subject": f"model:{name}"},
    ).json()["entries"]
    (entry,) = audit
    assert entry["payload"]["attestation_id"] == att["attestation_id"]
    payload = base64.b64decode(att["envelope"]["payload"])
    import hashlib

    assert entry["payload"]["payload_sha256"] == hashlib.sha256(payload).hexdigest()


def test_final_approval_is_attested_with_requester_and_every_approver(
    mlflow_tracking: str, live_server: LiveServer, unique: str
) -> None:
    name = f"att-appr-{unique}"
    _, secret = make_gate(live_server, name, "Production", required_approvals=1)
    run_id = logged_run(unique, {"val_auc": 0.91})
    decision = promote(live_server, secret, model=name, run_id=run_id, target="Production")
    assert decision["outcome"] == "pending_approval"
    assert attestations(live_server, name) == []  # nothing moved, nothing attested
    approved = httpx.post(
        f"{live_server.url}{MLGATE}/approvals/approve",
        json={"request_id": decision["approval_request_id"]},
    )
    assert approved.status_code == 200, approved.text
    (att,) = attestations(live_server, name, decision["version"])
    statement = independently_verified(att["envelope"], published_keys(live_server))
    predicate = statement["predicate"]
    assert predicate["decision"]["trigger"] == "approval"
    assert predicate["decision"]["id"] != decision["decision_id"]  # the final re-evaluation
    assert predicate["requester"]["principal"] == decision["actor"]
    assert predicate["approvers"] == ["anonymous"]  # auth is off on this server
    assert _check(predicate, "digest_unchanged")["verdict"] == "pass"


def _attested(server: LiveServer, unique: str, tmp_path: Path) -> tuple[Path, Path, dict[str, Any]]:
    """(envelope file, downloaded model folder, attestation) of a fresh gated promotion."""
    name = f"att-cli-{unique}"
    _, secret = make_gate(server, name, "Staging")
    run_id = logged_run(unique, {"val_auc": 0.93})
    decision = promote(server, secret, model=name, run_id=run_id, target="Staging")
    (att,) = attestations(server, name, decision["version"])
    envelope = tmp_path / "envelope.json"
    envelope.write_text(json.dumps(att["envelope"]))
    return envelope, _download(name, decision["version"], tmp_path / "model"), att


def test_attest_verify_accepts_the_files_and_refuses_any_tampering(
    mlflow_tracking: str, live_server: LiveServer, unique: str, tmp_path: Path
) -> None:
    envelope, files, att = _attested(live_server, unique, tmp_path)
    keys_url = f"{live_server.url}{KEYS_PATH}"
    ok = attest_verify("--envelope", str(envelope), "--keys-url", keys_url, "--files", str(files))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.startswith("OK ")
    expected = ("--target", "Staging", "--model", att["model"])
    args = ("--envelope", str(envelope), "--keys-url", keys_url, "--files", str(files))
    assert attest_verify(*args, *expected).returncode == 0
    elsewhere = attest_verify(*args, "--target", "Production")
    assert elsewhere.returncode == 1 and "target Staging != expected Production" in elsewhere.stdout

    # A changed byte in one file.
    model_file = files / "MLmodel"
    original = model_file.read_bytes()
    model_file.write_bytes(original + b"\n")
    bad = attest_verify("--envelope", str(envelope), "--keys-url", keys_url, "--files", str(files))
    assert bad.returncode == 1 and "MLmodel: sha256" in bad.stdout
    model_file.write_bytes(original)
    # An extra file, then a missing one.
    (files / "extra.bin").write_bytes(b"x")
    bad = attest_verify("--envelope", str(envelope), "--keys-url", keys_url, "--files", str(files))
    assert bad.returncode == 1 and "extra.bin: extra" in bad.stdout
    (files / "extra.bin").unlink()
    model_file.unlink()
    bad = attest_verify("--envelope", str(envelope), "--keys-url", keys_url, "--files", str(files))
    assert bad.returncode == 1 and "MLmodel: missing" in bad.stdout
    model_file.write_bytes(original)

    # A payload edited to attest other bytes: the signature no longer verifies.
    doc = json.loads(envelope.read_text())
    statement = json.loads(base64.b64decode(doc["payload"]))
    statement["predicate"]["target"] = "Production"
    doc["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    forged = envelope.with_name("forged.json")
    forged.write_text(json.dumps(doc))
    bad = attest_verify("--envelope", str(forged), "--keys-url", keys_url, "--files", str(files))
    assert bad.returncode == 1 and "signature" in bad.stdout

    # The same envelope with a key that did not sign it.
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    other = tmp_path / "other.pem"
    other.write_bytes(
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    bad = attest_verify("--envelope", str(envelope), "--key", str(other), "--files", str(files))
    assert bad.returncode == 1 and "no signature verifies" in bad.stdout
    usage = attest_verify(
        "--envelope", str(tmp_path / "none.json"), "--key", str(other), "--files", str(files)
    )
    assert usage.returncode == 2


def test_attestations_need_a_known_model_and_a_valid_version(live_server: LiveServer) -> None:
    missing = httpx.get(
        f"{live_server.url}{MLGATE}/attestations", params={"name": "no-such-model-x"}
    )
    assert missing.status_code == 404 and missing.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    bad = httpx.get(f"{live_server.url}{MLGATE}/attestations", params={"name": "x", "version": "a"})
    assert bad.status_code == 400 and bad.json()["error_code"] == "INVALID_PARAMETER_VALUE"
