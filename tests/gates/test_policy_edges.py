"""Policy edges (issue 12): leaving a gated target, overlapping gates, an idempotency key
reused by another requester, and who a gate-registered version shows as its creator."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import mlflow
import msgspec
import pytest

from tests.conftest import REPO_ROOT, LiveServer
from tests.gates.factories import signed

pytestmark = pytest.mark.compat
API = "/api/2.0/mlflow"
MLGATE = "/api/2.0/mlgate"
OVERRIDE = "X-Mlgate-Override"


def _gate(server: LiveServer, name: str, model: str, target: str) -> str:
    created = httpx.post(
        f"{server.url}{MLGATE}/gates/create",
        json={"name": name, "model": model, "target": target},
    )
    assert created.status_code == 200, created.text
    added = httpx.post(f"{server.url}{MLGATE}/gates/secrets/add", json={"gate": name})
    return str(added.json()["secret"]["secret"])


def _run(experiment: str) -> str:
    mlflow.set_experiment(experiment)
    with mlflow.start_run() as run:
        mlflow.log_text("flavors: {}\n", "model/MLmodel")
    return str(run.info.run_id)


def _promote(server: LiveServer, secret: str, **body: Any) -> httpx.Response:
    raw = msgspec.json.encode(body)
    headers = {**signed(secret, raw), "content-type": "application/json"}
    return httpx.post(f"{server.url}{MLGATE}/gates/promote", content=raw, headers=headers)


def _overrides(server: LiveServer, model: str) -> list[dict[str, Any]]:
    got = httpx.get(
        f"{server.url}{MLGATE}/audit",
        params={"kind": "gate.overridden", "subject": f"model:{model}"},
    )
    return [e["payload"] for e in got.json()["entries"]]


def test_leaving_a_gated_target_needs_an_override_naming_the_gate(
    mlflow_tracking: str, live_server: LiveServer, unique: str
) -> None:
    model = f"leave-{unique}"
    prod = _gate(live_server, f"{model}-prod", model, "Production")
    champ = _gate(live_server, f"{model}-champ", model, "@champion")
    run_id = _run(f"leave-{unique}")
    for target, secret in (("Production", prod), ("@champion", champ)):
        moved = _promote(
            live_server, secret, model=model, run_id=run_id, target=target, idempotency_key="k"
        )
        assert moved.status_code == 200, moved.text
    api = f"{live_server.url}{API}"
    archive = {"name": model, "version": "1", "stage": "Archived"}
    plain = httpx.post(f"{api}/model-versions/transition-stage", json=archive)
    assert plain.status_code == 403, plain.text
    assert f"{model}-prod" in plain.json()["message"] and "leaving" in plain.json()["message"]
    unalias = httpx.request(
        "DELETE", f"{api}/registered-models/alias", json={"name": model, "alias": "champion"}
    )
    assert unalias.status_code == 403 and f"{model}-champ" in unalias.json()["message"]
    dropped = httpx.request(
        "DELETE", f"{api}/model-versions/delete", json={"name": model, "version": "1"}
    )
    assert dropped.status_code == 403
    mv = mlflow.MlflowClient().get_model_version(model, "1")
    assert mv.current_stage == "Production" and mv.aliases == ["champion"]
    # The same exit as reaching it: an admin's override with a reason, audited as leaving.
    forced = httpx.post(
        f"{api}/model-versions/transition-stage",
        json=archive,
        headers={OVERRIDE: "INC-9 bad model"},
    )
    assert forced.status_code == 200, forced.text
    [entry] = _overrides(live_server, model)
    assert entry["leaving"] is True and entry["gate"] == f"{model}-prod"
    assert entry["target"] == "Production" and entry["reason"] == "INC-9 bad model"
    page = httpx.get(f"{live_server.url}/models/{model}")
    assert "INC-9 bad model" in page.text


def test_reusing_an_idempotency_key_with_another_requested_by_is_a_400(
    mlflow_tracking: str, live_server: LiveServer, unique: str
) -> None:
    model = f"idem-{unique}"
    secret = _gate(live_server, f"{model}-stg", model, "Staging")
    body = {"model": model, "run_id": _run(f"idem-{unique}"), "target": "Staging"}
    first = _promote(live_server, secret, **body, idempotency_key="k", requested_by="alice")
    assert first.status_code == 200, first.text
    same = _promote(live_server, secret, **body, idempotency_key="k", requested_by="alice")
    assert same.status_code == 200 and same.headers["Idempotent-Replayed"] == "true"
    other = _promote(live_server, secret, **body, idempotency_key="k", requested_by="mallory")
    assert other.status_code == 400 and other.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    unnamed = _promote(live_server, secret, **body, idempotency_key="k")
    assert unnamed.status_code == 400


def test_a_gate_registered_version_shows_the_run_author_and_the_claim_as_such(
    mlflow_tracking: str, live_server: LiveServer, unique: str
) -> None:
    model = f"creator-{unique}"
    secret = _gate(live_server, f"{model}-stg", model, "Staging")
    run_id = _run(f"creator-{unique}")
    author = mlflow.MlflowClient().get_run(run_id).info.user_id
    answer = _promote(
        live_server,
        secret,
        model=model,
        run_id=run_id,
        target="Staging",
        idempotency_key="k",
        requested_by="octocat",
    )
    assert answer.status_code == 200, answer.text
    # MLflow's user_id stays the authenticated creator: the gate secret, not the claim.
    mv = mlflow.MlflowClient().get_model_version(model, "1")
    assert mv.user_id.startswith(f"gate:{model}-stg/") and mv.user_id != "octocat"
    page = httpx.get(f"{live_server.url}/models/{model}/versions/1").text
    registered = page.split('data-testid="registered-by"', 1)[1].split("</span>\n", 1)[0]
    assert "registered through" in registered
    assert f'data-field="run-author">{author}<' in page
    assert 'data-field="requested-by-claim">octocat<' in page
    # The model page's version list says a gate registered it, not that a person did.
    listing = httpx.get(f"{live_server.url}/models/{model}").text
    assert f"through gate {model}-stg</span>" in listing


def test_gates_apply_refuses_overlapping_gates_naming_the_one_that_governs(
    live_server: LiveServer, database_url: str, tmp_path: Path, unique: str
) -> None:
    path = tmp_path / "gates.yaml"
    path.write_text(
        f"""
gates:
  - name: fraud-glob-{unique}
    model: "fraud{unique}*"
    target: Staging
  - name: fraud-exact-{unique}
    model: fraud{unique}
    target: Staging
""",
        encoding="utf-8",
    )
    applied = subprocess.run(
        [sys.executable, "-m", "gates.server", "gates", "apply", str(path)],
        cwd=REPO_ROOT,
        env={**os.environ, "MLGATE_DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert applied.returncode != 0
    assert f"fraud-glob-{unique}" in applied.stderr and "overlapping" in applied.stderr
    listed = httpx.get(f"{live_server.url}{MLGATE}/gates/list").json().get("gates", [])
    assert not [g for g in listed if unique in g["name"]]  # nothing half-applied
