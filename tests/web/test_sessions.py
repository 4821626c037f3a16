"""Signing in to the web UI: cookies, CSRF, logout, throttling, and what a cookie may not do."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from tests.security.auth_world import PASSWORD, World
from tests.web.support import Browser, csrf_of


def test_login_sets_a_secure_httponly_session_cookie(browser_for: Callable[[str], Browser]) -> None:
    browser = browser_for("reader")
    session_headers = [h for h in browser.set_cookie_headers if h.startswith("mlgate_session=")]
    assert session_headers, browser.set_cookie_headers
    header = session_headers[-1].lower()
    assert "httponly" in header
    assert "secure" in header
    assert "samesite=lax" in header
    # Signed in, the login page sends the user on to where they were going.
    response = browser.get("/login?next=/experiments", follow=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/experiments"


def test_wrong_password_shows_the_form_again_with_an_error(web_world: World) -> None:
    browser = Browser(web_world.server.url)
    page = browser.get("/login")
    response = browser.post_form(
        "/login",
        {"username": f"reader-{web_world.u}", "password": "not-the-password"},
        csrf=csrf_of(page.text),
    )
    assert response.status_code == 401
    assert "Wrong user name or password" in response.text
    assert "mlgate_session" not in browser.cookies
    browser.close()


def test_login_without_the_csrf_token_is_refused(web_world: World) -> None:
    browser = Browser(web_world.server.url)
    browser.get("/login")
    response = browser.post_form(
        "/login", {"username": f"reader-{web_world.u}", "password": PASSWORD}, csrf="forged"
    )
    assert response.status_code == 403
    assert "security token" in response.text
    assert "mlgate_session" not in browser.cookies
    browser.close()


def test_a_form_posted_from_another_origin_is_refused(web_world: World) -> None:
    browser = Browser(web_world.server.url)
    page = browser.get("/login")
    response = browser.post_form(
        "/login",
        {"username": f"reader-{web_world.u}", "password": PASSWORD},
        csrf=csrf_of(page.text),
        headers={"Origin": "https://evil.example"},
    )
    assert response.status_code == 403
    assert "mlgate_session" not in browser.cookies
    browser.close()


def test_logout_ends_the_session_on_the_server(browser_for: Callable[[str], Browser]) -> None:
    browser = browser_for("reader")
    stolen = browser.cookies["mlgate_session"]
    page = browser.get("/login?next=/", follow=True)
    response = browser.post_form("/logout", {}, csrf=csrf_of(page.text), follow=False)
    assert response.status_code == 303
    assert "mlgate_session" not in browser.cookies
    # Replaying the old cookie no longer signs anyone in.
    replay = httpx.get(
        f"{browser.base_url}/login?next=/x",
        headers={"Cookie": f"mlgate_session={stolen}"},
        follow_redirects=False,
    )
    assert replay.status_code == 200
    assert 'name="password"' in replay.text


def test_logout_needs_the_sessions_csrf_token(browser_for: Callable[[str], Browser]) -> None:
    browser = browser_for("reader")
    response = browser.post_form("/logout", {}, csrf="not-the-token", follow=False)
    assert response.status_code == 403
    assert browser.get("/login?next=/x", follow=False).status_code == 303  # still signed in


def test_a_session_cookie_does_not_authenticate_the_json_api(
    browser_for: Callable[[str], Browser],
) -> None:
    browser = browser_for("admin")
    response = browser.get("/api/2.0/mlflow/experiments/search?max_results=1")
    assert response.status_code == 401
    assert response.json()["error_code"] == "UNAUTHENTICATED"


def test_login_redirects_only_to_paths_on_this_server(web_world: World) -> None:
    browser = Browser(web_world.server.url)
    page = browser.get("/login")
    response = browser.post_form(
        "/login",
        {
            "username": f"reader-{web_world.u}",
            "password": PASSWORD,
            "next": "//evil.example/steal",
        },
        csrf=csrf_of(page.text),
        follow=False,
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/"
    browser.close()


def test_a_disabled_users_session_stops_working(web_world: World) -> None:
    name = web_world.fresh("leaver")
    web_world.create_user(name)
    browser = Browser(web_world.server.url)
    assert browser.login(name, PASSWORD).status_code == 303
    assert browser.get("/login?next=/x", follow=False).status_code == 303
    web_world.admin_json(
        "PATCH", "/api/2.0/mlgate/users/update", json={"username": name, "disabled": True}
    )
    assert browser.get("/login?next=/x", follow=False).status_code == 200
    browser.close()


def test_re_enabling_a_user_does_not_revive_sessions_from_before_the_disable(
    web_world: World,
) -> None:
    name = web_world.fresh("returner")
    web_world.create_user(name)
    browser = Browser(web_world.server.url)
    assert browser.login(name, PASSWORD).status_code == 303
    old_cookie = browser.cookies["mlgate_session"]
    for disabled in (True, False):
        web_world.admin_json(
            "PATCH", "/api/2.0/mlgate/users/update", json={"username": name, "disabled": disabled}
        )
    # The cookie from before the disable signs nobody in, even though the user is back.
    replay = httpx.get(
        f"{web_world.server.url}/login?next=/x",
        headers={"Cookie": f"mlgate_session={old_cookie}"},
        follow_redirects=False,
    )
    assert replay.status_code == 200
    assert browser.get("/login?next=/x", follow=False).status_code == 200
    # Signing in again after the re-enable works.
    fresh = Browser(web_world.server.url)
    assert fresh.login(name, PASSWORD).status_code == 303
    assert fresh.get("/login?next=/x", follow=False).status_code == 303
    fresh.close()
    browser.close()


def test_pages_carry_a_strict_content_security_policy(web_world: World) -> None:
    response = httpx.get(f"{web_world.server.url}/login")
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "unsafe-inline" not in policy
    assert "frame-ancestors 'none'" in policy


def test_a_crafted_link_cannot_make_a_page_show_a_message(
    browser_for: Callable[[str], Browser],
) -> None:
    browser = browser_for("reader")
    page = browser.get("/approvals?error=Your+session+expired,+sign+in+at+evil.example")
    assert page.status_code == 200
    assert "evil.example" not in page.text
    # A forged flash cookie that is not one of ours is ignored too.
    browser.cookies["mlgate_flash"] = "not-base64-json"
    assert browser.get("/approvals").status_code == 200


def test_a_password_change_signs_every_browser_out(web_world: World) -> None:
    name = web_world.fresh("rotator")
    web_world.create_user(name)
    browser = Browser(web_world.server.url)
    assert browser.login(name, PASSWORD).status_code == 303
    assert browser.get("/login?next=/x", follow=False).status_code == 303  # signed in
    web_world.admin_json(
        "PATCH",
        "/api/2.0/mlgate/users/update",
        json={"username": name, "password": "another-long-password"},
    )
    assert browser.get("/login?next=/x", follow=False).status_code == 200  # signed out
    browser.close()


def test_behind_a_trusted_tls_proxy_forms_work_and_throttling_sees_the_client(
    make_database,
    tmp_path_factory,  # type: ignore[no-untyped-def]
) -> None:
    from gates.server import migrate
    from tests.conftest import start_server, stop_server
    from tests.security.auth_world import ADMIN_PASSWORD, ADMIN_USER, auth_env

    url = make_database("proxied")
    migrate.upgrade(url)
    server = start_server(
        url,
        tmp_path_factory.mktemp("proxied"),
        extra_env={
            **auth_env(),
            "MLGATE_FORWARDED_ALLOW_IPS": "127.0.0.1",
            "MLGATE_LOGIN_MAX_FAILURES": "2",
        },
    )
    host = server.url.removeprefix("http://")
    public = f"https://{host}"
    try:

        def via_proxy(client_ip: str) -> dict[str, str]:
            return {"X-Forwarded-Proto": "https", "X-Forwarded-For": client_ip}

        browser = Browser(server.url)
        page = browser.get("/login", headers=via_proxy("203.0.113.7"))
        # The browser sees https://host and says so in Origin: accepted, as the proxy vouches.
        signed_in = browser.post_form(
            "/login",
            {"username": ADMIN_USER, "password": ADMIN_PASSWORD},
            csrf=csrf_of(page.text),
            follow=False,
            headers={**via_proxy("203.0.113.7"), "Origin": public},
        )
        assert signed_in.status_code == 303, signed_in.text[:300]
        browser.close()
        # Failed logins are counted per real client: one client locked out, another not.
        browser = Browser(server.url)
        page = browser.get("/login", headers=via_proxy("198.51.100.1"))
        for _ in range(2):
            browser.post_form(
                "/login",
                {"username": ADMIN_USER, "password": "wrong-password-here"},
                csrf=csrf_of(page.text),
                follow=False,
                headers={**via_proxy("198.51.100.1"), "Origin": public},
            )
        locked = browser.post_form(
            "/login",
            {"username": ADMIN_USER, "password": ADMIN_PASSWORD},
            csrf=csrf_of(page.text),
            follow=False,
            headers={**via_proxy("198.51.100.1"), "Origin": public},
        )
        assert locked.status_code == 429
        other = browser.post_form(
            "/login",
            {"username": ADMIN_USER, "password": ADMIN_PASSWORD},
            csrf=csrf_of(page.text),
            follow=False,
            headers={**via_proxy("198.51.100.2"), "Origin": public},
        )
        assert other.status_code == 303
        browser.close()
    finally:
        stop_server(server)
