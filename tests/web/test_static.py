"""The UI's static files: the pinned browser libraries are served locally, nothing else is."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from tests.conftest import LiveServer

FRONTEND = Path(__file__).resolve().parents[2] / "gates" / "server" / "web" / "frontend"


def test_the_pinned_chart_library_is_served_from_this_server(live_server: LiveServer) -> None:
    lock = json.loads((FRONTEND / "package-lock.json").read_text())
    pinned = lock["packages"]["node_modules/uplot"]["version"]
    assert json.loads((FRONTEND / "package.json").read_text())["dependencies"]["uplot"] == pinned
    response = httpx.get(f"{live_server.url}/static/vendor/uPlot.iife.min.js")
    assert response.status_code == 200, "run `make assets` (npm ci + copy) before the tests"
    assert "javascript" in response.headers["content-type"]
    assert "uPlot" in response.text[:5000]


def test_static_paths_cannot_leave_the_static_folder(live_server: LiveServer) -> None:
    for path in (
        "/static/../pyproject.toml",
        "/static/%2e%2e/%2e%2e/pyproject.toml",
        "/static/..%2f..%2fpyproject.toml",
        "/static/vendor/../../templates/base.html",
    ):
        response = httpx.get(f"{live_server.url}{path}")
        assert response.status_code in (400, 404), (path, response.status_code)
        assert "[project]" not in response.text
        assert "{% block" not in response.text


def test_pages_never_reference_anything_off_this_server(live_server: LiveServer) -> None:
    page = httpx.get(f"{live_server.url}/login", follow_redirects=True)
    assert page.status_code == 200
    for marker in ("http://", "https://", "//cdn", "unpkg", "jsdelivr"):
        assert f'src="{marker}' not in page.text
        assert f'href="{marker}' not in page.text
