"""Gates with authentication on: token promotion by grant, approver roles, admin-only overrides."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import msgspec
import pytest

from gates.server import migrate
from tests.conftest import LiveServer, stop_server
from tests.gates.factories import signed
from tests.security.auth_world import (
    ADMIN_PASSWORD,
    ADMIN_USER,
    PASSWORD,
    start_auth_server,
)

pytestmark = pytest.mark.compat
API = "/api/2.0/mlflow"
MLGATE = "/api/2.0/mlgate"


@pytest.fixture(scope="module")
def server(make_database, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:  # type: ignore[no-untyped-def]
    url = make_database("gates_auth")
    migrate.upgrade(url)
    live = start_auth_server(url, tmp_path_factory.mktemp("gates-auth"))
    yield live
    stop_server(live)
    text = live.log.read_text(errors="replace")
    if "Traceback" in text:
        print(text[-5000:], file=sys.stderr)


class Team:
    """Users of one test: an admin, a CI token user, approvers, an editor and a run author."""

    def __init__(self, server: LiveServer) -> None:
        self.server = server
        self.u = uuid.uuid4().hex[:6]
        self.model = f"model-{self.u}"
        self.admin = httpx.Client(base_url=server.url, auth=(ADMIN_USER, ADMIN_PASSWORD))
        self.clients: dict[str, httpx.Client] = {}

    def ok(self, client: httpx.Client, method: str, path: str, **kw: Any) -> Any:
        r = client.request(method, path, **kw)
        assert r.status_code == 200, (path, r.status_code, r.text)
        return r.json()

    def user(self, label: str, role: str | None, targets: list[str] | None = None) -> str:
        name = f"{label}-{self.u}"
        self.ok(
            self.admin,
            "POST",
            f"{MLGATE}/users/create",
            json={"username": name, "password": PASSWORD},
        )
        self.ok(
            self.admin,
            "POST",
            f"{MLGATE}/grants/create",
            json={
                "username": name,
                "resource_type": "experiment",
                "pattern": "*",
                "role": "editor",
            },
        )
        if role:
            body: dict[str, Any] = {
                "username": name,
                "resource_type": "registered_model",
                "pattern": self.model,
                "role": role,
            }
            if targets is not None:
                body["targets"] = targets
            self.ok(self.admin, "POST", f"{MLGATE}/grants/create", json=body)
        self.clients[label] = httpx.Client(base_url=self.server.url, auth=(name, PASSWORD))
        return name

    def finished_run(self, author: str) -> str:
        client = self.clients[author]
        exp = self.ok(
            client, "POST", f"{API}/experiments/create", json={"name": f"e-{uuid.uuid4().hex[:8]}"}
        )
        run = self.ok(
            client,
            "POST",
            f"{API}/runs/create",
            json={"experiment_id": exp["experiment_id"], "start_time": 1},
        )["run"]["info"]
        self.ok(
            client,
            "POST",
            f"{API}/runs/log-metric",
            json={"run_id": run["run_id"], "key": "val_auc", "value": 0.95, "timestamp": 1},
        )
        path = run["artifact_uri"].removeprefix("mlflow-artifacts:/")
        put = client.put(f"/api/2.0/mlflow-artifacts/artifacts/{path}/model/MLmodel", content=b"x")
        assert put.status_code == 200, put.text
        self.ok(
            client,
            "POST",
            f"{API}/runs/update",
            json={"run_id": run["run_id"], "status": "FINISHED", "end_time": 2},
        )
        return str(run["run_id"])

    def gate(self, target: str, **rules: Any) -> tuple[str, str]:
        name = f"gate-{uuid.uuid4().hex[:8]}"
        self.ok(
            self.admin,
            "POST",
            f"{MLGATE}/gates/create",
            json={"name": name, "model": self.model, "target": target, **rules},
        )
        secret = self.ok(self.admin, "POST", f"{MLGATE}/gates/secrets/add", json={"gate": name})
        return name, secret["secret"]["secret"]


def _signed_promote(server: LiveServer, secret: str, body: dict[str, Any]) -> httpx.Response:
    raw = msgspec.json.encode(body)
    headers = {**signed(secret, raw), "content-type": "application/json"}
    return httpx.post(
        f"{server.url}{MLGATE}/gates/promote", content=raw, headers=headers, timeout=60
    )


def test_token_promotes_only_to_targets_its_grant_allows(server: LiveServer) -> None:
    team = Team(server)
    team.gate("Staging")
    team.gate("Production")
    team.user("ci", "approver", ["Staging"])
    run_id = team.finished_run("ci")
    token = team.ok(team.clients["ci"], "POST", f"{MLGATE}/tokens/create", json={"name": "ci"})
    bearer = {"Authorization": f"Bearer {token['secret']}"}
    body = {"model": team.model, "run_id": run_id, "idempotency_key": "t1"}
    staged = httpx.post(
        f"{server.url}{MLGATE}/gates/promote", json={**body, "target": "Staging"}, headers=bearer
    )
    assert staged.status_code == 200, staged.text
    assert staged.json()["actor"] == f"ci-{team.u}" and staged.json()["outcome"] == "passed"
    prod = httpx.post(
        f"{server.url}{MLGATE}/gates/promote", json={**body, "target": "Production"}, headers=bearer
    )
    assert prod.status_code == 403 and prod.json()["error_code"] == "PERMISSION_DENIED"
    anonymous = httpx.post(
        f"{server.url}{MLGATE}/gates/promote", json={**body, "target": "Staging"}
    )
    assert anonymous.status_code == 401
    # Managing gates is for administrators.
    refused = team.clients["ci"].post(
        f"{MLGATE}/gates/create", json={"name": f"x-{team.u}", "model": "m", "target": "Staging"}
    )
    assert refused.status_code == 403


def test_production_needs_two_approvers_and_not_the_requester_or_author(
    server: LiveServer,
) -> None:
    team = Team(server)
    _, secret = team.gate("Production", required_approvals=2, metrics=["val_auc >= 0.9"])
    team.user("author", "approver")
    requester = team.user("requester", "approver")
    team.user("editor", "editor")
    team.user("ap1", "approver", ["Production"])
    team.user("ap2", "approver")
    run_id = team.finished_run("author")
    answer = _signed_promote(
        server,
        secret,
        {
            "model": team.model,
            "run_id": run_id,
            "target": "Production",
            "idempotency_key": "p1",
            "requested_by": requester,
        },
    )
    assert answer.status_code == 202, answer.text
    request_id = answer.json()["approval_request_id"]

    def approve(who: str) -> httpx.Response:
        return team.clients[who].post(
            f"{MLGATE}/approvals/approve", json={"request_id": request_id}
        )

    assert approve("author").status_code == 403 and "authored" in approve("author").text
    # ``requested_by`` is a claim in the signed body: it bars nobody (see
    # tests/security/test_gate_actors.py); the gate secret is the requester.
    assert approve("editor").status_code == 403
    assert (
        httpx.post(
            f"{server.url}{MLGATE}/approvals/approve", json={"request_id": request_id}
        ).status_code
        == 401
    )
    first = approve("ap1")
    assert first.status_code == 200, first.text
    assert first.json()["approval_request"]["approvals"] == 1
    assert approve("ap1").status_code == 400  # once per approver
    final = approve("ap2")
    assert final.status_code == 200, final.text
    assert final.json()["decision"]["outcome"] == "passed"
    assert final.json()["approval_request"]["approved_by"] == [f"ap1-{team.u}", f"ap2-{team.u}"]
    mv = team.ok(
        team.admin, "GET", f"{API}/model-versions/get", params={"name": team.model, "version": "1"}
    )
    assert mv["model_version"]["current_stage"] == "Production"


def test_only_an_admin_can_override_a_gated_target_and_it_is_audited(server: LiveServer) -> None:
    team = Team(server)
    gate, _ = team.gate("Production")
    team.user("ap", "approver")
    run_id = team.finished_run("ap")
    team.ok(team.admin, "POST", f"{API}/registered-models/create", json={"name": team.model})
    team.ok(
        team.admin,
        "POST",
        f"{API}/model-versions/create",
        json={"name": team.model, "source": f"runs:/{run_id}/model", "run_id": run_id},
    )
    move = {"name": team.model, "version": "1", "stage": "Production"}
    path = f"{API}/model-versions/transition-stage"
    plain = team.clients["ap"].post(path, json=move)
    assert plain.status_code == 403 and gate in plain.json()["message"]
    sneaky = team.clients["ap"].post(path, json=move, headers={"X-Mlgate-Override": "trust me"})
    assert sneaky.status_code == 403 and "Only an admin" in sneaky.json()["message"]
    forced = team.admin.post(path, json=move, headers={"X-Mlgate-Override": "INC-7 rollback"})
    assert forced.status_code == 200, forced.text
    entries = team.ok(
        team.admin,
        "GET",
        f"{MLGATE}/audit",
        params={"kind": "gate.overridden", "subject": f"model:{team.model}"},
    )["entries"]
    assert [(e["actor"], e["payload"]["reason"]) for e in entries] == [
        (ADMIN_USER, "INC-7 rollback")
    ]
