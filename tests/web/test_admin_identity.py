"""The identity administration pages (users, API tokens, grants): each form refuses a
non-admin and an anonymous visitor, refuses a missing CSRF token and bad input with a clear
message and nothing written, and works for the admin, checked through the identity API."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.security.auth_world import MLGATE, PASSWORD, World
from tests.web.support import Browser, csrf_of
from tests.web.test_approvals_pages import flash
from tests.web.test_registry_pages import element, rows, text

Open = Callable[[str], Browser]
NEW_PASSWORD = "another-long-password-1"


def user_state(world: World, username: str) -> dict[str, Any]:
    found: dict[str, Any] = world.admin_json(
        "GET", f"{MLGATE}/users/get", params={"username": username}
    )["user"]
    return found


def tokens_of(world: World, username: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = world.admin_json(
        "GET", f"{MLGATE}/tokens/list", params={"username": username}
    ).get("tokens", [])
    return found


def grants_of(world: World, username: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = world.admin_json(
        "GET", f"{MLGATE}/grants/list", params={"username": username}
    ).get("grants", [])
    return found


def post_on(browser: Browser, page: str, action: str, data: dict[str, Any]) -> httpx.Response:
    loaded = browser.get(page)
    assert loaded.status_code == 200, loaded.text[:500]
    return browser.post_form(action, data, csrf=csrf_of(loaded.text))


def a_token(world: World, username: str) -> str:
    created = world.admin_json(
        "POST", f"{MLGATE}/tokens/create", json={"username": username, "name": "t"}
    )
    return str(created["token"]["token_id"])


# Each admin form: (name, the page it sits on, its action, a valid body) built for a fresh user.
def forms(world: World) -> list[tuple[str, str, str, dict[str, Any], Callable[[], bool]]]:
    fresh, other = world.fresh("adm"), world.fresh("off")
    world.create_user(fresh)
    world.create_user(other)
    made = world.fresh("made")
    token_id = a_token(world, fresh)
    grant_id = world.grant(fresh, "registered_model", "x-*", "reader")
    return [
        (
            "create user",
            "/admin/users",
            "/admin/users/create",
            {"username": made, "password": PASSWORD},
            lambda: any(u["username"] == made for u in all_users(world)),
        ),
        (
            "disable user",
            "/admin/users",
            f"/admin/users/{other}/disable",
            {},
            lambda: user_state(world, other)["disabled"],
        ),
        (
            "reset password",
            "/admin/users",
            f"/admin/users/{fresh}/password",
            {"password": NEW_PASSWORD, "password_again": NEW_PASSWORD},
            lambda: (
                world.client_for(fresh, NEW_PASSWORD).get(f"{MLGATE}/whoami").status_code == 200
            ),
        ),
        (
            "create token",
            "/admin/tokens",
            "/admin/tokens/create",
            {"username": fresh, "name": "from-ui"},
            lambda: any(t["name"] == "from-ui" for t in tokens_of(world, fresh)),
        ),
        (
            "revoke token",
            "/admin/tokens",
            f"/admin/tokens/{token_id}/revoke",
            {},
            lambda: any("revoked_at" in t for t in tokens_of(world, fresh)),
        ),
        (
            "create grant",
            "/admin/grants",
            "/admin/grants/create",
            {
                "username": fresh,
                "resource_type": "registered_model",
                "pattern": "y-*",
                "role": "approver",
                "targets": "Staging",
            },
            lambda: any(g["pattern"] == "y-*" for g in grants_of(world, fresh)),
        ),
        (
            "delete grant",
            "/admin/grants",
            f"/admin/grants/{grant_id}/delete",
            {},
            lambda: all(g["grant_id"] != grant_id for g in grants_of(world, fresh)),
        ),
    ]


def all_users(world: World) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    token = None
    while True:
        params = {"max_results": 1000} | ({"page_token": token} if token else {})
        page = world.admin_json("GET", f"{MLGATE}/users/list", params=params)
        found.extend(page["users"])
        token = page.get("next_page_token")
        if not token:
            return found


@pytest.mark.parametrize("level", ["owner", "reader", "anonymous"])
def test_every_admin_form_refuses_a_non_admin_and_writes_nothing(
    web_world: World, browser_for: Open, level: str
) -> None:
    browser = browser_for(level)
    # Pages: a non-admin is refused (403), an anonymous visitor is sent to sign in.
    for path in ("/admin/users", "/admin/tokens", "/admin/grants"):
        shown = browser.get(path, follow=False)
        assert shown.status_code == (303 if level == "anonymous" else 403), path
    if level != "anonymous":
        assert 'data-testid="nav-admin"' not in browser.get("/models").text
    csrf = csrf_of(browser.get("/login").text)
    for name, _, action, body, done in forms(web_world):
        refused = browser.post_form(action, body, csrf=csrf, follow=False)
        assert refused.status_code == (401 if level == "anonymous" else 403), name
        assert not done(), name


def test_every_admin_form_refuses_a_missing_csrf_token(web_world: World, browser_for: Open) -> None:
    admin = browser_for("admin")
    for name, page, action, body, done in forms(web_world):
        admin.get(page)
        refused = admin.post_form(action, body, follow=False)
        assert refused.status_code == 403, name
        assert "security token" in text(refused.text), name
        assert not done(), name


def test_every_admin_form_works_for_the_admin(web_world: World, browser_for: Open) -> None:
    admin = browser_for("admin")
    assert 'data-testid="nav-admin"' in admin.get("/models").text
    for name, page, action, body, done in forms(web_world):
        answer = post_on(admin, page, action, body)
        assert answer.status_code == 200, (name, answer.text[:300])
        if name != "create token":
            kind, message = flash(answer.text)
            assert kind == "notice", (name, message)
        assert done(), name


@pytest.mark.parametrize(
    ("page", "action", "body", "expected"),
    [
        ("/admin/users", "/admin/users/create", {"username": ""}, "The username is required"),
        ("/admin/users", "/admin/users/create", {"username": "bad name!"}, "Invalid user name"),
        ("/admin/users", "/admin/users/create", {"username": "USER", "password": "short"}, "12"),
        ("/admin/users", "/admin/users/nobody-at-all/disable", {}, "nobody-at-all"),
        ("/admin/tokens", "/admin/tokens/create", {"username": "", "name": "t"}, "The user is"),
        ("/admin/tokens", "/admin/tokens/create", {"username": "USER", "name": ""}, "token name"),
        (
            "/admin/tokens",
            "/admin/tokens/create",
            {"username": "USER", "name": "t", "expires_days": "-1"},
            "whole number of days",
        ),
        ("/admin/tokens", "/admin/tokens/abc/revoke", {}, "abc"),
        (
            "/admin/grants",
            "/admin/grants/create",
            {"username": "USER", "resource_type": "dataset", "pattern": "*", "role": "reader"},
            "resource_type",
        ),
        (
            "/admin/grants",
            "/admin/grants/create",
            {"username": "USER", "resource_type": "experiment", "pattern": "*", "role": "boss"},
            "role",
        ),
        (
            "/admin/grants",
            "/admin/grants/create",
            {"username": "USER", "resource_type": "experiment", "pattern": "", "role": "reader"},
            "The pattern is required",
        ),
        ("/admin/grants", "/admin/grants/999999999/delete", {}, "999999999"),
    ],
)
def test_admin_forms_refuse_bad_input_with_a_clear_message_and_write_nothing(
    web_world: World,
    browser_for: Open,
    page: str,
    action: str,
    body: dict[str, Any],
    expected: str,
) -> None:
    user = web_world.fresh("bad")
    web_world.create_user(user)
    sent = {k: (user if v == "USER" else v) for k, v in body.items()}
    admin = browser_for("admin")
    answer = post_on(admin, page, action, sent)
    kind, message = flash(answer.text)
    assert kind == "error" and expected in message and "Nothing changed" in message, message
    assert tokens_of(web_world, user) == [] and grants_of(web_world, user) == []
    state = user_state(web_world, user)
    assert not state["disabled"] and not state["is_admin"]


def test_the_admin_cannot_disable_themselves_and_the_last_admin_rule_holds(
    web_world: World, browser_for: Open
) -> None:
    admin = browser_for("admin")
    answer = post_on(admin, "/admin/users", "/admin/users/root/disable", {})
    kind, message = flash(answer.text)
    assert kind == "error" and "cannot demote or disable yourself" in message, message
    assert not user_state(web_world, "root")["disabled"]


def test_a_new_token_secret_is_shown_once_and_works(web_world: World, browser_for: Open) -> None:
    user = web_world.fresh("tok")
    web_world.create_user(user)
    admin = browser_for("admin")
    answer = post_on(
        admin, "/admin/tokens", "/admin/tokens/create", {"username": user, "name": "ci"}
    )
    assert answer.headers["cache-control"] == "no-store"
    secret = re.search(r'value="([^"]+)" [^>]*data-testid="token-secret-value"', answer.text)
    assert secret
    whoami = httpx.get(
        f"{web_world.server.url}{MLGATE}/whoami",
        headers={"Authorization": f"Bearer {secret.group(1)}"},
    )
    assert whoami.status_code == 200 and whoami.json()["username"] == user
    again = admin.get(f"/admin/tokens?username={user}")
    assert secret.group(1) not in again.text
    assert 'data-testid="token-secret"' not in again.text
    assert len(rows(element(again.text, "tokens-table"), "token")) == 1
    log = web_world.server.log.read_text(errors="replace")
    assert secret.group(1) not in log


def test_disabling_a_user_signs_them_out_and_enabling_lets_them_back(
    web_world: World, browser_for: Open
) -> None:
    user = web_world.fresh("dis")
    web_world.create_user(user)
    theirs = Browser(web_world.server.url)
    try:
        assert theirs.login(user, PASSWORD).status_code == 303
        admin = browser_for("admin")
        post_on(admin, "/admin/users", f"/admin/users/{user}/disable", {})
        row = rows(element(admin.get("/admin/users").text, "users-table"), "user")
        if user in row:  # the first page may not reach them; the API says the same
            assert "disabled" in text(row[user])
        assert theirs.get("/admin/users", follow=False).status_code == 303  # signed out
        assert theirs.login(user, PASSWORD).status_code != 303
        answer = post_on(admin, "/admin/users", f"/admin/users/{user}/enable", {})
        assert flash(answer.text)[0] == "notice"
        assert theirs.login(user, PASSWORD).status_code == 303
    finally:
        theirs.close()


def test_an_admin_resets_their_own_password_only_with_the_current_one(
    web_world: World, browser_for: Open
) -> None:
    name = web_world.fresh("boss")
    web_world.admin_json(
        "POST",
        f"{MLGATE}/users/create",
        json={"username": name, "password": PASSWORD, "is_admin": True},
    )
    boss = Browser(web_world.server.url)
    try:
        assert boss.login(name, PASSWORD).status_code == 303
        body = {"password": NEW_PASSWORD, "password_again": NEW_PASSWORD}
        refused = post_on(boss, "/admin/users", f"/admin/users/{name}/password", body)
        kind, message = flash(refused.text)
        assert kind == "error" and "current_password" in message, message
        assert web_world.client_for(name, PASSWORD).get(f"{MLGATE}/whoami").status_code == 200
        done = post_on(
            boss,
            "/admin/users",
            f"/admin/users/{name}/password",
            {**body, "current_password": PASSWORD},
        )
        assert done.status_code in (200, 303)
        assert web_world.client_for(name, NEW_PASSWORD).get(f"{MLGATE}/whoami").status_code == 200
    finally:
        boss.close()
