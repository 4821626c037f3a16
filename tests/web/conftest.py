"""Fixtures of the web UI tests: the auth-on server and its world (shared with the security
tests' helpers), and signed-in browsers for each principal level."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator

import pytest

from gates.server import migrate
from tests.conftest import LiveServer, stop_server
from tests.security.auth_world import (
    ADMIN_PASSWORD,
    ADMIN_USER,
    PASSWORD,
    World,
    build_world,
    start_auth_server,
)
from tests.web.support import Browser


@pytest.fixture(scope="session")
def web_server(make_database, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:  # type: ignore[no-untyped-def]
    """A live server with MLGATE_AUTH=true on its own database, for the UI tests."""
    url = make_database("web")
    migrate.upgrade(url)
    server = start_auth_server(url, tmp_path_factory.mktemp("web-server"))
    yield server
    stop_server(server)
    text = server.log.read_text(errors="replace")
    if "Traceback" in text:
        print(text[-5000:], file=sys.stderr)


@pytest.fixture(scope="session")
def web_world(web_server: LiveServer) -> Iterator[World]:
    built = build_world(web_server)
    yield built
    built.close()


@pytest.fixture
def browser_for(web_world: World) -> Iterator[Callable[[str], Browser]]:
    """``browser_for("approver")``: a Browser signed in as that level of the world."""
    opened: list[Browser] = []

    def make(level: str) -> Browser:
        browser = Browser(web_world.server.url)
        opened.append(browser)
        if level == "anonymous":
            return browser
        if level == "admin":
            response = browser.login(ADMIN_USER, ADMIN_PASSWORD)
        else:
            response = browser.login(f"{level}-{web_world.u}", PASSWORD)
        assert response.status_code == 303, response.text[:500]
        assert "mlgate_session" in browser.cookies
        return browser

    yield make
    for browser in opened:
        browser.close()
