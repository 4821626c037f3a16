"""Browser and protocol safety on the auth-off embedded default: Host allowlist, JSON-only
mutations, body caps, security headers, CORS off."""

from __future__ import annotations

import json
import socket
from urllib.parse import urlsplit

import httpx
import pytest

from tests.conftest import LiveServer

API = "/api/2.0/mlflow"


def _raw_request(server: LiveServer, request: bytes) -> bytes:
    """Send bytes as they are: HTTP clients fix up the Host header on their own."""
    parts = urlsplit(server.url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize("host", ["evil.example", "attacker.com:5000", "127.0.0.1.nip.io"])
def test_a_foreign_host_header_is_refused(live_server: LiveServer, host: str) -> None:
    """DNS rebinding: a page on evil.example whose name now resolves to 127.0.0.1."""
    r = httpx.get(f"{live_server.url}{API}/experiments/search", headers={"Host": host})
    assert r.status_code == 400
    assert r.json()["error_code"] == "BAD_REQUEST"
    assert r.headers["x-content-type-options"] == "nosniff"


def test_loopback_host_names_are_accepted(live_server: LiveServer) -> None:
    port = urlsplit(live_server.url).port
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost", "LOCALHOST"):
        r = httpx.get(f"{live_server.url}/health", headers={"Host": host})
        assert r.status_code == 200, host


def test_a_request_without_host_is_refused(live_server: LiveServer) -> None:
    # /health and /ready answer any Host (probes address a pod by IP); the rest refuse.
    response = _raw_request(live_server, b"GET /version HTTP/1.0\r\n\r\n")
    assert response.startswith(b"HTTP/1.1 400")


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None],
)
def test_mutations_need_a_json_content_type(
    live_server: LiveServer, content_type: str | None
) -> None:
    """A form or text/plain post is what a cross-site page can send without a preflight."""
    headers = {"Content-Type": content_type} if content_type else {}
    body = json.dumps({"name": "csrf-victim"}).encode()
    r = httpx.post(f"{live_server.url}{API}/experiments/create", content=body, headers=headers)
    assert r.status_code == 415
    assert r.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    got = httpx.get(
        f"{live_server.url}{API}/experiments/get-by-name", params={"experiment_name": "csrf-victim"}
    )
    assert got.status_code == 404


def test_json_with_a_charset_and_empty_bodies_are_fine(live_server: LiveServer) -> None:
    headers = {"Content-Type": "application/json; charset=utf-8"}
    r = httpx.post(f"{live_server.url}{API}/experiments/search", content=b"{}", headers=headers)
    assert r.status_code == 200
    assert httpx.post(f"{live_server.url}{API}/experiments/search").status_code == 200


def test_artifact_uploads_are_raw_bytes_whatever_their_type(live_server: LiveServer) -> None:
    r = httpx.put(
        f"{live_server.url}/api/2.0/mlflow-artifacts/artifacts/0/raw/artifacts/a.txt",
        content=b"text",
        headers={"Content-Type": "text/plain"},
    )
    assert r.status_code == 200


def test_oversized_json_is_413(live_server: LiveServer) -> None:
    body = json.dumps({"name": "x" * (1024 * 1024 + 10)}).encode()
    r = httpx.post(
        f"{live_server.url}{API}/experiments/create",
        content=body,
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 413
    assert r.json()["error_code"] == "REQUEST_LIMIT_EXCEEDED"


def test_a_full_log_batch_fits_its_larger_cap(live_server: LiveServer) -> None:
    """100 params of 6000 characters and 100 tags of 8000 are legal and about 1.4 MB."""
    exp = httpx.post(
        f"{live_server.url}{API}/experiments/create", json={"name": "big-batch"}
    ).json()
    run = httpx.post(
        f"{live_server.url}{API}/runs/create", json={"experiment_id": exp["experiment_id"]}
    ).json()["run"]["info"]["run_id"]
    body = {
        "run_id": run,
        "params": [{"key": f"p{i}", "value": "v" * 6000} for i in range(100)],
        "tags": [{"key": f"t{i}", "value": "t" * 8000} for i in range(100)],
    }
    assert len(json.dumps(body)) > 1024 * 1024
    r = httpx.post(f"{live_server.url}{API}/runs/log-batch", json=body, timeout=60)
    assert r.status_code == 200, r.text


def test_security_headers_are_on_every_response(live_server: LiveServer) -> None:
    for r in (
        httpx.get(f"{live_server.url}/health"),
        httpx.get(f"{live_server.url}{API}/experiments/get", params={"experiment_id": "0"}),
        httpx.get(f"{live_server.url}{API}/no-such-route"),
        httpx.post(f"{live_server.url}{API}/experiments/create", content=b"x"),
    ):
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["referrer-policy"] == "no-referrer"
        assert "default-src 'none'" in r.headers["content-security-policy"]


def test_cors_is_off_by_default(live_server: LiveServer) -> None:
    origin = {"Origin": "https://evil.example"}
    r = httpx.get(f"{live_server.url}{API}/experiments/search", headers=origin)
    assert "access-control-allow-origin" not in r.headers
    preflight = httpx.options(
        f"{live_server.url}{API}/experiments/create",
        headers={**origin, "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in preflight.headers


def test_cors_allows_only_the_configured_origins(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from tests.conftest import start_server, stop_server

    server = start_server(
        database_url,
        tmp_path_factory.mktemp("cors"),
        extra_env={"MLGATE_CORS_ORIGINS": "https://app.example,https://ops.example"},
    )
    try:
        for origin in ("https://app.example", "https://ops.example"):
            preflight = httpx.options(
                f"{server.url}{API}/experiments/create",
                headers={
                    "Origin": origin,
                    "Access-Control-Request-Method": "POST",
                    "Access-Control-Request-Headers": "content-type,authorization",
                },
            )
            assert preflight.status_code in (200, 204), preflight.text
            assert preflight.headers["access-control-allow-origin"] == origin
            allowed = preflight.headers["access-control-allow-headers"].lower()
            assert "authorization" in allowed and "content-type" in allowed
            assert "access-control-allow-credentials" not in preflight.headers
            r = httpx.get(f"{server.url}{API}/experiments/search", headers={"Origin": origin})
            assert r.headers["access-control-allow-origin"] == origin
        for stranger in ("https://evil.example", "https://app.example.evil.example", "null"):
            r = httpx.get(f"{server.url}{API}/experiments/search", headers={"Origin": stranger})
            assert r.headers.get("access-control-allow-origin") not in (stranger, "*")
            preflight = httpx.options(
                f"{server.url}{API}/experiments/create",
                headers={"Origin": stranger, "Access-Control-Request-Method": "POST"},
            )
            assert preflight.headers.get("access-control-allow-origin") not in (stranger, "*")
    finally:
        stop_server(server)


def test_identity_endpoints_answer_without_auth(live_server: LiveServer) -> None:
    """With auth off there is no principal: whoami says so."""
    me = httpx.get(f"{live_server.url}/api/2.0/mlgate/whoami").json()
    assert me == {
        "username": "anonymous",
        "is_admin": True,
        "auth_enabled": False,
        "authenticated_by": "none",
        "grants": [],
    }


def test_options_lists_every_method_of_a_path(live_server: LiveServer) -> None:
    """Litestar's generated OPTIONS answer only knew the path's first-registered method."""
    r = httpx.options(f"{live_server.url}{API}/experiments/search")
    assert r.status_code == 204
    assert r.headers["allow"] == "GET, OPTIONS, POST"
