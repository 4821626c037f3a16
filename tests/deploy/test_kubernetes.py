"""deploy/kubernetes validates against the Kubernetes schemas (kubernetes-validate's bundled,
offline copies), its objects point at each other correctly, it sets only real mlgate settings,
and it commits no Secret. The ServiceMonitor is a CRD with no bundled schema: it is checked by
hand against the Service it scrapes."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.conftest import REPO_ROOT
from tests.deploy.dockerfile import one, stages
from tests.deploy.settings_check import check_mlgate_settings, known_setting_names

K8S = REPO_ROOT / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.30.0"  # the oldest release still supported upstream when written
MANIFESTS = sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def _docs() -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for path in MANIFESTS:
        for doc in yaml.safe_load_all(path.read_text()):
            out[doc["kind"]] = doc
    return out


def _pod_labels(docs: dict[str, dict[str, Any]]) -> dict[str, str]:
    return docs["Deployment"]["spec"]["template"]["metadata"]["labels"]


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_is_valid_against_the_kubernetes_schemas(path: Path) -> None:
    for doc in yaml.safe_load_all(path.read_text()):
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # a CRD: test_service_monitor_scrapes_metrics_on_the_service
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_the_schema_check_rejects_a_misspelt_field() -> None:
    doc = yaml.safe_load((K8S / "deployment.yaml").read_text())
    doc["spec"]["template"]["spec"]["containers"][0]["readOnlyRootFilesytem"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == [p.name for p in MANIFESTS]


def test_deployment_runs_two_hardened_replicas_probed_on_health_and_ready() -> None:
    docs = _docs()
    spec = docs["Deployment"]["spec"]
    assert spec["replicas"] >= 2
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert re.fullmatch(r"[\w./-]+@sha256:[0-9a-f]{64}", container["image"])
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["resources"]["requests"] and container["resources"]["limits"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    # The same non-root uid the image declares.
    runtime = stages((REPO_ROOT / "Dockerfile").read_text())["runtime"]
    assert str(pod["securityContext"]["runAsUser"]) == one(runtime, "USER").split(":")[0]
    # Everything mlgate writes lands on an emptyDir: /tmp and the data dir.
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    empty = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
    settings = check_mlgate_settings(docs["ConfigMap"]["data"])
    assert mounts["/tmp"] in empty and mounts[settings.data_dir] in empty
    assert Path(settings.signing_key_file).parent.as_posix() in mounts


def test_manifests_set_only_real_mlgate_settings_that_parse() -> None:
    docs = _docs()
    settings = check_mlgate_settings(docs["ConfigMap"]["data"])
    assert settings.auth is True and settings.db_auto_upgrade is False
    for kind in ("Deployment", "Job"):
        (container,) = docs[kind]["spec"]["template"]["spec"]["containers"]
        assert container["envFrom"] == [{"configMapRef": {"name": "mlgate-settings"}}]
        names = {e["name"] for e in container["env"] if e["name"].startswith("MLGATE_")}
        assert names <= known_setting_names(), names - known_setting_names()


def test_secrets_are_referenced_never_committed() -> None:
    docs = [d for p in MANIFESTS for d in yaml.safe_load_all(p.read_text())]
    assert all(d["kind"] != "Secret" for d in docs)
    configmap = next(d for d in docs if d["kind"] == "ConfigMap")
    for name in configmap["data"]:
        assert not re.search(r"PASSWORD|SECRET_KEY|DATABASE_URL|TOKEN", name), name
    for d in docs:
        if d["kind"] not in ("Deployment", "Job"):
            continue
        for env in d["spec"]["template"]["spec"]["containers"][0].get("env", []):
            assert "valueFrom" in env and "value" not in env, env
            assert "secretKeyRef" in env["valueFrom"]


def test_service_ingress_autoscaler_budget_and_policy_select_the_pods() -> None:
    docs = _docs()
    labels = _pod_labels(docs)
    service = docs["Service"]
    assert _selects(service["spec"]["selector"], labels)
    assert _selects(docs["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"], labels)
    assert _selects(docs["NetworkPolicy"]["spec"]["podSelector"]["matchLabels"], labels)
    hpa = docs["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"]["name"] == docs["Deployment"]["metadata"]["name"]
    assert hpa["minReplicas"] >= 2
    ingress = docs["Ingress"]["spec"]
    backend = ingress["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] == service["metadata"]["name"]
    assert backend["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}
    assert ingress["tls"][0]["secretName"]
    hosts = check_mlgate_settings(docs["ConfigMap"]["data"]).allowed_host_names
    assert set(ingress["tls"][0]["hosts"]) <= set(hosts)
    assert ingress["rules"][0]["host"] in hosts


def test_service_monitor_scrapes_metrics_on_the_service() -> None:
    docs = _docs()
    monitor = docs["ServiceMonitor"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    service = docs["Service"]
    assert _selects(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    ports = {p["name"] for p in service["spec"]["ports"]}
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["port"] in ports and endpoint["path"] == "/metrics"


def test_migration_job_runs_db_upgrade_with_the_database_secret() -> None:
    job = _docs()["Job"]["spec"]["template"]["spec"]
    (container,) = job["containers"]
    assert container["args"] == ["db", "upgrade"]
    assert job["restartPolicy"] == "Never"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert {e["name"] for e in container["env"]} == {"MLGATE_DATABASE_URL"}


def test_kustomize_renders_valid_objects_in_the_mlgate_namespace() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed; the manifests are validated one by one above")
    done = subprocess.run(
        [kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    rendered = list(yaml.safe_load_all(done.stdout))
    assert len(rendered) == len(MANIFESTS)
    for doc in rendered:
        assert doc["metadata"]["namespace"] == "mlgate"
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "mlgate"
        if not doc["apiVersion"].startswith("monitoring.coreos.com/"):
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
