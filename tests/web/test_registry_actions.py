"""The registry's write forms in the web UI: each refuses a user without the right grant,
refuses bad input with a clear message and nothing written, and works for the right user,
through the same services (gates, scoped grants, approvals, audit) as the JSON API."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import httpx

from tests.conftest import LiveServer
from tests.security.auth_world import API, MLGATE, World
from tests.web.support import Browser, csrf_of
from tests.web.test_approvals_pages import card, flash, open_request, request_state
from tests.web.test_registry_pages import (
    create_gate,
    element,
    finished_run,
    model_path,
    text,
)

Open = Callable[[str], Browser]
# A public address literal (no DNS lookup); the subscription made with it stays disabled.
HOOK = "https://93.184.215.14/hook"


def version_path(model: str, version: str) -> str:
    return f"{model_path(model)}/versions/{version}"


def version_state(world: World, model: str, version: str) -> dict[str, Any]:
    found = world.admin_json(
        "GET", f"{API}/model-versions/get", params={"name": model, "version": version}
    )
    state: dict[str, Any] = found["model_version"]
    return state


def model_state(world: World, model: str) -> dict[str, Any]:
    found = world.admin_json("GET", f"{API}/registered-models/get", params={"name": model})
    state: dict[str, Any] = found["registered_model"]
    return state


def post_on(browser: Browser, page: str, action: str, data: dict[str, Any]) -> Any:
    """Load ``page`` (for its CSRF token), then post ``data`` to ``action`` like its form."""
    loaded = browser.get(page)
    assert loaded.status_code == 200, loaded.text[:500]
    return browser.post_form(action, data, csrf=csrf_of(loaded.text))


def gated_model(world: World, *, approvals: int = 0) -> tuple[str, str, str]:
    """A model with a passing version 1 and a gate on Production: (model, version, gate)."""
    model = world.new_model("act")
    run_id = finished_run(world, metrics={"val_auc": 0.95})
    version = world.new_version(model, run_id)
    gate = create_gate(
        world, model, "Production", metrics=["val_auc >= 0.9"], required_approvals=approvals
    )
    return model, version, gate


# --- promotion through the gate -------------------------------------------------------------


def test_promotion_shows_the_dry_run_then_moves_on_confirm_and_the_timeline_names_the_gate(
    web_world: World, browser_for: Open
) -> None:
    model, version, gate = gated_model(web_world)
    approver = browser_for("approver")
    page = version_path(model, version)
    checked = post_on(approver, page, f"{page}/promote", {"target": "production"})
    assert checked.status_code == 200
    dry = element(checked.text, "dry-run")
    assert gate in text(dry) and "dry run" in text(dry)
    assert "moves version" in text(element(dry, "dry-run-verdict"))
    assert version_state(web_world, model, version)["current_stage"] == "None"  # nothing yet

    key = re.search(r'name="idempotency_key" value="([^"]+)"', checked.text)
    assert key
    done = approver.post_form(
        f"{page}/promote",
        {"target": "Production", "idempotency_key": key.group(1)},
        csrf=csrf_of(checked.text),
    )
    kind, message = flash(done.text)
    assert kind == "notice" and "passed" in message and "moved" in message, message
    assert version_state(web_world, model, version)["current_stage"] == "Production"

    timeline = element(approver.get(model_path(model)).text, "timeline")
    story = text(element(timeline, "move-by-gate"))
    assert gate in story and "passed" in story and f"approver-{web_world.u}" in story
    decisions = web_world.admin_json(
        "GET", f"{MLGATE}/gates/decisions/list", params={"model": model}
    )["decisions"]
    assert {(d["trigger"], d["actor"], d.get("dry_run", False)) for d in decisions} == {
        ("ui", f"approver-{web_world.u}", True),
        ("ui", f"approver-{web_world.u}", False),
    }
    # The move made from the UI is attested like the webhook's, naming the signed-in user.
    [attestation] = web_world.admin_json(
        "GET", f"{MLGATE}/attestations", params={"name": model, "version": version}
    )["attestations"]
    assert attestation["target"] == "Production"


def test_promotion_with_approvals_opens_a_request_and_a_reader_is_refused(
    web_world: World, browser_for: Open
) -> None:
    model, version, _ = gated_model(web_world, approvals=1)
    page = version_path(model, version)

    reader = browser_for("reader")
    assert 'data-testid="promote-form"' not in reader.get(page).text  # not offered
    refused = post_on(reader, page, f"{page}/promote", {"target": "Production"})
    kind, message = flash(refused.text)
    assert kind == "error" and "may not promote" in message, message

    nobody = browser_for("nobody")
    assert nobody.get(page).status_code == 403  # cannot even read the model

    approver = browser_for("approver")
    checked = post_on(approver, page, f"{page}/promote", {"target": "Production"})
    assert "approval request" in text(element(checked.text, "dry-run-verdict"))
    key = re.search(r'name="idempotency_key" value="([^"]+)"', checked.text)
    assert key
    done = approver.post_form(
        f"{page}/promote",
        {"target": "Production", "idempotency_key": key.group(1)},
        csrf=csrf_of(checked.text),
    )
    kind, message = flash(done.text)
    assert kind == "notice" and "opened approval request" in message, message
    request_id = re.search(r"approval request (\S+) for", message)
    assert request_id
    state = request_state(web_world, request_id.group(1))
    assert state["status"] == "pending" and state["requester"] == f"approver-{web_world.u}"
    assert version_state(web_world, model, version)["current_stage"] == "None"


def test_promotion_refuses_bad_targets_and_ungated_targets_with_a_clear_message(
    web_world: World, browser_for: Open
) -> None:
    model, version, _ = gated_model(web_world)
    page = version_path(model, version)
    approver = browser_for("approver")
    for target, expected in (
        ("", "target (a stage or @alias) is required"),
        ("Bogus", "Bogus"),
        ("Staging", "No enabled gate guards target 'Staging'"),
    ):
        answer = post_on(approver, page, f"{page}/promote", {"target": target})
        kind, message = flash(answer.text)
        assert kind == "error" and expected in message, (target, message)
    assert version_state(web_world, model, version)["current_stage"] == "None"


# --- direct moves ------------------------------------------------------------------------------


def test_direct_moves_follow_grants_and_a_gated_target_shows_the_gates_reason(
    web_world: World, browser_for: Open
) -> None:
    model, version, gate = gated_model(web_world)
    page = version_path(model, version)

    editor = browser_for("editor")  # may edit, may not promote
    offered = editor.get(page).text
    assert 'data-testid="move-form"' not in offered
    assert 'data-testid="version-description-form"' in offered
    assert 'data-testid="move-form"' in browser_for("ci").get(page).text  # scoped promoter
    refused = post_on(editor, page, f"{page}/move", {"target": "Staging"})
    kind, message = flash(refused.text)
    assert kind == "error" and "promote" in message, message
    assert version_state(web_world, model, version)["current_stage"] == "None"

    approver = browser_for("approver")
    moved = post_on(approver, page, f"{page}/move", {"target": "staging"})
    assert flash(moved.text) == ("notice", f"Moved {model} version {version} to staging.")
    assert version_state(web_world, model, version)["current_stage"] == "Staging"

    gated = post_on(approver, page, f"{page}/move", {"target": "Production"})
    kind, message = flash(gated.text)
    assert kind == "error" and f"guarded by gate '{gate}'" in message, message
    assert "Request promotion" in message
    # An override reason from someone who is not an admin is refused too.
    override = post_on(
        approver, page, f"{page}/move", {"target": "Production", "override_reason": "urgent"}
    )
    kind, message = flash(override.text)
    assert kind == "error" and "Only an admin may override" in message, message
    assert version_state(web_world, model, version)["current_stage"] == "Staging"

    # Scoped grants: ci may promote to Staging and @candidate only.
    ci = browser_for("ci")
    aliased = post_on(ci, page, f"{page}/move", {"target": "@candidate"})
    assert flash(aliased.text)[0] == "notice"
    assert "candidate" in version_state(web_world, model, version)["aliases"]
    other = post_on(ci, page, f"{page}/move", {"target": "@champion"})
    kind, message = flash(other.text)
    assert kind == "error" and "@champion" in message, message
    removed = post_on(ci, page, f"{page}/unalias", {"alias": "candidate"})
    assert flash(removed.text) == ("notice", f"Removed alias @candidate of {model}.")
    assert version_state(web_world, model, version).get("aliases", []) == []


def test_admin_override_needs_a_reason_and_the_timeline_shows_it(
    web_world: World, browser_for: Open
) -> None:
    model, version, gate = gated_model(web_world)
    page = version_path(model, version)
    admin = browser_for("admin")
    assert 'data-testid="override-reason"' in admin.get(page).text
    blank = post_on(admin, page, f"{page}/move", {"target": "Production", "override_reason": ""})
    assert flash(blank.text)[0] == "error"
    long = post_on(
        admin, page, f"{page}/move", {"target": "Production", "override_reason": "x" * 1001}
    )
    kind, message = flash(long.text)
    assert kind == "error" and "at most 1000" in message, message
    assert version_state(web_world, model, version)["current_stage"] == "None"

    done = post_on(
        admin,
        page,
        f"{page}/move",
        {"target": "Production", "override_reason": "hotfix for incident 42"},
    )
    kind, message = flash(done.text)
    assert kind == "notice" and "override recorded" in message, message
    assert version_state(web_world, model, version)["current_stage"] == "Production"
    # Leaving the gated stage is refused too, for anyone without an override.
    owner = browser_for("owner")
    left = post_on(owner, page, f"{page}/move", {"target": "Archived"})
    kind, message = flash(left.text)
    assert kind == "error" and f"guarded by gate '{gate}'" in message, message
    assert "leaving it (transition)" in message and "admin's override" in message
    assert version_state(web_world, model, version)["current_stage"] == "Production"
    timeline = element(admin.get(model_path(model)).text, "timeline")
    story = element(timeline, "move-override")
    assert "hotfix for incident 42" in text(element(story, "move-override"))
    assert gate in text(story) and "root" in text(story)
    audit = web_world.admin_json(
        "GET", f"{MLGATE}/audit", params={"kind": "gate.overridden", "subject": f"model:{model}"}
    )
    assert any(e["payload"]["reason"] == "hotfix for incident 42" for e in audit["entries"])


def test_a_forged_override_comment_is_not_shown_as_an_override(
    web_world: World, browser_for: Open
) -> None:
    model = web_world.new_model("forge")
    version = web_world.new_version(model)
    web_world.admin_json(
        "POST",
        f"{API}/model-versions/transition-stage",
        json={
            "name": model,
            "version": version,
            "stage": "Staging",
            "comment": "[override of gate g (onto Staging) by root: fake]",
        },
    )
    page = browser_for("reader").get(model_path(model)).text
    assert 'data-testid="move-override"' not in page
    assert "fake" in text(element(page, "timeline"))  # still shown, as a plain comment


# --- descriptions and tags ---------------------------------------------------------------------


def test_descriptions_need_edit_rights_and_refuse_overlong_text(
    web_world: World, browser_for: Open
) -> None:
    model = web_world.new_model("desc")
    version = web_world.new_version(model)
    mpage, vpage = model_path(model), version_path(model, version)

    reader = browser_for("reader")
    assert 'data-testid="model-description-form"' not in reader.get(mpage).text
    refused = post_on(reader, mpage, f"{mpage}/edit", {"description": "mine now"})
    assert refused.status_code == 403
    assert model_state(web_world, model).get("description", "") == ""

    editor = browser_for("editor")
    saved = post_on(editor, mpage, f"{mpage}/edit", {"description": "Fraud scorer, v2 data"})
    assert flash(saved.text) == ("notice", "Description saved.")
    assert model_state(web_world, model)["description"] == "Fraud scorer, v2 data"
    saved = post_on(editor, vpage, f"{vpage}/edit", {"description": "retrained on March"})
    assert flash(saved.text) == ("notice", "Description saved.")
    assert version_state(web_world, model, version)["description"] == "retrained on March"

    too_long = post_on(editor, vpage, f"{vpage}/edit", {"description": "x" * 100_001})
    kind, message = flash(too_long.text)
    assert kind == "error" and "at most 100000" in message, message
    assert version_state(web_world, model, version)["description"] == "retrained on March"


def test_tags_are_set_and_deleted_and_bad_keys_are_refused(
    web_world: World, browser_for: Open
) -> None:
    model = web_world.new_model("tags")
    version = web_world.new_version(model)
    mpage, vpage = model_path(model), version_path(model, version)
    reader = browser_for("reader")
    assert post_on(reader, vpage, f"{vpage}/tags", {"key": "k", "value": "v"}).status_code == 403

    editor = browser_for("editor")
    done = post_on(editor, mpage, f"{mpage}/tags", {"op": "set", "key": "team", "value": "risk"})
    assert flash(done.text) == ("notice", "Tag 'team' saved.")
    done = post_on(editor, vpage, f"{vpage}/tags", {"op": "set", "key": "qa", "value": "ok"})
    assert flash(done.text) == ("notice", "Tag 'qa' saved.")
    assert {"key": "qa", "value": "ok"} in version_state(web_world, model, version)["tags"]
    assert {"key": "team", "value": "risk"} in model_state(web_world, model)["tags"]

    for data, expected in (
        ({"op": "set", "key": "", "value": "v"}, "tag key is required"),
        ({"op": "set", "key": "k" * 300, "value": "v"}, "exceeded length limit"),
        ({"op": "rename", "key": "qa"}, "set or delete"),
        ({"op": "delete", "key": "absent"}, "No tag with key 'absent'"),
    ):
        answer = post_on(editor, vpage, f"{vpage}/tags", data)
        kind, message = flash(answer.text)
        assert kind == "error" and expected in message, (data, message)

    gone = post_on(editor, vpage, f"{vpage}/tags", {"op": "delete", "key": "qa"})
    assert flash(gone.text) == ("notice", "Tag 'qa' deleted.")
    assert version_state(web_world, model, version).get("tags", []) == []


# --- deleting a version ------------------------------------------------------------------------


def test_deleting_a_version_needs_the_delete_right_and_a_typed_confirmation(
    web_world: World, browser_for: Open
) -> None:
    model = web_world.new_model("del")
    version = web_world.new_version(model)
    vpage = version_path(model, version)

    editor = browser_for("editor")
    assert 'data-testid="delete-version"' not in editor.get(vpage).text
    assert editor.get(f"{vpage}/delete").status_code == 403
    assert post_on(editor, vpage, f"{vpage}/delete", {"confirm": version}).status_code == 403

    admin = browser_for("admin")
    assert 'data-testid="delete-version"' in admin.get(vpage).text
    confirm = f"{vpage}/delete"
    wrong = post_on(admin, confirm, confirm, {"confirm": "999"})
    kind, message = flash(wrong.text)
    assert kind == "error" and "nothing was deleted" in message, message
    assert version_state(web_world, model, version)["version"] == version

    done = post_on(admin, confirm, confirm, {"confirm": version})
    assert flash(done.text) == ("notice", f"Deleted {model} version {version}.")
    missing = web_world.admin.get(
        f"{API}/model-versions/get", params={"name": model, "version": version}
    )
    assert missing.status_code == 404


# --- approvals: cancel, and no buttons for those separation of duties bars ------------------


def test_requester_sees_cancel_not_approve_and_only_they_or_an_admin_may_cancel(
    web_world: World, browser_for: Open
) -> None:
    pending = open_request(web_world)
    requester = browser_for("approver")
    inbox = requester.get("/approvals").text
    mine = card(inbox, pending.request_id)
    assert 'data-testid="approve-button"' not in mine
    assert "separation of duties" in text(element(mine, "approval-barred"))
    assert 'data-testid="cancel-button"' in mine

    # The run author (root, an admin) gets no approve button either, but may cancel.
    admin_card = card(browser_for("admin").get("/approvals").text, pending.request_id)
    assert 'data-testid="approve-button"' not in admin_card
    assert 'data-testid="cancel-button"' in admin_card

    owner = browser_for("owner")
    owner_card = card(owner.get("/approvals").text, pending.request_id)
    assert 'data-testid="approve-button"' in owner_card
    assert 'data-testid="cancel-button"' not in owner_card
    refused = post_on(owner, "/approvals", f"/approvals/{pending.request_id}/cancel", {})
    kind, message = flash(refused.text)
    assert kind == "error" and "Only the requester or an admin" in message, message
    assert request_state(web_world, pending.request_id)["status"] == "pending"

    outsider = browser_for("outsider")  # cannot read the model: as if it did not exist
    hidden = post_on(outsider, "/approvals", f"/approvals/{pending.request_id}/cancel", {})
    kind, message = flash(hidden.text)
    assert kind == "error" and "not found" in message.lower(), message

    done = post_on(
        requester, "/approvals", f"/approvals/{pending.request_id}/cancel", {"comment": "stale"}
    )
    kind, message = flash(done.text)
    assert kind == "notice" and "Cancelled" in message, message
    state = request_state(web_world, pending.request_id)
    assert state["status"] == "cancelled" and state["resolved_by"] == f"approver-{web_world.u}"


def test_every_new_form_refuses_a_post_without_the_csrf_token(
    web_world: World, browser_for: Open
) -> None:
    model = web_world.new_model("csrf")
    version = web_world.new_version(model)
    vpage = version_path(model, version)
    admin = browser_for("admin")
    admin.get(vpage)
    for action, data in (
        (f"{vpage}/promote", {"target": "Production"}),
        (f"{vpage}/move", {"target": "Staging"}),
        (f"{vpage}/unalias", {"alias": "a"}),
        (f"{vpage}/edit", {"description": "x"}),
        (f"{vpage}/tags", {"key": "k", "value": "v"}),
        (f"{vpage}/delete", {"confirm": version}),
        (f"{model_path(model)}/edit", {"description": "x"}),
        (f"{model_path(model)}/tags", {"key": "k", "value": "v"}),
        ("/approvals/nope/cancel", {}),
    ):
        answer = admin.post_form(action, data)
        assert answer.status_code == 403, action
        assert "security token" in answer.text, action
    state = version_state(web_world, model, version)
    assert state["current_stage"] == "None" and not state.get("description")
    assert version_state(web_world, model, version)["version"] == version


# --- subscriptions ---------------------------------------------------------------------------


def test_a_subscription_without_a_name_says_so_and_star_subscribes_to_every_event(
    web_world: World,
) -> None:
    missing = web_world.admin.post(
        f"{MLGATE}/subscriptions", json={"url": "https://hooks.example.com/x", "events": ["*"]}
    )
    assert missing.status_code == 400
    body = missing.json()
    assert body["error_code"] == "INVALID_PARAMETER_VALUE"
    assert "Missing value for required parameter 'name'" in body["message"]
    assert "None" not in body["message"]

    mixed = web_world.admin.post(
        f"{MLGATE}/subscriptions",
        json={"name": "all-mixed", "url": HOOK, "events": ["*", "a.b"]},
    )
    assert mixed.status_code == 400 and "stands alone" in mixed.json()["message"]

    created = web_world.admin.post(
        f"{MLGATE}/subscriptions",
        json={
            "name": web_world.fresh("all"),
            "url": HOOK,
            "events": ["*"],
            "status": "DISABLED",  # never sends anything anywhere
        },
    )
    assert created.status_code == 200, created.text
    events = created.json()["subscription"]["events"]
    assert "gate.decided" in events and "approval.approved" in events
    assert "gate.overridden" in events and len(events) > 10


def test_the_forms_work_with_authentication_off(live_server: LiveServer) -> None:
    name = f"ui-act-{time.time_ns()}"
    api = httpx.Client(base_url=live_server.url, timeout=60)
    assert api.post(f"{API}/registered-models/create", json={"name": name}).status_code == 200
    experiment = api.post(f"{API}/experiments/create", json={"name": name}).json()
    run = api.post(
        f"{API}/runs/create", json={"experiment_id": experiment["experiment_id"]}
    ).json()["run"]["info"]
    body = {"name": name, "source": f"runs:/{run['run_id']}/model", "run_id": run["run_id"]}
    assert api.post(f"{API}/model-versions/create", json=body).status_code == 200
    browser = Browser(live_server.url)
    page = version_path(name, "1")
    moved = post_on(browser, page, f"{page}/move", {"target": "Staging"})
    assert flash(moved.text) == ("notice", f"Moved {name} version 1 to Staging.")
    edited = post_on(browser, page, f"{page}/edit", {"description": "smoke"})
    assert flash(edited.text) == ("notice", "Description saved.")
    got = api.get(f"{API}/model-versions/get", params={"name": name, "version": "1"}).json()
    assert got["model_version"]["current_stage"] == "Staging"
    assert got["model_version"]["description"] == "smoke"
    browser.close()
    api.close()
