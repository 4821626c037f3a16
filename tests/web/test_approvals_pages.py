"""The approvals inbox: cards with the decision record and champion comparison, approve and
reject forms shown to approvers only, separation of duties, refusals as flashes, CSRF."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from gates.policies import promotion
from gates.policies.ports import Actor
from gates.policies.schemas import PromoteRequest
from gates.server.web.pages.approvals import inbox_data
from registry.artifacts.storage import LocalStorage
from tests.conftest import LiveServer
from tests.gates.factories import make_gate, make_run, signed
from tests.registry.test_query_counts import count_queries
from tests.security.auth_world import API, MLGATE, World
from tests.web.support import Browser, csrf_of
from tests.web.test_registry_pages import (
    create_gate,
    element,
    finished_run,
    model_path,
    rows,
    text,
)


@dataclass
class Pending:
    model: str
    request_id: str
    version: str
    champion: str


def open_request(web_world: World, *, approvals: int = 1) -> Pending:
    """A model with a champion in Production, a gate needing ``approvals`` sign-offs, and a
    promotion of a better run requested by the world's approver (HTTP Basic on the API)."""
    model = web_world.new_model("gated")
    champion_run = finished_run(web_world, metrics={"val_auc": 0.91}, params={"depth": "5"})
    champion = web_world.new_version(model, champion_run)
    web_world.transition(model, champion, "Production")
    create_gate(
        web_world,
        model,
        "Production",
        metrics=["val_auc >= 0.9"],
        champion={"metric": "val_auc", "max_regression": 0.01},
        required_approvals=approvals,
    )
    run_id = finished_run(web_world, metrics={"val_auc": 0.95}, params={"depth": "7"})
    answer = web_world.clients["approver"].post(
        f"{MLGATE}/gates/promote",
        json={
            "model": model,
            "run_id": run_id,
            "target": "Production",
            "idempotency_key": uuid.uuid4().hex,
        },
    )
    assert answer.status_code == 202, answer.text
    body = answer.json()
    return Pending(model, body["approval_request_id"], body["version"], champion)


def request_state(web_world: World, request_id: str) -> dict[str, object]:
    found = web_world.admin_json(
        "GET", f"{MLGATE}/approvals/get", params={"request_id": request_id}
    )
    state: dict[str, object] = found["approval_request"]
    return state


def production_of(web_world: World, model: str) -> str:
    found = web_world.admin_json(
        "POST",
        f"{API}/registered-models/get-latest-versions",
        json={"name": model, "stages": ["Production"]},
    )
    return str(found["model_versions"][0]["version"])


def card(page: str, request_id: str) -> str:
    return element(page, f"approval-{request_id}")


def flash(page: str) -> tuple[str, str]:
    found = re.search(r'<p class="(\w+)" data-testid="flash"[^>]*>(.*?)</p>', page, re.S)
    assert found, "no flash message on the page"
    return found.group(1), text(found.group(2))


def test_approver_approves_in_the_inbox_and_the_move_shows_on_the_timeline(
    web_world: World, browser_for: Callable[[str], Browser]
) -> None:
    pending = open_request(web_world)
    owner = browser_for("owner")
    inbox = owner.get("/approvals")
    assert inbox.status_code == 200
    shown = card(inbox.text, pending.request_id)
    assert f'id="approval-{pending.request_id}"' in shown
    assert f"approver-{web_world.u}" in text(
        re.findall(r'data-field="requester">.*?</dd>', shown)[0]
    )
    assert "root" in text(re.findall(r'data-field="run-author">.*?</dd>', shown)[0])
    assert "0 / 1" in text(element(shown, "approval-count"))
    checks = rows(element(shown, "checks"), "check")
    assert re.search(r'data-field="observed">0\.95<', checks["metric:val_auc"])
    assert re.search(r'data-field="threshold">0\.9<', checks["metric:val_auc"])
    assert 'data-verdict="pending"' in checks["approvals"]
    comparison = element(shown, "champion-comparison")
    assert f'data-holder="{pending.champion}"' in comparison
    metric = rows(comparison, "metric")["val_auc"]
    assert 'data-diff="better"' in metric and "0.95" in metric and "0.91" in metric
    assert 'data-testid="approve-button"' in shown and 'data-testid="reject-button"' in shown

    # The model page lists the gate and links the pending request.
    model_page = owner.get(model_path(pending.model)).text
    policies = text(element(model_page, "policies"))
    assert "val_auc >= 0.9" in policies and "approvals required: 1" in policies
    assert f'href="/approvals#approval-{pending.request_id}"' in element(
        model_page, "model-approvals"
    )

    done = owner.post_form(
        f"/approvals/{pending.request_id}/approve",
        {"comment": "metrics look right"},
        csrf=csrf_of(inbox.text),
    )
    assert done.status_code == 200
    kind, message = flash(done.text)
    assert kind == "notice" and "moved to Production" in message, message
    assert production_of(web_world, pending.model) == pending.version
    state = request_state(web_world, pending.request_id)
    assert state["status"] == "approved"
    assert state["approved_by"] == [f"owner-{web_world.u}"]
    # An approval completed in the inbox attests the move, as the API's does.
    [attestation] = web_world.admin_json(
        "GET",
        "/api/2.0/mlgate/attestations",
        params={"name": pending.model, "version": pending.version},
    )["attestations"]
    assert attestation["target"] == "Production"

    timeline = element(owner.get(model_path(pending.model)).text, "timeline")
    first = re.search(
        r'<li data-pointer="([^"]+)" data-action="([^"]+)" data-to="([^"]*)"', timeline
    )
    assert first and (first.group(1), first.group(3)) in {
        ("Production", pending.version),
        ("Archived", pending.champion),
    }
    assert f'data-pointer="Production" data-action="transition" data-to="{pending.version}"' in (
        timeline
    )
    assert f"owner-{web_world.u}" in text(timeline)
    approved = owner.get("/approvals", params={"status": "approved"})
    assert 'data-testid="approve-button"' not in card(approved.text, pending.request_id)


