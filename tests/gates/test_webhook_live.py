"""The CI webhook against a live server: signed promotion, refusal, replay, races, guards."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import mlflow
import msgspec
import numpy as np
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from tests.conftest import LiveServer
from tests.gates.factories import signed

pytestmark = pytest.mark.compat
MLGATE = "/api/2.0/mlgate"


def _fitted() -> tuple[Any, Any]:
    from sklearn.linear_model import LogisticRegression

    x = np.array([[0.0], [1.0], [2.0], [3.0]])
    return LogisticRegression().fit(x, np.array([0, 0, 1, 1])), x


def _logged_run(unique: str, metrics: dict[str, float], tags: dict[str, str] | None = None) -> str:
    model, _ = _fitted()
    mlflow.set_experiment(f"gates-{unique}")
    with mlflow.start_run() as run:
        mlflow.log_metrics(metrics)
        mlflow.set_tags(tags or {})
        mlflow.sklearn.log_model(model, name="model", serialization_format="cloudpickle")
    return run.info.run_id


def _gate(server: LiveServer, model: str, target: str, **rules: Any) -> tuple[str, str]:
    name = f"gate-{uuid.uuid4().hex[:10]}"
    body = {"name": name, "model": model, "target": target, **rules}
    created = httpx.post(f"{server.url}{MLGATE}/gates/create", json=body)
    assert created.status_code == 200, created.text
    secret = httpx.post(f"{server.url}{MLGATE}/gates/secrets/add", json={"gate": name})
    assert secret.status_code == 200, secret.text
    return name, secret.json()["secret"]["secret"]


def _promote(
    server: LiveServer,
    secret: str,
    body: dict[str, Any],
    *,
    webhook_id: str | None = None,
    at: int | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    raw = msgspec.json.encode(body)
    sent = {**signed(secret, raw, webhook_id=webhook_id, at=at), **(headers or {})}
    sent["content-type"] = "application/json"
    return httpx.post(f"{server.url}{MLGATE}/gates/promote", content=raw, headers=sent, timeout=60)


def test_passing_run_is_promoted_to_staging_and_loads_by_stage(
    mlflow_tracking: str, live_server: LiveServer, unique: str
) -> None:
    name = f"fraud-{unique}"
    _, secret = _gate(
        live_server, name, "Staging", metrics=["val_auc >= 0.90"], required_tags=["git_commit"]
    )
    run_id = _logged_run(unique, {"val_auc": 0.95}, {"git_commit": "abc123"})
    answer = _promote(
        live_server,
        secret,
        {"model": name, "run_id": run_id, "target": "Staging", "idempotency_key": "k-1"},
    )
    assert answer.status_code == 200, answer.text
    decision = answer.json()
    assert decision["outcome"] == "passed"
    assert decision["version"] == "1" and len(decision["digest"]) == 64
    assert decision["actor"].startswith("gate:")
    assert {c["name"]: c["verdict"] for c in decision["checks"]}["metric:val_auc"] == "pass"

    _, x = _fitted()
    loaded = mlflow.pyfunc.load_model(f"models:/{name}/Staging")
    assert list(loaded.predict(x)) == [0, 0, 1, 1]
    mv = MlflowClient().get_model_version(name, "1")
    assert mv.current_stage == "Staging" and mv.run_id == run_id
    got = httpx.get(
        f"{live_server.url}{MLGATE}/gates/decisions/get",
        params={"decision_id": decision["decision_id"]},
    )
    assert got.json()["decision"] == decision


def test_failing_run_is_refused_with_its_decision_and_nothing_is_created(
    mlflow_tracking: str, live_server: LiveServer, unique: str
) -> None:
    name = f"fraud-{unique}"
    _gate_name, secret = _gate(live_server, name, "Staging", metrics=["val_auc >= 0.90"])
    run_id = _logged_run(unique, {"val_auc": 0.71})
    answer = _promote(
        live_server,
        secret,
        {"model": name, "run_id": run_id, "target": "Staging", "idempotency_key": "k-1"},
    )
    assert answer.status_code == 422
    body = answer.json()
    assert body["error_code"] == "GATE_FAILED" and "metric:val_auc" in body["message"]
    assert body["outcome"] == "failed" and body["policy_name"] == _gate_name
    check = next(c for c in body["checks"] if c["name"] == "metric:val_auc")
    assert (check["observed"], check["threshold"], check["verdict"]) == (0.71, 0.9, "fail")
    assert "version" not in body
    with pytest.raises(MlflowException, match="not found"):
        MlflowClient().get_registered_model(name)
    # The same key answers the same refusal.
    again = _promote(
        live_server,
        secret,
        {"model": name, "run_id": run_id, "target": "Staging", "idempotency_key": "k-1"},
    )
    assert again.status_code == 422 and again.json()["decision_id"] == body["decision_id"]
    assert again.headers.get("idempotent-replayed") == "true"


def test_bad_stale_future_and_replayed_signatures_are_refused(
    mlflow_tracking: str, live_server: LiveServer, unique: str
) -> None:
    name = f"fraud-{unique}"
    gate, secret = _gate(live_server, name, "Staging")
    run_id = _logged_run(unique, {"val_auc": 0.95})
    body = {"model": name, "run_id": run_id, "target": "Staging", "dry_run": True}

    def code(resp: httpx.Response) -> tuple[int, str]:
        return resp.status_code, resp.json().get("error_code", "")

    wrong = "whsec_" + "A" * 43 + "="
    assert code(_promote(live_server, wrong, body)) == (401, "UNAUTHENTICATED")
    now = int(time.time())
    assert code(_promote(live_server, secret, body, at=now - 310)) == (401, "UNAUTHENTICATED")
    assert code(_promote(live_server, secret, body, at=now + 310)) == (401, "UNAUTHENTICATED")
    # A body changed after signing does not verify.
    raw = msgspec.json.encode(body)
    headers = {**signed(secret, raw), "content-type": "application/json"}
    tampered = raw.replace(b"Staging", b"staging")
    resp = httpx.post(f"{live_server.url}{MLGATE}/gates/promote", content=tampered, headers=headers)
    assert resp.status_code == 401
    unsigned = httpx.post(f"{live_server.url}{MLGATE}/gates/promote", json=body)
    assert unsigned.status_code == 401

    first = _promote(live_server, secret, body, webhook_id="msg_once")
    assert first.status_code == 200, first.text
    replay = _promote(live_server, secret, body, webhook_id="msg_once")
    assert code(replay) == (401, "UNAUTHENTICATED") and "replay" in replay.json()["message"]

    # Rotation: the old secret keeps working beside the new one until revoked.
    rotated = httpx.post(
        f"{live_server.url}{MLGATE}/gates/secrets/rotate", json={"gate": gate}
    ).json()["secret"]
    assert _promote(live_server, secret, body).status_code == 200
    assert _promote(live_server, rotated["secret"], body).status_code == 200
    listed = httpx.get(f"{live_server.url}{MLGATE}/gates/secrets/list", params={"gate": gate})
    old = next(s for s in listed.json()["secrets"] if s["secret_id"] != rotated["secret_id"])
    assert "secret" not in old
    revoked = httpx.post(
        f"{live_server.url}{MLGATE}/gates/secrets/revoke",
        json={"gate": gate, "secret_id": old["secret_id"]},
    )
    assert revoked.status_code == 200
    assert _promote(live_server, secret, body).status_code == 401
    assert _promote(live_server, rotated["secret"], body).status_code == 200


def test_sixteen_parallel_identical_calls_create_one_version(
    mlflow_tracking: str, live_server: LiveServer, unique: str
) -> None:
    name = f"fraud-{unique}"
    _, secret = _gate(live_server, name, "Staging")
    run_id = _logged_run(unique, {"val_auc": 0.95})
    body = {"model": name, "run_id": run_id, "target": "Staging", "idempotency_key": "same"}
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda _: _promote(live_server, secret, body), range(16)))
    assert [a.status_code for a in answers] == [200] * 16, [a.text for a in answers]
    assert len({a.json()["decision_id"] for a in answers}) == 1
    assert {a.json()["version"] for a in answers} == {"1"}
    versions = MlflowClient().search_model_versions(f"name='{name}'")
    assert [v.version for v in versions] == ["1"]


def test_direct_transition_onto_a_gated_target_is_refused_unless_an_admin_overrides(
    mlflow_tracking: str, live_server: LiveServer, unique: str
) -> None:
    name = f"fraud-{unique}"
    gate, _ = _gate(live_server, name, "Production")
    client = MlflowClient()
    client.create_registered_model(name)
    run_id = _logged_run(unique, {"val_auc": 0.95})
    client.create_model_version(name, f"runs:/{run_id}/model", run_id)
    with pytest.raises(MlflowException, match=gate) as err:
        client.transition_model_version_stage(name, "1", "Production")
    assert err.value.error_code == "PERMISSION_DENIED"
    client.transition_model_version_stage(name, "1", "Staging")  # not gated

    override = httpx.post(
        live_server.api("model-versions/transition-stage"),
        json={"name": name, "version": "1", "stage": "Production"},
        headers={"X-Mlgate-Override": "hotfix INC-42"},
    )
    assert override.status_code == 200, override.text
    assert client.get_model_version(name, "1").current_stage == "Production"
    audited = httpx.get(
        f"{live_server.url}{MLGATE}/audit",
        params={"kind": "gate.overridden", "subject": f"model:{name}"},
    ).json()["entries"]
    assert len(audited) == 1
    entry = audited[0]["payload"]
    assert (entry["gate"], entry["reason"], entry["target"]) == (
        gate,
        "hotfix INC-42",
        "Production",
    )


def test_final_approval_refuses_after_the_stored_bytes_change(
    mlflow_tracking: str, live_server: LiveServer, unique: str
) -> None:
    name = f"fraud-{unique}"
    _, secret = _gate(live_server, name, "Production", required_approvals=1)
    run_id = _logged_run(unique, {"val_auc": 0.95})
    answer = _promote(
        live_server,
        secret,
        {
            "model": name,
            "run_id": run_id,
            "target": "Production",
            "idempotency_key": "k",
            "requested_by": "ci-user",
        },
    )
    assert answer.status_code == 202, answer.text
    decision = answer.json()
    assert decision["outcome"] == "pending_approval"
    request_id = decision["approval_request_id"]
    listed = httpx.get(
        f"{live_server.url}{MLGATE}/approvals/list", params={"status": "pending", "model": name}
    ).json()["approval_requests"]
    assert [r["request_id"] for r in listed] == [request_id]

    uri = MlflowClient().get_model_version_download_uri(name, decision["version"])
    files = Path(live_server.artifacts) / uri.removeprefix("mlflow-artifacts:/")
    (files / "model.pkl").write_bytes(b"not the model that was decided on")

    approve = httpx.post(
        f"{live_server.url}{MLGATE}/approvals/approve", json={"request_id": request_id}
    )
    assert approve.status_code == 422, approve.text
    body = approve.json()
    assert body["error_code"] == "GATE_FAILED" and body["trigger"] == "approval"
    check = next(c for c in body["checks"] if c["name"] == "digest_unchanged")
    assert check["verdict"] == "fail" and "model.pkl" in check["detail"]
    got = httpx.get(
        f"{live_server.url}{MLGATE}/approvals/get", params={"request_id": request_id}
    ).json()["approval_request"]
    assert got["status"] == "failed"
    assert MlflowClient().get_model_version(name, "1").current_stage == "None"


def test_an_unverified_signature_cannot_tell_gated_targets_from_ungated_ones(
    mlflow_tracking: str, live_server: LiveServer, unique: str
) -> None:
    """Before a signature verifies the caller is nobody: a wrong secret against a gated target
    and any secret against an ungated one get the same 401, naming no gate."""
    name = f"probe-{unique}"
    gate, _ = _gate(live_server, name, "Staging")
    run_id = _logged_run(unique, {"val_auc": 0.95})
    wrong = "whsec_" + "B" * 43 + "="

    def answer(target: str) -> tuple[int, str, str]:
        body = {"model": name, "run_id": run_id, "target": target, "dry_run": True}
        resp = _promote(live_server, wrong, body)
        message = resp.json()["message"].replace(target, "<target>")
        return resp.status_code, resp.json()["error_code"], message

    gated, ungated = answer("Staging"), answer("Production")
    assert gated == ungated and gated[:2] == (401, "UNAUTHENTICATED")
    assert gate not in gated[2]
