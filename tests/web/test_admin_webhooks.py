"""Creating a webhook subscription and testing a webhook from the UI: admin only, CSRF
checked, bad input refused with the events service's message (nothing created), the signing
secret shown once, and "All events" sent as the API's ``["*"]``."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from tests.security.auth_world import MLGATE, World
from tests.web.support import Browser, csrf_of
from tests.web.test_approvals_pages import flash
from tests.web.test_registry_pages import element, text

Open = Callable[[str], Browser]
# A public address literal (no DNS lookup); subscriptions made here start paused.
HOOK = "https://93.184.215.14/hook"


def subscriptions(world: World) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    token = None
    while True:
        params = {"max_results": 100} | ({"page_token": token} if token else {})
        page = world.admin_json("GET", f"{MLGATE}/subscriptions", params=params)
        found.extend(page.get("subscriptions", []))
        token = page.get("next_page_token")
        if not token:
            return found


def named(world: World, name: str) -> list[dict[str, Any]]:
    return [x for x in subscriptions(world) if x["name"] == name]


def create(browser: Browser, body: dict[str, Any]) -> Any:
    shown = browser.get("/admin/webhooks/new")
    assert shown.status_code == 200, shown.text[:300]
    return browser.post_form("/admin/webhooks/create", body, csrf=csrf_of(shown.text))


def test_admin_creates_an_all_events_subscription_and_sees_the_secret_once(
    web_world: World, browser_for: Open
) -> None:
    admin = browser_for("admin")
    assert 'href="/admin/webhooks/new"' in admin.get("/webhooks").text
    name = web_world.fresh("hook")
    answer = create(admin, {"name": name, "url": HOOK, "events": "*", "paused": "true"})
    assert answer.status_code == 200 and answer.headers["cache-control"] == "no-store"
    secret = re.search(r'value="([^"]+)" data-testid="webhook-secret-value"', answer.text)
    assert secret and len(secret.group(1)) >= 16
    [made] = named(web_world, name)
    assert made["status"] == "disabled" and "gate.decided" in made["events"]
    assert "approval.requested" in made["events"] and "prompt.created" in made["events"]
    page = admin.get(f"/webhooks/{made['id']}").text
    assert secret.group(1) not in page
    assert secret.group(1) not in web_world.server.log.read_text(errors="replace")


def test_admin_creates_a_subscription_to_chosen_events(web_world: World, browser_for: Open) -> None:
    admin = browser_for("admin")
    name = web_world.fresh("hook")
    body = {"name": name, "url": HOOK, "events": ["gate.decided", "alias.moved"], "paused": "true"}
    shown = admin.get("/admin/webhooks/new")
    answer = admin.client.post(
        "/admin/webhooks/create",
        data={**body, "csrf_token": csrf_of(shown.text)},
        headers=admin._headers({"Origin": admin.base_url}),
    )
    assert answer.status_code == 200, answer.text[:300]
    [made] = named(web_world, name)
    assert sorted(made["events"]) == ["alias.moved", "gate.decided"]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"url": HOOK, "events": "*"}, "Missing value for required parameter 'name'"),
        ({"name": "NAME", "url": HOOK}, "Choose the events"),
        ({"name": "NAME", "url": "ftp://example.com/x", "events": "*"}, "URL"),
        ({"name": "NAME", "url": HOOK, "events": "no.such_event"}, "Unknown event type"),
    ],
)
def test_creating_a_subscription_refuses_bad_input_and_keeps_what_was_typed(
    web_world: World, browser_for: Open, body: dict[str, Any], expected: str
) -> None:
    name = web_world.fresh("bad-hook")
    sent = {k: (name if v == "NAME" else v) for k, v in body.items()} | {"paused": "true"}
    answer = create(browser_for("admin"), sent)
    assert answer.status_code == 400
    message = text(element(answer.text, "webhook-error"))
    assert expected.lower() in message.lower() and "Nothing was created" in message, message
    assert 'data-testid="webhook-created"' not in answer.text
    if "name" in body:
        assert f'value="{name}"' in answer.text  # the form keeps what was typed
    assert named(web_world, name) == []


def test_all_events_cannot_be_mixed_with_single_events(web_world: World, browser_for: Open) -> None:
    admin = browser_for("admin")
    name = web_world.fresh("mixed")
    shown = admin.get("/admin/webhooks/new")
    answer = admin.client.post(
        "/admin/webhooks/create",
        data={
            "name": name,
            "url": HOOK,
            "events": ["*", "gate.decided"],
            "paused": "true",
            "csrf_token": csrf_of(shown.text),
        },
        headers=admin._headers({"Origin": admin.base_url}),
    )
    assert answer.status_code == 400 and "stands alone" in text(
        element(answer.text, "webhook-error")
    )
    assert named(web_world, name) == []


@pytest.mark.parametrize("level", ["owner", "anonymous", "admin-without-csrf"])
def test_webhook_forms_refuse_a_non_admin_or_a_missing_csrf_token(
    web_world: World, browser_for: Open, level: str
) -> None:
    name = web_world.fresh("refused")
    existing = web_world.admin_json(
        "POST",
        f"{MLGATE}/subscriptions",
        json={"name": web_world.fresh("t"), "url": HOOK, "events": ["*"], "status": "disabled"},
    )["subscription"]["id"]
    browser = browser_for("admin" if level == "admin-without-csrf" else level)
    if level != "admin-without-csrf":
        assert browser.get("/admin/webhooks/new", follow=False).status_code == (
            303 if level == "anonymous" else 403
        )
    csrf = None if level == "admin-without-csrf" else csrf_of(browser.get("/login").text)
    body = {"name": name, "url": HOOK, "events": "*", "paused": "true"}
    for action, data in (("create", body), (f"{existing}/test", {})):
        answer = browser.post_form(f"/admin/webhooks/{action}", data, csrf=csrf, follow=False)
        assert answer.status_code == (401 if level == "anonymous" else 403), action
    assert named(web_world, name) == []


def test_testing_an_mlgate_subscription_is_refused_with_a_clear_message(
    web_world: World, browser_for: Open
) -> None:
    made = web_world.admin_json(
        "POST",
        f"{MLGATE}/subscriptions",
        json={"name": web_world.fresh("t"), "url": HOOK, "events": ["*"], "status": "disabled"},
    )["subscription"]["id"]
    admin = browser_for("admin")
    page = admin.get(f"/webhooks/{made}")
    assert 'data-testid="test-webhook-button"' not in page.text  # only MLflow webhooks
    answer = admin.post_form(f"/admin/webhooks/{made}/test", {}, csrf=csrf_of(page.text))
    kind, message = flash(answer.text)
    assert kind == "error" and "Test refused" in message, message