def test_the_requester_approving_their_own_request_is_refused(
    web_world: World, browser_for: Callable[[str], Browser]
) -> None:
    pending = open_request(web_world)
    requester = browser_for("approver")
    inbox = requester.get("/approvals")
    # Not offered (separation of duties bars them); the server refuses a forged post too.
    assert 'data-testid="approve-button"' not in card(inbox.text, pending.request_id)
    answer = requester.post_form(
        f"/approvals/{pending.request_id}/approve", {"comment": "mine"}, csrf=csrf_of(inbox.text)
    )
    assert answer.status_code == 200
    kind, message = flash(answer.text)
    assert kind == "error" and "separation of duties" in message, message
    state = request_state(web_world, pending.request_id)
    assert state["status"] == "pending" and state["approvals"] == 0
    assert production_of(web_world, pending.model) == pending.champion


def test_a_reader_sees_no_buttons_and_a_forged_post_is_refused(
    web_world: World, browser_for: Callable[[str], Browser]
) -> None:
    pending = open_request(web_world)
    reader = browser_for("reader")
    inbox = reader.get("/approvals")
    shown = card(inbox.text, pending.request_id)
    assert "approve-button" not in shown and "reject-button" not in shown
    token = csrf_of(inbox.text)  # the sign-out form's token: the session's own
    for action in ("approve", "reject"):
        answer = reader.post_form(f"/approvals/{pending.request_id}/{action}", {}, csrf=token)
        kind, message = flash(answer.text)
        assert kind == "error" and "does not hold the approver role" in message, message
    state = request_state(web_world, pending.request_id)
    assert state["status"] == "pending" and state["approvals"] == 0
    # A user of another team does not even see the request.
    outsider = browser_for("outsider").get("/approvals")
    assert outsider.status_code == 200
    assert pending.request_id not in outsider.text


def test_a_post_without_the_csrf_token_is_refused(
    web_world: World, browser_for: Callable[[str], Browser]
) -> None:
    pending = open_request(web_world)
    owner = browser_for("owner")
    owner.get("/approvals")
    for sent in (None, "forged-token-value-1234567890"):
        answer = owner.post_form(f"/approvals/{pending.request_id}/approve", {}, csrf=sent)
        assert answer.status_code == 403
        assert "security token" in answer.text
    assert request_state(web_world, pending.request_id)["status"] == "pending"
    signed_out = Browser(web_world.server.url)
    page = signed_out.get("/approvals")
    assert page.status_code == 200 and "/login" in str(page.url)
    refused = signed_out.post_form(
        f"/approvals/{pending.request_id}/approve", {}, csrf=csrf_of(page.text)
    )
    assert refused.status_code == 401
    signed_out.close()


def test_reject_closes_the_request_and_the_status_filter_finds_it(
    web_world: World, browser_for: Callable[[str], Browser]
) -> None:
    pending = open_request(web_world, approvals=2)
    owner = browser_for("owner")
    inbox = owner.get("/approvals")
    answer = owner.post_form(
        f"/approvals/{pending.request_id}/reject",
        {"comment": "not this week"},
        csrf=csrf_of(inbox.text),
    )
    kind, message = flash(answer.text)
    assert kind == "notice" and "Rejected" in message
    assert pending.request_id not in owner.get("/approvals").text
    rejected = owner.get("/approvals", params={"status": "rejected"})
    shown = card(rejected.text, pending.request_id)
    assert 'data-status="rejected"' in shown and "not this week" in shown
    again = owner.post_form(
        f"/approvals/{pending.request_id}/approve", {}, csrf=csrf_of(rejected.text)
    )
    kind, message = flash(again.text)
    assert kind == "error" and "is rejected" in message
    assert owner.get("/approvals", params={"status": "nonsense"}).status_code == 400
    assert production_of(web_world, pending.model) == pending.champion


