"""Browser tests: Playwright (sync API) driving Debian's Chromium against a live, seeded mlgate.

Playwright never downloads a browser here: it launches ``/usr/bin/chromium`` (``make browser``),
headless. One auth-on server per session on its own database, seeded through the REST API
(``seed.py``); one browser per session, a fresh context (cookies) per signed-in user. Every page
a test visits is watched for console errors and uncaught exceptions, which is how a CSP
violation (an inline script or style the pages' policy blocks) shows up.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from gates.server import migrate
from tests.conftest import BACKEND, REPO_ROOT, LiveServer, start_server, stop_server
from tests.gates.events_support import FAST_WORKER
from tests.gates.webhook_receiver import Receiver
from tests.security.auth_world import ADMIN_PASSWORD, ADMIN_USER, auth_env
from tests.web.browser.seed import PASSWORDS, Seed, seed_world

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = REPO_ROOT / "test-output" / "screenshots" / BACKEND
TIMEOUT_MS = 10_000
# Chromium reports a document answered with an error status as a console error; a test that
# expects such a status (a refused sign-in) says so with ``UI.allow_status``.
FAILED_LOAD = re.compile(r"Failed to load resource: the server responded with a status of (\d+)")


@dataclass
class BrowserServer:
    server: LiveServer
    seed: Seed

    @property
    def url(self) -> str:
        return self.server.url


@pytest.fixture(scope="package")
def browser_server(
    make_database: Callable[[str], str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BrowserServer]:
    """An auth-on server on its own database, seeded through the API, with a local receiver
    for its webhook subscription (so the webhooks page has deliveries to show)."""
    url = make_database("browser")
    migrate.upgrade(url)
    receiver = Receiver().start()
    server = start_server(
        url, tmp_path_factory.mktemp("browser-server"), extra_env={**auth_env(), **FAST_WORKER}
    )
    try:
        seed = seed_world(server.url, ADMIN_USER, ADMIN_PASSWORD, receiver.url)
        yield BrowserServer(server, seed)
    finally:
        stop_server(server)
        receiver.stop()
        text = server.log.read_text(errors="replace")
        if "Traceback" in text:
            print(text[-5000:], file=sys.stderr)


@pytest.fixture(scope="package")
def chromium_installed() -> Path:
    """Fails (never skips) every browser test when Debian's Chromium is not installed."""
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(
            f"{CHROMIUM} is missing: run `make browser` to install Debian's Chromium "
            "(Playwright must not download its own browser).",
            pytrace=False,
        )
    return CHROMIUM


@pytest.fixture(scope="package")
def chromium(chromium_installed: Path, browser_server: BrowserServer) -> Iterator[Any]:
    """Debian's Chromium under Playwright, created in a sync fixture outside any running event
    loop (Playwright's sync API refuses to run inside one). While it runs, its own loop counts
    as the thread's running loop, so everything needing asyncio (the server's migrations) is
    set up before it, and it stops with this package instead of living on into other tests."""
    from playwright.sync_api import sync_playwright

    manager = sync_playwright()
    playwright = manager.start()
    try:
        # launch() gives every browser a fresh temporary user-data dir of its own.
        browser = playwright.chromium.launch(
            executable_path=str(chromium_installed), headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()
    finally:
        playwright.stop()


@dataclass
class UI:
    """One signed-in (or anonymous) browser context with its page and error collector."""

    name: str
    page: Any
    context: Any
    base_url: str
    problems: list[str] = field(default_factory=list)
    allowed_statuses: set[int] = field(default_factory=set)
    checked: bool = False

    def goto(self, path: str) -> Any:
        response = self.page.goto(self.base_url + path)
        self.page.wait_for_load_state("load")
        return response

    def allow_status(self, status: int) -> None:
        self.allowed_statuses.add(status)

    def shot(self, name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def record(self, kind: str, text: str) -> None:
        found = FAILED_LOAD.search(text)
        if found and int(found.group(1)) in self.allowed_statuses:
            return
        self.problems.append(f"[{self.name}] {kind} on {self.page.url}: {text}")

    def assert_no_browser_errors(self) -> None:
        """No console error (CSP violations included) and no uncaught exception so far."""
        self.checked = True
        assert not self.problems, "the browser reported errors:\n" + "\n".join(self.problems)


class Browsers:
    """Opens UIs for a test and closes them after it."""

    def __init__(self, chromium: Any, server: BrowserServer, sessions: dict[str, Any]) -> None:
        self.chromium = chromium
        self.server = server
        self.sessions = sessions
        self.opened: list[UI] = []

    def anonymous(self, name: str = "anonymous", storage_state: Any = None) -> UI:
        context = self.chromium.new_context(
            viewport={"width": 1400, "height": 900}, storage_state=storage_state
        )
        context.set_default_timeout(TIMEOUT_MS)
        page = context.new_page()
        ui = UI(name, page, context, self.server.url)

        def on_console(message: Any) -> None:
            if message.type == "error":
                ui.record("console", message.text)

        page.on("console", on_console)
        page.on("pageerror", lambda exc: ui.record("pageerror", str(exc)))
        self.opened.append(ui)
        return ui

    def signed_in(self, username: str) -> UI:
        """A context signed in as ``username``, on /models. The first time, through the login
        form; later contexts start from that session's cookies (signing in hashes a password,
        which is slow on purpose)."""
        known = self.sessions.get(username)
        ui = self.anonymous(username, storage_state=known)
        if known is None:
            password = ADMIN_PASSWORD if username == ADMIN_USER else PASSWORDS[username]
            sign_in(ui, username, password)
            ui.page.wait_for_url(re.compile(r"/models(\?|$)"))
            self.sessions[username] = ui.context.storage_state()
        else:
            ui.goto("/models")
        assert ui.page.get_by_test_id("current-user").inner_text().startswith(username)
        return ui

    def close(self) -> None:
        for ui in self.opened:
            ui.context.close()


def sign_in(ui: UI, username: str, password: str) -> None:
    ui.goto("/login")
    ui.page.fill("input[name=username]", username)
    ui.page.fill("input[name=password]", password)
    ui.page.click("form[action='/login'] button[type=submit]")
    ui.page.wait_for_load_state("load")


@pytest.fixture(scope="package")
def signed_in_sessions() -> dict[str, Any]:
    """Storage state (session cookie) of each user, once signed in through the form."""
    return {}


@pytest.fixture
def browsers(
    chromium_installed: Path,
    browser_server: BrowserServer,
    chromium: Any,
    signed_in_sessions: dict[str, Any],
) -> Iterator[Browsers]:
    opened = Browsers(chromium, browser_server, signed_in_sessions)
    yield opened
    opened.close()
    unchecked = [p for ui in opened.opened if not ui.checked for p in ui.problems]
    assert not unchecked, "the browser reported errors:\n" + "\n".join(unchecked)


@pytest.fixture
def seed(browser_server: BrowserServer) -> Seed:
    return browser_server.seed
