"""deploy/kubernetes/admission: its manifests validate and fit together, and its webhook
service, run as a process against a live mlgate, admits a pod exactly while the oracle
approves the pod's model bytes for its target (and refuses otherwise, failing closed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import kubernetes_validate
import pytest
import yaml

from tests.conftest import REPO_ROOT, LiveServer, free_port
from tests.gates.attest_support import logged_run, make_gate, promote, version_digest

ADMISSION = REPO_ROOT / "deploy" / "kubernetes" / "admission"
KUBERNETES_VERSION = "1.30.0"
MANIFESTS = sorted(p for p in ADMISSION.glob("*.yaml") if p.name != "kustomization.yaml")


def _docs() -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for path in MANIFESTS:
        for doc in yaml.safe_load_all(path.read_text()):
            out.setdefault(doc["kind"], []).append(doc)
    return out


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_admission_manifest_is_valid_against_the_kubernetes_schemas(path: Path) -> None:
    for doc in yaml.safe_load_all(path.read_text()):
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_admission_manifests_point_at_each_other() -> None:
    docs = _docs()
    kustomization = yaml.safe_load((ADMISSION / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == [p.name for p in MANIFESTS]
    assert kustomization["configMapGenerator"][0]["files"] == ["webhook.py"]
    (config,) = docs["ValidatingWebhookConfiguration"]
    (hook,) = config["webhooks"]
    assert hook["failurePolicy"] == "Fail"  # fail closed when the webhook is down
    (service,) = docs["Service"]
    (deployment,) = docs["Deployment"]
    assert hook["clientConfig"]["service"]["name"] == service["metadata"]["name"]
    assert hook["clientConfig"]["service"]["path"] == "/validate"
    assert hook["clientConfig"]["service"]["port"] == service["spec"]["ports"][0]["port"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["code"]["configMap"]["name"] == kustomization["configMapGenerator"][0]["name"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    # The NetworkPolicy lets exactly these pods reach mlgate's port.
    (policy,) = docs["NetworkPolicy"]
    (rule,) = policy["spec"]["ingress"]
    assert rule["from"][0]["podSelector"]["matchLabels"].items() <= labels.items()
    # mlgate accepts the Host the webhook sends (MLGATE_ALLOWED_HOSTS).
    env = {e["name"]: e["value"] for e in container["env"]}
    host = env["MLGATE_URL"].split("://", 1)[1]
    configmap = yaml.safe_load((REPO_ROOT / "deploy" / "kubernetes" / "configmap.yaml").read_text())
    assert host in configmap["data"]["MLGATE_ALLOWED_HOSTS"].split(",")


@pytest.fixture
def webhook(live_server: LiveServer, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    env = {**os.environ, "MLGATE_URL": live_server.url, "PORT": str(port)}
    for name in ("TLS_CERT_FILE", "TLS_KEY_FILE", "MLGATE_TOKEN_FILE"):
        env.pop(name, None)
    process = subprocess.Popen(
        [sys.executable, str(ADMISSION / "webhook.py")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def _review(url: str, annotations: dict[str, str]) -> dict[str, Any]:
    uid = str(uuid.uuid4())
    review = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "operation": "CREATE",
            "object": {"metadata": {"name": "serve", "annotations": annotations}},
        },
    }
    answer = httpx.post(f"{url}/validate", content=json.dumps(review))
    assert answer.status_code == 200, answer.text
    response: dict[str, Any] = answer.json()["response"]
    assert response["uid"] == uid
    return response


@pytest.mark.compat
def test_webhook_admits_a_pod_only_while_its_bytes_are_approved(
    mlflow_tracking: str, live_server: LiveServer, webhook: str, unique: str
) -> None:
    name = f"k8s-{unique}"
    _, secret = make_gate(live_server, name, "Production")
    one = promote(
        live_server, secret, model=name, run_id=logged_run(unique, {"m": 1.0}), target="Production"
    )
    digest = version_digest(live_server, name, one["version"])
    pod = {"mlgate.dev/model-digest": digest, "mlgate.dev/target": "Production"}
    assert _review(webhook, pod)["allowed"] is True
    assert _review(webhook, {**pod, "mlgate.dev/target": "Staging"})["allowed"] is False
    # Another version takes Production: the pod of the old bytes is refused at once.
    promote(
        live_server, secret, model=name, run_id=logged_run(unique, {"m": 2.0}), target="Production"
    )
    refused = _review(webhook, pod)
    assert refused["allowed"] is False and "does not approve" in refused["status"]["message"]
    assert _review(webhook, {"mlgate.dev/target": "Production"})["allowed"] is False
    # A malformed digest is a 400 from the oracle: refused, not admitted.
    bad = _review(webhook, {**pod, "mlgate.dev/model-digest": "latest"})
    assert bad["allowed"] is False and "could not be asked" in bad["status"]["message"]


def test_webhook_fails_closed_when_mlgate_is_unreachable() -> None:
    sys.path.insert(0, str(ADMISSION))
    try:
        import webhook as module
    finally:
        sys.path.remove(str(ADMISSION))
    oracle = module.oracle_client(f"http://127.0.0.1:{free_port()}", None)
    review = {
        "request": {
            "uid": "u1",
            "object": {
                "metadata": {
                    "annotations": {
                        "mlgate.dev/model-digest": "sha256:" + "0" * 64,
                        "mlgate.dev/target": "Production",
                    }
                }
            },
        }
    }
    answer = module.decide(review, oracle)["response"]
    assert (
        answer
        == {
            "uid": "u1",
            "allowed": False,
            "status": answer["status"],
        }
        and answer["status"]["code"] == 403
    )