def test_inbox_approves_with_authentication_off(live_server: LiveServer) -> None:
    """Auth off: no grants, anyone may sign off (separation of duties still holds)."""
    u = uuid.uuid4().hex[:8]
    model = f"ui-open-{u}"
    api = httpx.Client(base_url=live_server.url, timeout=60)

    def ok(method: str, path: str, **kw: Any) -> Any:
        r = api.request(method, path, **kw)
        assert r.status_code == 200, (path, r.text)
        return r.json()

    gate = f"gate-{u}"
    ok(
        "POST",
        f"{MLGATE}/gates/create",
        json={"name": gate, "model": model, "target": "Production", "required_approvals": 1},
    )
    secret = ok("POST", f"{MLGATE}/gates/secrets/add", json={"gate": gate})["secret"]
    experiment = ok("POST", f"{API}/experiments/create", json={"name": f"e-{u}"})
    run = ok(
        "POST",
        f"{API}/runs/create",
        json={"experiment_id": experiment["experiment_id"], "user_id": "alice"},
    )["run"]["info"]
    path = str(run["run_id"])
    put = api.put(
        f"/api/2.0/mlflow-artifacts/artifacts/{experiment['experiment_id']}/{path}"
        "/artifacts/model/MLmodel",
        content=b"flavors: {}\n",
    )
    assert put.status_code == 200, put.text
    ok("POST", f"{API}/runs/update", json={"run_id": path, "status": "FINISHED", "end_time": 2})
    body = msgspec.json.encode(
        {
            "model": model,
            "run_id": path,
            "target": "Production",
            "idempotency_key": u,
            "requested_by": "ci-bot",
        }
    )
    headers = {**signed(str(secret["secret"]), body), "content-type": "application/json"}
    answer = api.post(f"{MLGATE}/gates/promote", content=body, headers=headers)
    assert answer.status_code == 202, answer.text
    request_id = answer.json()["approval_request_id"]

    browser = Browser(live_server.url)
    page = browser.get("/approvals", params={"model": model})
    assert page.status_code == 200 and "authentication off" in page.text
    assert 'data-testid="approve-button"' in card(page.text, request_id)
    done = browser.post_form(
        f"/approvals/{request_id}/approve", {"comment": "ok"}, csrf=csrf_of(page.text)
    )
    kind, message = flash(done.text)
    assert kind == "notice" and "moved to Production" in message, message
    latest = ok(
        "POST",
        f"{API}/registered-models/get-latest-versions",
        json={"name": model, "stages": ["Production"]},
    )
    assert latest["model_versions"][0]["version"] == "1"
    missing = browser.post_form("/approvals/no-such-request/approve", {}, csrf=csrf_of(page.text))
    kind, message = flash(missing.text)
    assert kind == "error" and "not found" in message
    browser.close()
    api.close()


@pytest.mark.usefixtures("app_hooks")
async def test_inbox_issues_a_fixed_number_of_queries(
    session: AsyncSession, tmp_path: Path, unique: str
) -> None:
    storage = LocalStorage(tmp_path / "artifacts")
    ci = Actor("ci", is_admin=True, authenticated=True)
    reviewer = Actor("reviewer", is_admin=True, authenticated=True)

    async def populate(model: str, n: int) -> None:
        await make_gate(session, model, "Production", required_approvals=1)
        for _ in range(n):
            run_id = await make_run(session, storage=storage, metrics={"val_auc": 0.9})
            await promotion.promote(
                session,
                PromoteRequest(
                    model=model,
                    target="Production",
                    run_id=run_id,
                    idempotency_key=uuid.uuid4().hex,
                ),
                raw_body=b"",
                signed=None,
                bearer=ci,
                storage=storage,
                approval_ttl_hours=1,
            )

    async def measured(model: str, expected: int) -> int:
        with count_queries(session) as queries:
            # Someone other than the requester (who is never offered the buttons).
            cards, _ = await inbox_data(session, None, reviewer, False, "pending", model, None)
        assert len(cards) == expected
        assert all(c.decision is not None and c.can_act for c in cards)
        return len(queries)

    await populate(f"one-{unique}", 1)
    await populate(f"many-{unique}", 6)
    assert await measured(f"one-{unique}", 1) == await measured(f"many-{unique}", 6)


def test_acting_from_the_inbox_on_a_request_outside_ones_models_reads_as_not_found(
    web_world: World, browser_for: Callable[[str], Browser]
) -> None:
    """The inbox's forms use the API's scope: no "not an approver" that confirms it exists."""
    pending = open_request(web_world)
    missing = "0" * 32
    for who in ("nobody", "outsider"):
        browser = browser_for(who)
        inbox = browser.get("/approvals", params={"status": "all"})
        assert inbox.status_code == 200 and pending.request_id not in inbox.text
        token = csrf_of(inbox.text)
        for action in ("approve", "reject"):
            answer = browser.post_form(f"/approvals/{pending.request_id}/{action}", {}, csrf=token)
            kind, message = flash(answer.text)
            absent = flash(browser.post_form(f"/approvals/{missing}/{action}", {}, csrf=token).text)
            assert kind == "error" and "not found" in message, (who, message)
            assert message == absent[1].replace(missing, pending.request_id), (who, message)
    state = request_state(web_world, pending.request_id)
    assert state["status"] == "pending" and state["approvals"] == 0
