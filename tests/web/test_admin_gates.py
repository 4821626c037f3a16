"""The gate policy administration pages: versions and their diff, editing (a new version
through the policy service) and a dry run against a model version; every form refuses a
non-admin, an anonymous visitor, a missing CSRF token and bad input, writing nothing."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable
from typing import Any

import pytest

from tests.security.auth_world import MLGATE, World
from tests.web.support import Browser, csrf_of
from tests.web.test_approvals_pages import flash
from tests.web.test_registry_pages import create_gate, element, finished_run, rows, text

Open = Callable[[str], Browser]


def gate_versions(world: World, gate: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = world.admin_json(
        "GET", f"{MLGATE}/gates/versions", params={"name": gate}
    )["versions"]
    return found


def decisions_of(world: World, model: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = world.admin_json(
        "GET", f"{MLGATE}/gates/decisions/list", params={"model": model}
    ).get("decisions", [])
    return found


def a_gate(world: World) -> tuple[str, str, str]:
    model = world.new_model("gated")
    version = world.new_version(model, finished_run(world, metrics={"val_auc": 0.95}))
    return model, version, create_gate(world, model, "Production", metrics=["val_auc >= 0.9"])


def edited(page: str, **change: Any) -> str:
    found = re.search(r'<textarea name="spec"[^>]*>(.*?)</textarea>', page, re.S)
    assert found
    spec = json.loads(html.unescape(found.group(1)))
    spec.update(change)
    return json.dumps(spec)


def test_admin_edits_a_gate_into_a_new_version_and_sees_the_diff(
    web_world: World, browser_for: Open
) -> None:
    _, _, gate = a_gate(web_world)
    admin = browser_for("admin")
    shown = admin.get(f"/admin/gates/{gate}")
    assert shown.status_code == 200
    assert gate in text(element(admin.get("/admin/gates").text, "gates-table"))
    body = edited(shown.text, metrics=["val_auc >= 0.97"], required_approvals=1)
    saved = admin.post_form(f"/admin/gates/{gate}/edit", {"spec": body}, csrf=csrf_of(shown.text))
    kind, message = flash(saved.text)
    assert kind == "notice" and "version 2" in message, message
    versions = gate_versions(web_world, gate)
    assert [v["version"] for v in versions] == ["2", "1"]
    assert versions[0]["rules"]["required_approvals"] == 1
    assert set(rows(element(saved.text, "gate-versions"), "version")) == {"1", "2"}

    diff = text(element(admin.get(f"/admin/gates/{gate}?from=1&to=2").text, "gate-diff"))
    assert '- "required_approvals": 0' in diff and '+ "required_approvals": 1' in diff
    assert "0.97" in diff and '- "model"' not in diff  # the binding did not change

    again = admin.post_form(f"/admin/gates/{gate}/edit", {"spec": body}, csrf=csrf_of(saved.text))
    assert "No change" in flash(again.text)[1]
    assert len(gate_versions(web_world, gate)) == 2


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("", "The policy is empty"),
        ("{not json", "not valid JSON"),
        ("[1]", "JSON object"),
        ('{"model": "m", "target": "Production", "colour": "red"}', "colour"),
        ('{"name": "other", "model": "m", "target": "Production"}', "name cannot be changed"),
        ('{"model": "m", "target": "Production", "metrics": ["val_auc >>> 1"]}', "val_auc"),
        (
            '{"model": "m", "target": "Production", "required_approvals": "two"}',
            "required_approvals",
        ),
    ],
)
def test_editing_a_gate_refuses_bad_input_with_a_clear_message(
    web_world: World, browser_for: Open, spec: str, expected: str
) -> None:
    _, _, gate = a_gate(web_world)
    admin = browser_for("admin")
    shown = admin.get(f"/admin/gates/{gate}")
    answer = admin.post_form(f"/admin/gates/{gate}/edit", {"spec": spec}, csrf=csrf_of(shown.text))
    kind, message = flash(answer.text)
    assert kind == "error" and expected in message, message
    assert len(gate_versions(web_world, gate)) == 1


def test_a_dry_run_shows_the_gate_decision_and_moves_nothing(
    web_world: World, browser_for: Open
) -> None:
    model, version, gate = a_gate(web_world)
    admin = browser_for("admin")
    shown = admin.get(f"/admin/gates/{gate}")
    answer = admin.post_form(
        f"/admin/gates/{gate}/dry-run",
        {"model": model, "version": version},
        csrf=csrf_of(shown.text),
    )
    assert answer.status_code == 200
    result = element(answer.text, "gate-dry-run")
    assert "passed" in text(result) and "dry run" in text(result) and "val_auc" in text(result)
    decisions = decisions_of(web_world, model)
    assert [(d["dry_run"], d["trigger"]) for d in decisions] == [(True, "ui")]
    state = web_world.admin_json(
        "GET", "/api/2.0/mlflow/model-versions/get", params={"name": model, "version": version}
    )["model_version"]
    assert state["current_stage"] == "None"

    other = web_world.new_model("ungated")
    refused = admin.post_form(
        f"/admin/gates/{gate}/dry-run", {"model": other, "version": "1"}, csrf=csrf_of(shown.text)
    )
    kind, message = flash(refused.text)
    assert kind == "error" and "does not guard" in message, message
    missing = admin.post_form(
        f"/admin/gates/{gate}/dry-run", {"model": model, "version": ""}, csrf=csrf_of(shown.text)
    )
    assert "required" in flash(missing.text)[1]
    assert len(decisions_of(web_world, model)) == 1


@pytest.mark.parametrize("level", ["owner", "anonymous"])
def test_gate_pages_and_forms_refuse_a_non_admin(
    web_world: World, browser_for: Open, level: str
) -> None:
    model, version, gate = a_gate(web_world)
    browser = browser_for(level)
    for path in ("/admin/gates", f"/admin/gates/{gate}"):
        assert browser.get(path, follow=False).status_code == (303 if level == "anonymous" else 403)
    csrf = csrf_of(browser.get("/login").text)
    spec = json.dumps({"model": model, "target": "Production", "required_approvals": 3})
    edit = browser.post_form(f"/admin/gates/{gate}/edit", {"spec": spec}, csrf=csrf, follow=False)
    run = browser.post_form(
        f"/admin/gates/{gate}/dry-run",
        {"model": model, "version": version},
        csrf=csrf,
        follow=False,
    )
    for answer in (edit, run):
        assert answer.status_code == (401 if level == "anonymous" else 403)
    assert len(gate_versions(web_world, gate)) == 1 and decisions_of(web_world, model) == []


def test_gate_forms_refuse_a_missing_csrf_token(web_world: World, browser_for: Open) -> None:
    model, version, gate = a_gate(web_world)
    admin = browser_for("admin")
    admin.get(f"/admin/gates/{gate}")
    spec = json.dumps({"model": model, "target": "Production", "required_approvals": 3})
    for action, body in (
        ("edit", {"spec": spec}),
        ("dry-run", {"model": model, "version": version}),
    ):
        answer = admin.post_form(f"/admin/gates/{gate}/{action}", body, follow=False)
        assert answer.status_code == 403 and "security token" in text(answer.text), action
    assert len(gate_versions(web_world, gate)) == 1 and decisions_of(web_world, model) == []


def secrets_of(world: World, gate: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = world.admin_json(
        "GET", f"{MLGATE}/gates/secrets/list", params={"gate": gate}
    )["secrets"]
    return found


def shown_secret(page: str) -> str:
    found = re.search(r'value="([^"]+)" data-testid="gate-secret-value"', page)
    assert found, "no new secret on the page"
    return found.group(1)


def test_gate_secrets_are_created_shown_once_rotated_and_retired(
    web_world: World, browser_for: Open
) -> None:
    _, _, gate = a_gate(web_world)
    admin = browser_for("admin")
    page = f"/admin/gates/{gate}"
    created = admin.post_form(f"{page}/secrets/add", {}, csrf=csrf_of(admin.get(page).text))
    assert created.headers["cache-control"] == "no-store"
    first = shown_secret(created.text)
    [listed] = secrets_of(web_world, gate)
    assert listed["active"] and "secret" not in listed
    again = admin.get(page).text
    assert first not in again and 'data-testid="gate-secret-new"' not in again
    assert first not in web_world.server.log.read_text(errors="replace")

    rotated = admin.post_form(f"{page}/secrets/rotate", {"grace_hours": "0"}, csrf=csrf_of(again))
    second = shown_secret(rotated.text)
    assert second != first
    state = {x["secret_id"]: x["active"] for x in secrets_of(web_world, gate)}
    assert sorted(state.values()) == [False, True]  # no grace: the old one stopped at once

    active = next(k for k, v in state.items() if v)
    retired = admin.post_form(
        f"{page}/secrets/{active}/retire", {}, csrf=csrf_of(admin.get(page).text)
    )
    assert flash(retired.text)[0] == "notice"
    assert not any(x["active"] for x in secrets_of(web_world, gate))


@pytest.mark.parametrize(
    ("action", "body", "expected"),
    [
        ("secrets/rotate", {"grace_hours": "soon"}, "whole number of hours"),
        ("secrets/rotate", {"grace_hours": "100000"}, "grace_seconds"),
        ("secrets/gs_nothing/retire", {}, "gs_nothing"),
    ],
)
def test_gate_secret_forms_refuse_bad_input(
    web_world: World, browser_for: Open, action: str, body: dict[str, str], expected: str
) -> None:
    _, _, gate = a_gate(web_world)
    admin = browser_for("admin")
    page = f"/admin/gates/{gate}"
    answer = admin.post_form(f"{page}/{action}", body, csrf=csrf_of(admin.get(page).text))
    kind, message = flash(answer.text)
    assert kind == "error" and expected in message, message
    assert secrets_of(web_world, gate) == []


@pytest.mark.parametrize("level", ["owner", "anonymous", "admin-without-csrf"])
def test_gate_secret_forms_refuse_a_non_admin_or_a_missing_csrf_token(
    web_world: World, browser_for: Open, level: str
) -> None:
    _, _, gate = a_gate(web_world)
    web_world.admin_json("POST", f"{MLGATE}/gates/secrets/add", json={"gate": gate})
    [existing] = secrets_of(web_world, gate)
    browser = browser_for("admin" if level == "admin-without-csrf" else level)
    csrf = None if level == "admin-without-csrf" else csrf_of(browser.get("/login").text)
    base = f"/admin/gates/{gate}/secrets"
    for action in ("add", "rotate", f"{existing['secret_id']}/retire"):
        answer = browser.post_form(f"{base}/{action}", {}, csrf=csrf, follow=False)
        assert answer.status_code == (401 if level == "anonymous" else 403), action
    assert secrets_of(web_world, gate) == [existing]
