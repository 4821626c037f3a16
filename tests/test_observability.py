"""Observability against live servers: /metrics across two workers, /ready, JSON access lines
with request ids, and no secret in any log line."""

from __future__ import annotations

import base64
import contextlib
import json
import re
import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from gates.server import migrate
from tests.conftest import BACKEND, LiveServer, free_port, start_server, stop_server
from tests.gates.factories import signed
from tests.gates.webhook_receiver import wait_until
from tests.security.auth_world import (
    ADMIN_PASSWORD,
    ADMIN_USER,
    API,
    MLGATE,
    PASSWORD,
    GatesWorld,
    World,
    auth_env,
    build_gates_world,
    build_world,
)
from tests.web.support import Browser

pytestmark = pytest.mark.slow

METRICS_TOKEN = f"metrics-token-{uuid.uuid4().hex}"
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})? (\S+)$")


def parse_metrics(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        found = SAMPLE.match(line)
        assert found, line
        name, labels, value = found.groups()
        pairs = frozenset(re.findall(r'(\w+)="([^"]*)"', labels or ""))
        samples[(name, pairs)] = float(value)
    return samples


def sample(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def log_lines(server: LiveServer) -> list[dict[str, Any]]:
    out = []
    for line in server.log.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


@dataclass
class Observed:
    server: LiveServer
    world: World
    gates: GatesWorld
    secrets: dict[str, str] = field(default_factory=dict)
    subscription_id: str = ""
    own_decisions: int = 0

    def scrape(self) -> str:
        # A new connection per scrape, so scrapes land on either worker.
        r = httpx.get(
            f"{self.server.url}/metrics",
            headers={"Authorization": f"Bearer {METRICS_TOKEN}", "Connection": "close"},
            timeout=30,
        )
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("text/plain")
        return r.text


@pytest.fixture(scope="module")
def observed(make_database: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Observed]:
    """An auth-on server with two workers over its own database, a gates world, a token, a
    browser login, a gate secret in use and a subscription whose receiver is down."""
    url: str = make_database("observe")
    migrate.upgrade(url)
    server = start_server(
        url,
        tmp_path_factory.mktemp("observe"),
        workers=2,
        extra_env={
            **auth_env(),
            "MLGATE_METRICS_TOKEN": METRICS_TOKEN,
            "MLGATE_WEBHOOK_ALLOWLIST": "127.0.0.1/32",
            "MLGATE_WEBHOOK_POLL_INTERVAL": "0.1",
        },
    )
    world = build_world(server)
    gates = build_gates_world(world)
    obs = Observed(server, world, gates)
    obs.secrets["admin password"] = ADMIN_PASSWORD
    obs.secrets["user password"] = PASSWORD
    # Basic credentials travel base64-encoded: a logged header would show them in this form.
    obs.secrets["admin basic credentials"] = base64.b64encode(
        f"{ADMIN_USER}:{ADMIN_PASSWORD}".encode()
    ).decode()
    # A failed Basic login (a wrong password is a secret too).
    wrong = f"wrong-{uuid.uuid4().hex}"
    obs.secrets["wrong password"] = wrong
    assert httpx.get(f"{server.url}{MLGATE}/whoami", auth=(ADMIN_USER, wrong)).status_code == 401
    # An API token: its creation answer, then use as a bearer.
    token = world.admin_json("POST", f"{MLGATE}/tokens/create", json={"name": "obs"})["secret"]
    obs.secrets["api token"] = token
    r = httpx.get(f"{server.url}{MLGATE}/whoami", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    # A browser login form post, and the session cookie it gets.
    browser = Browser(server.url)
    login = browser.login(ADMIN_USER, ADMIN_PASSWORD)
    assert login.status_code in (302, 303), login.text
    for name, value in browser.cookies.items():
        obs.secrets[f"cookie {name}"] = value
    assert browser.get("/").status_code == 200
    browser.close()
    # A gate secret (whsec_...) used to sign a promotion.
    model = world.model_name_for("obs")
    world.admin_json("POST", f"{API}/registered-models/create", json={"name": model})
    version = world.new_version(model, world.run_id)
    gate = world.fresh("obs-gate")
    world.admin_json(
        "POST",
        f"{MLGATE}/gates/create",
        json={"name": gate, "model": model, "target": "Staging", "require_finished": False},
    )
    gate_secret = world.admin_json("POST", f"{MLGATE}/gates/secrets/add", json={"gate": gate})[
        "secret"
    ]["secret"]
    assert gate_secret.startswith("whsec_")
    obs.secrets["gate secret"] = gate_secret
    obs.secrets["gate secret body"] = gate_secret.removeprefix("whsec_")
    raw = msgspec.json.encode(
        {"model": model, "version": version, "target": "Staging", "idempotency_key": gate}
    )
    r = httpx.post(
        f"{server.url}{MLGATE}/gates/promote",
        content=raw,
        headers={**signed(gate_secret, raw), "content-type": "application/json"},
        timeout=60,
    )
    assert r.status_code in (200, 202), r.text
    obs.own_decisions = 1
    # A subscription whose receiver is down: its deliveries stay open (the backlog).
    dead = f"http://127.0.0.1:{free_port()}/hook"
    answer = world.admin_json(
        "POST",
        f"{MLGATE}/subscriptions",
        json={"name": "obs", "url": dead, "events": ["model_version.created"]},
    )
    obs.subscription_id = answer["subscription"]["id"]
    obs.secrets["subscription secret"] = answer["secret"]
    obs.secrets["subscription secret body"] = answer["secret"].removeprefix("whsec_")
    world.new_version(model, world.run_id)
    world.new_version(model, world.run_id)
    yield obs
    world.close()
    stop_server(server)


def test_metrics_need_the_metrics_token_when_auth_is_on(observed: Observed) -> None:
    url = f"{observed.server.url}/metrics"
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, auth=(ADMIN_USER, ADMIN_PASSWORD)).status_code == 401
    wrong = httpx.get(url, headers={"Authorization": "Bearer not-the-token"})
    assert wrong.status_code == 401 and wrong.json()["error_code"] == "UNAUTHENTICATED"
    assert "mlgate_http_requests_total" in observed.scrape()


def test_metrics_count_every_workers_requests_by_route_template(observed: Observed) -> None:
    route = f"{API}/experiments/get"
    before = parse_metrics(observed.scrape())
    base = sample(before, "mlgate_http_requests_total", route=route, method="GET", status="200")
    base_404 = sample(
        before, "mlgate_http_requests_total", route="<unmatched>", method="GET", status="404"
    )
    probe = f"probe-{uuid.uuid4().hex[:8]}"
    rids = []
    for i in range(30):
        rid = f"{probe}-{i}"
        rids.append(rid)
        r = observed.world.admin.get(
            route,
            params={"experiment_id": observed.world.experiment_id},
            headers={"X-Request-Id": rid, "Connection": "close"},
        )
        assert r.status_code == 200
    for i in range(5):
        r = httpx.get(f"{observed.server.url}/no-such-{probe}-{i}", headers={"Connection": "close"})
        assert r.status_code == 404
    # Both workers answered some of them (the access lines name their process) ...
    pids = {
        line["pid"]
        for line in log_lines(observed.server)
        if str(line.get("request_id", "")).startswith(probe)
    }
    assert len(pids) == 2, pids
    # ... and every scrape, whichever worker answers it, counts all of them.
    for _ in range(6):
        text = observed.scrape()
        assert probe not in text  # raw paths never become label values
        after = parse_metrics(text)
        got = sample(after, "mlgate_http_requests_total", route=route, method="GET", status="200")
        assert got == base + 30
        unmatched = sample(
            after, "mlgate_http_requests_total", route="<unmatched>", method="GET", status="404"
        )
        assert unmatched == base_404 + 5
        assert (
            sample(after, "mlgate_http_request_duration_seconds_count", route=route, method="GET")
            == base + 30
        )
        assert ("mlgate_db_pool_connections_in_use", frozenset()) in after


def test_database_gauges_show_decisions_open_approvals_and_the_outbox_backlog(
    observed: Observed,
) -> None:
    deliveries_url = f"{MLGATE}/deliveries"

    def open_deliveries() -> list[dict[str, Any]] | None:
        found = observed.world.admin_json(
            "GET",
            deliveries_url,
            params={"subscription_id": observed.subscription_id, "max_results": 1000},
        )["deliveries"]
        # Wait until the worker has tried (and failed) at least one.
        return found if found and any(d["status"] == "failed" for d in found) else None

    found = wait_until(open_deliveries, what="a failed delivery")
    assert all(d["status"] in ("pending", "failed") for d in found)
    samples = parse_metrics(observed.scrape())
    assert sample(samples, "mlgate_database_up") == 1
    assert sample(samples, "mlgate_webhook_outbox_backlog") == len(found)
    assert sample(samples, "mlgate_webhook_outbox_oldest_pending_age_seconds") > 0
    assert sample(samples, "mlgate_webhook_deliveries", outcome="failed") >= 1
    pending_requests = len(observed.gates.requests)
    assert sample(samples, "mlgate_approval_requests_open") == pending_requests
    assert sample(samples, "mlgate_gate_decisions", outcome="pending_approval") == pending_requests
    total = sum(v for (name, _), v in samples.items() if name == "mlgate_gate_decisions")
    assert total == len(observed.gates.decisions) + observed.own_decisions


def test_access_lines_are_json_with_route_template_principal_status_and_request_id(
    observed: Observed,
) -> None:
    rid = f"obs-{uuid.uuid4().hex}"
    r = observed.world.admin.get(
        f"{API}/registered-models/get",
        params={"name": f"missing-{rid}"},
        headers={"X-Request-Id": rid},
    )
    assert r.status_code == 404 and r.headers["x-request-id"] == rid
    line = wait_until(
        lambda: next((x for x in log_lines(observed.server) if x.get("request_id") == rid), None),
        what="the access line",
    )
    assert line["logger"] == "mlgate.access"
    assert line["method"] == "GET"
    assert line["route"] == f"{API}/registered-models/get"
    assert line["status"] == 404
    assert line["principal"] == ADMIN_USER
    assert isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0
    assert f"missing-{rid}" not in json.dumps(line)
    # A promotion signed with a gate secret names that gate secret (verified, not claimed).
    promotions = [
        x
        for x in log_lines(observed.server)
        if x.get("route") == f"{MLGATE}/gates/promote" and x.get("status") in (200, 202)
    ]
    assert promotions and all(x["principal"].startswith("gate:") for x in promotions), promotions
    # A malformed or oversized id is replaced by a fresh one, never echoed.
    for bad in ("has space", "x" * 200, "semi;colon"):
        r = httpx.get(f"{observed.server.url}/health", headers={"X-Request-Id": bad})
        assert re.fullmatch(r"[0-9a-f]{32}", r.headers["x-request-id"]), bad
    # With none sent, one is made.
    fresh = httpx.get(f"{observed.server.url}/health").headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", fresh)


def test_no_password_token_or_secret_appears_in_any_log_line(observed: Observed) -> None:
    text = observed.server.log.read_text(errors="replace")
    lines = log_lines(observed.server)
    # The log really holds the traffic that carried the secrets.
    routes = {x.get("route") for x in lines if x.get("logger") == "mlgate.access"}
    assert {f"{MLGATE}/tokens/create", "/login", f"{MLGATE}/gates/promote"} <= routes, routes
    assert len(observed.secrets) >= 10
    for what, secret in observed.secrets.items():
        assert secret and secret not in text, f"the {what} appears in the server log"


def test_ready_is_public_and_reports_every_check(observed: Observed) -> None:
    r = httpx.get(f"{observed.server.url}/ready")
    assert r.status_code == 200, r.text
    assert r.json() == {
        "status": "ready",
        "checks": {"database": "ok", "schema": "ok", "artifacts": "ok"},
    }
    assert httpx.get(f"{observed.server.url}/health").text == "OK"


def _ready_failure(server: LiveServer) -> dict[str, Any]:
    r = httpx.get(f"{server.url}/ready", timeout=30)
    assert r.status_code == 503, r.text
    body: dict[str, Any] = r.json()
    assert body["error_code"] == "TEMPORARILY_UNAVAILABLE"
    assert httpx.get(f"{server.url}/health").status_code == 200
    return body


def test_ready_answers_503_naming_the_schema_when_it_is_behind_head(
    make_database: Any, tmp_path: Path
) -> None:
    url: str = make_database("behind")
    migrate.upgrade(url, "0010")
    server = start_server(
        url,
        tmp_path,
        extra_env={
            "MLGATE_DB_AUTO_UPGRADE": "false",
            "MLGATE_WEBHOOK_WORKER": "false",
            "MLGATE_APPROVAL_SWEEP_INTERVAL": "0",
            "MLGATE_AUDIT_CHECKPOINT_INTERVAL": "0",
        },
    )
    try:
        body = _ready_failure(server)
        assert body["checks"]["database"] == "ok"
        assert body["checks"]["schema"].startswith("at 0010, head is")
        assert "schema" in body["message"] and body["checks"]["artifacts"] == "ok"
        migrate.upgrade(url)
        assert httpx.get(f"{server.url}/ready").status_code == 200
    finally:
        stop_server(server)


def test_ready_answers_503_naming_the_artifact_store_when_it_is_unreachable(
    database_url: str, tmp_path: Path
) -> None:
    server = start_server(
        database_url,
        tmp_path,
        extra_env={
            "MLGATE_ARTIFACTS_DESTINATION": f"s3://obs-{uuid.uuid4().hex[:8]}/prefix",
            # Nothing listens there.
            "MLGATE_S3_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "secret-key-that-must-not-leak",
            "AWS_DEFAULT_REGION": "us-east-1",
            "MLGATE_STAGING_SWEEP_INTERVAL": "0",
            "MLGATE_AUDIT_CHECKPOINT_INTERVAL": "0",
        },
    )
    try:
        body = _ready_failure(server)
        assert body["checks"]["database"] == "ok" and body["checks"]["schema"] == "ok"
        assert body["checks"]["artifacts"] != "ok"
        assert "artifacts" in body["message"]
        assert "secret-key-that-must-not-leak" not in json.dumps(body)
    finally:
        stop_server(server)
    assert "secret-key-that-must-not-leak" not in server.log.read_text()


class TcpProxy:
    """A loopback TCP relay the test can cut: every connection through it dies at close()."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.closed = True
        # A close alone leaves a thread blocked in accept() holding the socket open (still
        # listening); shutdown wakes it and stops the listening for good.
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        for s in self.sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
                s.close()
            except OSError:
                pass


@pytest.mark.skipif(BACKEND != "postgres", reason="a TCP proxy stands between mlgate and PG")
def test_ready_answers_503_naming_the_database_when_it_goes_away(
    database_url: str, tmp_path: Path
) -> None:
    proxy = TcpProxy(5432)
    proxied = re.sub(r"@([^/:]+)(:\d+)?/", f"@127.0.0.1:{proxy.port}/", database_url, count=1)
    assert proxied != database_url
    server = start_server(
        proxied,
        tmp_path,
        extra_env={
            "MLGATE_DB_AUTO_UPGRADE": "false",
            "MLGATE_WEBHOOK_WORKER": "false",
            "MLGATE_APPROVAL_SWEEP_INTERVAL": "0",
            "MLGATE_AUDIT_CHECKPOINT_INTERVAL": "0",
        },
    )
    try:
        assert httpx.get(f"{server.url}/ready").status_code == 200
        proxy.close()
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", proxy.port), timeout=2).close()
        body = _ready_failure(server)
        assert body["checks"]["database"] != "ok" and "database" in body["message"]
        assert body["checks"]["artifacts"] == "ok"
        assert str(proxy.port) not in json.dumps(body) and "postgres" not in json.dumps(body)
        metrics = parse_metrics(httpx.get(f"{server.url}/metrics", timeout=30).text)
        assert sample(metrics, "mlgate_database_up") == 0
    finally:
        stop_server(server)
        proxy.close()


def test_access_log_can_be_turned_off_and_logs_can_be_text(
    database_url: str, tmp_path: Path
) -> None:
    server = start_server(
        database_url,
        tmp_path,
        extra_env={"MLGATE_ACCESS_LOG": "false", "MLGATE_LOG_LEVEL": "info"},
    )
    try:
        rid = f"off-{uuid.uuid4().hex}"
        assert httpx.get(f"{server.url}/ready", headers={"X-Request-Id": rid}).status_code == 200
        assert httpx.get(f"{server.url}/version").headers["x-request-id"]
    finally:
        stop_server(server)
    text = server.log.read_text()
    assert rid not in text and '"mlgate.access"' not in text
    assert '"logger": "uvicorn.error"' in text  # the other lines are still JSON
    (tmp_path / "text").mkdir()
    text_server = start_server(
        database_url, tmp_path / "text", extra_env={"MLGATE_LOG_FORMAT": "text"}
    )
    try:
        rid = f"text-{uuid.uuid4().hex}"
        httpx.get(f"{text_server.url}/ready", headers={"X-Request-Id": rid})
    finally:
        stop_server(text_server)
    line = next(x for x in text_server.log.read_text().splitlines() if rid in x)
    assert not line.startswith("{") and "mlgate.access" in line and "GET /ready 200" in line


def test_a_subscriber_urls_path_and_query_never_reach_the_log(
    make_database: Any, tmp_path: Path
) -> None:
    # Chat and incident webhooks carry their credential in the URL itself.
    path_secret = f"T0{uuid.uuid4().hex}"
    query_secret = f"q{uuid.uuid4().hex}"
    # Its own database: the shared one holds other tests' subscriptions, whose slow or dead
    # receivers this server's delivery worker would otherwise serve first.
    url: str = make_database("subscriber-url")
    migrate.upgrade(url)
    server = start_server(
        url,
        tmp_path,
        extra_env={
            "MLGATE_WEBHOOK_ALLOWLIST": "127.0.0.1/32",
            "MLGATE_WEBHOOK_POLL_INTERVAL": "0.05",
            "MLGATE_WEBHOOK_RETRY_SCHEDULE": "50ms",
        },
    )
    try:
        dead = f"http://127.0.0.1:{free_port()}/services/{path_secret}?token={query_secret}"
        answer = httpx.post(
            f"{server.url}{MLGATE}/subscriptions",
            json={"name": "leaky", "url": dead, "events": ["registered_model.created"]},
        )
        assert answer.status_code == 200, answer.text
        subscription = answer.json()["subscription"]["id"]
        model = f"obs-url-{uuid.uuid4().hex[:8]}"
        r = httpx.post(f"{server.url}{API}/registered-models/create", json={"name": model})
        assert r.status_code == 200, r.text

        def dead_delivery() -> bool:
            found = httpx.get(
                f"{server.url}{MLGATE}/deliveries", params={"subscription_id": subscription}
            ).json()["deliveries"]
            return bool(found) and found[0]["status"] == "dead"

        wait_until(dead_delivery, what="a dead delivery")
    finally:
        stop_server(server)
    text = server.log.read_text()
    assert "webhook delivery" in text  # the failures were logged ...
    assert path_secret not in text and query_secret not in text  # ... without the URL's secrets


def test_probes_and_the_token_protected_metrics_answer_whatever_the_host(
    observed: Observed,
) -> None:
    # A kubelet probe or a Prometheus scrape addresses the pod by its IP.
    pod = {"Host": "10.1.2.3:5000"}
    assert httpx.get(f"{observed.server.url}/health", headers=pod).status_code == 200
    assert httpx.get(f"{observed.server.url}/ready", headers=pod).status_code == 200
    scrape = httpx.get(
        f"{observed.server.url}/metrics",
        headers={**pod, "Authorization": f"Bearer {METRICS_TOKEN}"},
    )
    assert scrape.status_code == 200
    # Everything else still refuses a Host that is not this server.
    refused = observed.world.admin.get(f"{API}/experiments/search", headers=pod)
    assert refused.status_code == 400
    assert httpx.get(f"{observed.server.url}/version", headers=pod).status_code == 400
