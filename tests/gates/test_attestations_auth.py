"""Attestations and the oracle with authentication on: the signed requester and approvers are
authenticated principals, and the oracle and the listing answer only readers of the model."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest

from tests.conftest import LiveServer
from tests.gates.attest_support import KEYS_PATH, independently_verified, published_keys
from tests.gates.test_gates_auth import MLGATE, Team, _signed_promote, server

pytestmark = pytest.mark.compat
__all__ = ["server"]  # the module's live server with authentication on


def _statement(att: dict[str, Any]) -> dict[str, Any]:
    return dict(json.loads(base64.b64decode(att["envelope"]["payload"])))


def test_approved_promotion_attests_principals_and_answers_readers_only(
    server: LiveServer,
) -> None:
    team = Team(server)
    gate, secret = team.gate("Production", required_approvals=2, metrics=["val_auc >= 0.9"])
    team.user("author", "approver")
    team.user("ap1", "approver", ["Production"])
    team.user("ap2", "approver")
    team.user("reader", "reader")
    team.user("outsider", None)
    run_id = team.finished_run("author")
    body = {"model": team.model, "run_id": run_id, "target": "Production"}
    opened = _signed_promote(
        server, secret, {**body, "idempotency_key": "a1", "requested_by": f"ap1-{team.u}"}
    )
    assert opened.status_code == 202, opened.text
    request_id = opened.json()["approval_request_id"]
    for who in ("ap1", "ap2"):
        done = team.clients[who].post(
            f"{MLGATE}/approvals/approve", json={"request_id": request_id}
        )
        assert done.status_code == 200, done.text

    listed = team.clients["reader"].get(f"{MLGATE}/attestations", params={"name": team.model})
    assert listed.status_code == 200, listed.text
    (att,) = listed.json()["attestations"]
    keys = httpx.get(f"{server.url}{KEYS_PATH}")  # public: no credentials
    assert keys.status_code == 200
    predicate = independently_verified(att["envelope"], published_keys(server))["predicate"]
    assert predicate["approvers"] == [f"ap1-{team.u}", f"ap2-{team.u}"]
    # The requester is the gate secret that signed the call; the named user is only a claim.
    assert predicate["requester"]["principal"].startswith(f"gate:{gate}/")
    assert predicate["requester"]["auth_method"] == "hmac"
    assert predicate["requester"]["claim"] == f"ap1-{team.u}"

    query = {"digest": att["digest"], "target": "Production"}
    yes = team.clients["reader"].get(f"{MLGATE}/admission", params=query)
    assert yes.status_code == 200 and yes.json()["allowed"] is True
    # Someone who may not read the model learns nothing about it.
    hidden = team.clients["outsider"].get(f"{MLGATE}/admission", params=query)
    assert hidden.status_code == 200, hidden.text
    assert hidden.json()["allowed"] is False and hidden.json()["model"] is None
    by_name = team.clients["outsider"].get(
        f"{MLGATE}/admission", params={"name": team.model, "target": "Production"}
    )
    assert by_name.json()["allowed"] is False and by_name.json()["version"] is None
    refused = team.clients["outsider"].get(f"{MLGATE}/attestations", params={"name": team.model})
    assert refused.status_code == 403 and refused.json()["error_code"] == "PERMISSION_DENIED"
    assert httpx.get(f"{server.url}{MLGATE}/admission", params=query).status_code == 401


def test_token_promotion_attests_the_token_user_as_requester(server: LiveServer) -> None:
    team = Team(server)
    team.gate("Staging")
    ci = team.user("ci", "approver", ["Staging"])
    run_id = team.finished_run("ci")
    token = team.ok(team.clients["ci"], "POST", f"{MLGATE}/tokens/create", json={"name": "ci"})
    answer = httpx.post(
        f"{server.url}{MLGATE}/gates/promote",
        json={"model": team.model, "run_id": run_id, "target": "Staging", "idempotency_key": "t"},
        headers={"Authorization": f"Bearer {token['secret']}"},
    )
    assert answer.status_code == 200, answer.text
    (att,) = team.ok(
        team.clients["ci"], "GET", f"{MLGATE}/attestations", params={"name": team.model}
    )["attestations"]
    requester = _statement(att)["predicate"]["requester"]
    assert requester == {"principal": ci, "auth_method": "token", "claim": None}
