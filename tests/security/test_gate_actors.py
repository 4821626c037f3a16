"""Attacks on who acts in a gate (issue 12, cases 2 and 3), against a live server with auth on.

An actor is only ever an authenticated principal: the ``requested_by`` of a signed promotion
is a claim, the CLI approves over HTTP with the caller's own credentials, and its
database-direct form is break-glass, admin-only, marked as such and never an approval.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from gates.server import migrate
from tests.conftest import REPO_ROOT, LiveServer, stop_server
from tests.gates.test_gates_auth import Team, _signed_promote
from tests.security.auth_world import ADMIN_PASSWORD, ADMIN_USER, PASSWORD, start_auth_server
from tests.web.support import Browser

pytestmark = pytest.mark.compat
API = "/api/2.0/mlflow"
MLGATE = "/api/2.0/mlgate"


@pytest.fixture(scope="module")
def server(make_database, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:  # type: ignore[no-untyped-def]
    url = make_database("gate_actors")
    migrate.upgrade(url)
    live = start_auth_server(url, tmp_path_factory.mktemp("gate-actors"))
    live.database_url = url  # type: ignore[attr-defined]
    yield live
    stop_server(live)
    text = live.log.read_text(errors="replace")
    if "Traceback" in text:
        print(text[-5000:], file=sys.stderr)


def _mlgate(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MLFLOW_TRACKING_", "MLGATE_TRACKING_"))
    }
    return subprocess.run(
        [sys.executable, "-m", "gates.server", *args],
        cwd=REPO_ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _as_user(name: str) -> dict[str, str]:
    return {"MLFLOW_TRACKING_USERNAME": name, "MLFLOW_TRACKING_PASSWORD": PASSWORD}


def _pending_request(team: Team, secret: str, run_id: str, **extra: Any) -> str:
    answer = _signed_promote(
        team.server,
        secret,
        {
            "model": team.model,
            "run_id": run_id,
            "target": "Production",
            "idempotency_key": f"k-{team.u}",
            **extra,
        },
    )
    assert answer.status_code == 202, answer.text
    return str(answer.json()["approval_request_id"])


def _request(team: Team, request_id: str) -> dict[str, Any]:
    got = team.ok(team.admin, "GET", f"{MLGATE}/approvals/get", params={"request_id": request_id})
    return dict(got["approval_request"])


def _audit(team: Team, kind: str, request_id: str) -> list[dict[str, Any]]:
    return list(
        team.ok(
            team.admin,
            "GET",
            f"{MLGATE}/audit",
            params={"kind": kind, "subject": f"approval:{request_id}"},
        )["entries"]
    )


def test_a_requested_by_claim_cannot_bar_an_approver_nor_be_recorded_as_the_actor(
    server: LiveServer,
) -> None:
    team = Team(server)
    gate, secret = team.gate("Production", required_approvals=1)
    team.user("author", "approver")
    victim = team.user("ap", "approver")
    run_id = team.finished_run("author")
    # The secret holder names a real approver as "requester", hoping to bar them.
    request_id = _pending_request(team, secret, run_id, requested_by=victim)
    approved = team.clients["ap"].post(
        f"{MLGATE}/approvals/approve", json={"request_id": request_id}
    )
    assert approved.status_code == 200, approved.text
    assert approved.json()["approval_request"]["approved_by"] == [victim]
    [entry] = _audit(team, "approval.requested", request_id)
    assert entry["actor"].startswith(f"gate:{gate}/") and entry["actor"] != victim
    request = _request(team, request_id)
    assert request["requested_by"] == victim  # kept, as a claim
    assert request["requester"].startswith(f"gate:{gate}/")
    # The run's author (recorded server-side from the authenticated user) stays excluded.
    assert (
        team.ok(team.admin, "GET", f"{API}/runs/get", params={"run_id": run_id})["run"]["info"][
            "user_id"
        ]
        == f"author-{team.u}"
    )


def test_the_token_user_who_requested_cannot_approve_whatever_the_body_claims(
    server: LiveServer,
) -> None:
    team = Team(server)
    team.gate("Production", required_approvals=1)
    requester = team.user("req", "approver", ["Production"])
    team.user("author", "approver")
    run_id = team.finished_run("author")
    token = team.ok(team.clients["req"], "POST", f"{MLGATE}/tokens/create", json={"name": "ci"})
    answer = httpx.post(
        f"{server.url}{MLGATE}/gates/promote",
        json={
            "model": team.model,
            "run_id": run_id,
            "target": "Production",
            "idempotency_key": "tok",
            "requested_by": "someone-else",
        },
        headers={"Authorization": f"Bearer {token['secret']}"},
    )
    assert answer.status_code == 202, answer.text
    assert answer.json()["actor"] == requester and answer.json()["requested_by"] == requester
    request_id = answer.json()["approval_request_id"]
    own = team.clients["req"].post(f"{MLGATE}/approvals/approve", json={"request_id": request_id})
    assert own.status_code == 403 and "separation of duties" in own.text


def test_one_person_cannot_meet_a_two_approval_quorum_through_the_cli(
    server: LiveServer,
) -> None:
    team = Team(server)
    _, secret = team.gate("Production", required_approvals=2)
    team.user("author", "approver")
    ap1 = team.user("ap1", "approver")
    ap2 = team.user("ap2", "approver")
    request_id = _pending_request(team, secret, team.finished_run("author"))
    db = server.database_url  # type: ignore[attr-defined]
    # The attack of issue 12: the database URL and two names, by one person (ap1).
    attack = [
        _mlgate(
            "approvals",
            "approve",
            request_id,
            "--as",
            who,
            "--database-url",
            db,
            env=_as_user(ap1),
        )
        for who in (ap1, ap2)
    ]
    request = _request(team, request_id)
    assert request["status"] == "pending" and request["approvals"] == 0, request
    assert all(a.returncode == 2 and "--break-glass" in a.stderr for a in attack)
    first = _mlgate("approvals", "approve", request_id, "--url", server.url, env=_as_user(ap1))
    assert first.returncode == 0, first.stderr
    assert "pending (1/2 approvals)" in first.stdout
    again = _mlgate("approvals", "approve", request_id, "--url", server.url, env=_as_user(ap1))
    assert again.returncode == 1 and "already approved" in again.stderr
    nobody = _mlgate("approvals", "approve", request_id, "--url", server.url, env={})
    assert nobody.returncode == 1 and "401" in nobody.stderr
    request = _request(team, request_id)
    assert request["status"] == "pending" and request["approved_by"] == [ap1]
    [entry] = _audit(team, "approval.approved", request_id)
    assert entry["actor"] == ap1
    final = _mlgate("approvals", "approve", request_id, "--url", server.url, env=_as_user(ap2))
    assert final.returncode == 0, final.stderr
    assert "approved (2/2 approvals)" in final.stdout


def test_break_glass_is_admin_only_marked_and_never_counts_as_an_approval(
    server: LiveServer,
) -> None:
    team = Team(server)
    _, secret = team.gate("Production", required_approvals=2)
    team.user("author", "approver")
    ap1 = team.user("ap1", "approver")
    request_id = _pending_request(team, secret, team.finished_run("author"))
    db = server.database_url  # type: ignore[attr-defined]
    assert (
        _mlgate("approvals", "approve", request_id, "--url", server.url, env=_as_user(ap1))
    ).returncode == 0

    def glass(*extra: str) -> subprocess.CompletedProcess[str]:
        return _mlgate(
            "approvals",
            "approve",
            request_id,
            "--break-glass",
            "--database-url",
            db,
            *extra,
            env={"MLGATE_AUTH": "true"},
        )

    assert glass("--as", ADMIN_USER).returncode == 2  # a reason is required
    refused = glass("--as", ap1, "--reason", "one person, two votes")
    assert refused.returncode == 1 and "administrators" in refused.stderr
    forced = glass("--as", ADMIN_USER, "--reason", "INC-42: server down, hotfix")
    assert forced.returncode == 0, forced.stderr
    assert "(1/2 approvals counted)" in forced.stdout
    request = _request(team, request_id)
    assert request["status"] == "approved"
    assert request["approvals"] == 1 and request["approved_by"] == [ap1]
    assert request["resolved_by"] == f"break-glass:{ADMIN_USER}"
    assert [(a["kind"], a["actor"]) for a in request["actions"]] == [
        ("approve", ap1),
        ("break_glass", f"break-glass:{ADMIN_USER}"),
    ]
    [entry] = _audit(team, "approval.break_glass", request_id)
    assert entry["actor"] == f"break-glass:{ADMIN_USER}"
    assert entry["payload"]["break_glass"] is True
    assert entry["payload"]["reason"] == "INC-42: server down, hotfix"
    assert entry["payload"]["counted_approvals"] == 1
    mv = team.ok(
        team.admin, "GET", f"{API}/model-versions/get", params={"name": team.model, "version": "1"}
    )
    assert mv["model_version"]["current_stage"] == "Production"
    # The forced move itself is in the audit trail like any other move, by the break-glass admin.
    moves = team.ok(
        team.admin,
        "GET",
        f"{MLGATE}/audit",
        params={"kind": "stage.transitioned", "subject": f"model:{team.model}"},
    )["entries"]
    assert [(m["actor"], m["payload"]["to_stage"]) for m in moves] == [
        (f"break-glass:{ADMIN_USER}", "Production")
    ]
    browser = Browser(server.url)
    try:
        assert browser.login(ADMIN_USER, ADMIN_PASSWORD).status_code in (302, 303)
        page = browser.get("/approvals", params={"status": "approved", "model": team.model})
    finally:
        browser.close()
    assert page.status_code == 200 and 'data-testid="break-glass"' in page.text
