"""Helpers for attestation tests: an independent DSSE/in-toto verifier and a live-server gate.

The verifier below is written from the DSSE and in-toto specifications with ``cryptography``
alone: it shares no code with ``gates.attestations``, so a bug there cannot hide itself.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import mlflow
import msgspec
import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_public_key,
)

from tests.conftest import REPO_ROOT, LiveServer
from tests.gates.factories import signed

MLGATE = "/api/2.0/mlgate"
KEYS_PATH = "/.well-known/mlgate/attestation-keys"


def independent_pae(payload_type: str, payload: bytes) -> bytes:
    t = payload_type.encode()
    return b" ".join([b"DSSEv1", str(len(t)).encode(), t, str(len(payload)).encode(), payload])


def published_keys(server: LiveServer) -> dict[str, Ed25519PublicKey]:
    """key id (recomputed: sha256 of the DER public key) -> key, from the well-known URL."""
    answer = httpx.get(f"{server.url}{KEYS_PATH}")
    assert answer.status_code == 200, answer.text
    out = {}
    for entry in answer.json()["keys"]:
        key = load_pem_public_key(entry["public_key_pem"].encode())
        assert isinstance(key, Ed25519PublicKey)
        der = key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        assert entry["key_id"] == hashlib.sha256(der).hexdigest()
        out[entry["key_id"]] = key
    return out


def independently_verified(envelope: dict[str, Any], keys: dict[str, Any]) -> dict[str, Any]:
    """The statement, after checking the envelope's signature by hand; raises otherwise."""
    assert envelope["payloadType"] == "application/vnd.in-toto+json"
    payload = base64.b64decode(envelope["payload"])
    (sig,) = envelope["signatures"]
    keys[sig["keyid"]].verify(
        base64.b64decode(sig["sig"]), independent_pae(envelope["payloadType"], payload)
    )
    statement: dict[str, Any] = json.loads(payload)
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    return statement


def sha256_tree(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def logged_run(unique: str, metrics: dict[str, float]) -> str:
    from sklearn.linear_model import LogisticRegression

    x = np.array([[0.0], [1.0], [2.0], [3.0]])
    model = LogisticRegression().fit(x, np.array([0, 0, 1, 1]))
    mlflow.set_experiment(f"attest-{unique}")
    with mlflow.start_run() as run:
        mlflow.log_metrics(metrics)
        mlflow.sklearn.log_model(model, name="model", serialization_format="cloudpickle")
    return run.info.run_id


def make_gate(server: LiveServer, model: str, target: str, **rules: Any) -> tuple[str, str]:
    name = f"gate-{uuid.uuid4().hex[:10]}"
    body = {"name": name, "model": model, "target": target, **rules}
    created = httpx.post(f"{server.url}{MLGATE}/gates/create", json=body)
    assert created.status_code == 200, created.text
    secret = httpx.post(f"{server.url}{MLGATE}/gates/secrets/add", json={"gate": name})
    assert secret.status_code == 200, secret.text
    return name, secret.json()["secret"]["secret"]


def promote(server: LiveServer, secret: str, **body: Any) -> dict[str, Any]:
    body.setdefault("idempotency_key", uuid.uuid4().hex)
    raw = msgspec.json.encode(body)
    headers = {**signed(secret, raw), "content-type": "application/json"}
    answer = httpx.post(
        f"{server.url}{MLGATE}/gates/promote", content=raw, headers=headers, timeout=60
    )
    assert answer.status_code in (200, 202), answer.text
    decision: dict[str, Any] = answer.json()
    return decision


def attestations(server: LiveServer, name: str, version: str | None = None) -> list[Any]:
    params = {"name": name, **({"version": version} if version else {})}
    answer = httpx.get(f"{server.url}{MLGATE}/attestations", params=params)
    assert answer.status_code == 200, answer.text
    found: list[Any] = answer.json()["attestations"]
    return found


def admission(server: LiveServer, **params: str) -> dict[str, Any]:
    answer = httpx.get(f"{server.url}{MLGATE}/admission", params=params)
    assert answer.status_code == 200, answer.text
    out: dict[str, Any] = answer.json()
    return out


def version_digest(server: LiveServer, name: str, version: str) -> str:
    answer = httpx.get(
        f"{server.url}{MLGATE}/models/resolve", params={"uri": f"models:/{name}/{version}"}
    )
    assert answer.status_code == 200, answer.text
    return f"sha256:{answer.json()['digest']}"


def attest_verify(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gates.server", "attest", "verify", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
