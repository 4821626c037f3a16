"""CI identity by OIDC against a live server with auth on: a local issuer signs GitHub-shaped
tokens; the gate trusts it for one repository and ref. Valid tokens promote as the verified
subject; every forged, stale or misdirected token is refused and nothing moves; key rotation
is followed and a dropped key stops verifying."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import msgspec
import pytest

from gates.server import migrate
from tests.conftest import LiveServer, start_server, stop_server
from tests.gates.factories import signed
from tests.gates.oidc_issuer import LocalIssuer, new_key
from tests.security.auth_world import ADMIN_PASSWORD, ADMIN_USER, PASSWORD, auth_env

pytestmark = pytest.mark.compat
API = "/api/2.0/mlflow"
MLGATE = "/api/2.0/mlgate"
AUDIENCE = "https://mlgate.example.test"
RULES = {"repository": ["octo/fraud"], "ref": ["refs/heads/main", "refs/tags/v*"]}


@pytest.fixture(scope="module")
def server(make_database: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    url = make_database("gates_oidc")
    migrate.upgrade(url)
    env = auth_env() | {
        "MLGATE_OIDC_ALLOW_HTTP_LOOPBACK": "true",
        # A token naming an unknown key refetches the key set at most once a second.
        "MLGATE_OIDC_JWKS_REFETCH_INTERVAL": "1",
    }
    live = start_server(url, tmp_path_factory.mktemp("gates-oidc"), extra_env=env)
    yield live
    stop_server(live)
    text = live.log.read_text(errors="replace")
    assert "Traceback" not in text, text[-5000:]


@pytest.fixture
def issuer() -> Iterator[LocalIssuer]:
    local = LocalIssuer()
    yield local
    local.close()


def _admin(server: LiveServer) -> httpx.Client:
    return httpx.Client(base_url=server.url, auth=(ADMIN_USER, ADMIN_PASSWORD), timeout=60)


def _ok(response: httpx.Response) -> Any:
    assert response.status_code == 200, (response.request.url, response.text)
    return response.json()


def _finished_run(admin: httpx.Client) -> str:
    exp = _ok(admin.post(f"{API}/experiments/create", json={"name": f"e-{uuid.uuid4().hex}"}))
    run = _ok(
        admin.post(
            f"{API}/runs/create", json={"experiment_id": exp["experiment_id"], "start_time": 1}
        )
    )["run"]["info"]
    _ok(
        admin.post(
            f"{API}/runs/log-metric",
            json={"run_id": run["run_id"], "key": "val_auc", "value": 0.95, "timestamp": 1},
        )
    )
    path = run["artifact_uri"].removeprefix("mlflow-artifacts:/")
    put = admin.put(f"/api/2.0/mlflow-artifacts/artifacts/{path}/model/MLmodel", content=b"x")
    assert put.status_code == 200, put.text
    _ok(
        admin.post(
            f"{API}/runs/update",
            json={"run_id": run["run_id"], "status": "FINISHED", "end_time": 2},
        )
    )
    return str(run["run_id"])


class Gate:
    """A gate on a fresh model's Staging that trusts ``issuer`` for octo/fraud on main/tags."""

    def __init__(self, server: LiveServer, issuer: LocalIssuer, **trust: Any) -> None:
        self.server = server
        self.admin = _admin(server)
        self.model = f"fraud-{uuid.uuid4().hex[:8]}"
        self.name = f"gate-{uuid.uuid4().hex[:8]}"
        body = {"name": self.name, "model": self.model, "target": "Staging"}
        _ok(self.admin.post(f"{MLGATE}/gates/create", json=body))
        spec = {"gate": self.name, "issuer": issuer.url, "audience": AUDIENCE, "claims": RULES}
        self.trust = _ok(self.admin.post(f"{MLGATE}/gates/oidc/add", json=spec | trust))["trust"]
        self.run_id = _finished_run(self.admin)

    def body(self, **extra: Any) -> dict[str, Any]:
        return {
            "model": self.model,
            "run_id": self.run_id,
            "target": "Staging",
            "idempotency_key": uuid.uuid4().hex,
            **extra,
        }

    def promote(self, token: str, **extra: Any) -> httpx.Response:
        return httpx.post(
            f"{self.server.url}{MLGATE}/gates/promote",
            json=self.body(**extra),
            headers={"Authorization": f"Bearer {token}"},
            timeout=60,
        )

    def nothing_moved(self) -> None:
        found = self.admin.get(f"{API}/registered-models/get", params={"name": self.model})
        assert found.status_code == 404, found.text
        decisions = _ok(
            self.admin.get(f"{MLGATE}/gates/decisions/list", params={"model": self.model})
        )
        assert decisions.get("decisions", []) == []


def test_valid_token_promotes_and_the_actor_is_the_verified_subject(
    server: LiveServer, issuer: LocalIssuer
) -> None:
    gate = Gate(server, issuer)
    token = issuer.token(issuer.claims(AUDIENCE))
    # A requested_by in the body is only a claim: it names nobody.
    answer = gate.promote(token, requested_by="root")
    assert answer.status_code == 200, answer.text
    decision = answer.json()
    subject = "repo:octo/fraud:environment:production"
    actor = f"oidc:{issuer.url.removeprefix('http://')}/{subject}"
    assert decision["outcome"] == "passed" and decision["actor"] == actor
    assert decision["requested_by"] == "root"
    identity = decision["verified_identity"]
    assert identity["sub"] == subject and identity["iss"] == issuer.url
    assert identity["repository"] == "octo/fraud" and identity["ref"] == "refs/heads/main"
    assert identity["trust_id"] == gate.trust["trust_id"] and identity["run_id"] == "4242"
    version = _ok(
        gate.admin.get(
            f"{API}/model-versions/get", params={"name": gate.model, "version": decision["version"]}
        )
    )["model_version"]
    assert version["current_stage"] == "Staging"
    # The audit entry of the decision names the verified subject as its actor.
    entries = _ok(
        gate.admin.get(
            f"{MLGATE}/audit", params={"kind": "gate.decided", "subject": f"model:{gate.model}"}
        )
    )["entries"]
    assert [e["actor"] for e in entries] == [actor]
    # An ES256 key of the issuer is accepted as well.
    issuer.keys.append(new_key("ec-1", "EC"))
    time.sleep(1.1)  # past the refetch interval: the unknown kid makes the server look again
    tag = issuer.token(issuer.claims(AUDIENCE, ref="refs/tags/v1.2"), key=issuer.keys[1])
    again = gate.promote(tag, dry_run=True)
    assert again.status_code == 200, again.text
    assert again.json()["verified_identity"]["ref"] == "refs/tags/v1.2"


def _refusals(issuer: LocalIssuer) -> dict[str, tuple[str, int, str]]:
    """Each attack: (token, expected status, a phrase the message must contain)."""
    now = int(time.time())
    c = issuer.claims
    other = new_key("k1")  # the same kid, but not the issuer's key
    stranger = LocalIssuer()
    stranger.close()
    return {
        "wrong audience": (issuer.token(c("https://other.example")), 401, "audience"),
        "expired": (issuer.token(c(AUDIENCE, iat=now - 900, exp=now - 300)), 401, "expired"),
        "not yet valid": (issuer.token(c(AUDIENCE, nbf=now + 600)), 401, "not valid yet"),
        "issued in the future": (issuer.token(c(AUDIENCE, iat=now + 600)), 401, "future"),
        "no expiry": (issuer.token(c(AUDIENCE, exp=None)), 401, "'exp'"),
        "unknown key": (issuer.token(c(AUDIENCE), key=new_key("k-unknown")), 401, "not among"),
        "forged with the issuer's kid": (issuer.token(c(AUDIENCE), key=other), 401, "signature"),
        "wrong issuer": (
            stranger.token(stranger.claims(AUDIENCE), key=issuer.keys[0]),
            401,
            "issuer",
        ),
        "alg none": (LocalIssuer.unsigned(c(AUDIENCE), "k1"), 401, "'none'"),
        "HS256 with the public key": (issuer.hs256_with_public_key(c(AUDIENCE)), 401, "HS256"),
        "wrong repository": (issuer.token(c(AUDIENCE, repository="evil/fraud")), 403, "repository"),
        "wrong ref": (issuer.token(c(AUDIENCE, ref="refs/heads/feature")), 403, "ref"),
        "missing ref": (issuer.token(c(AUDIENCE, ref=None)), 403, "ref"),
    }


def test_forged_stale_and_misdirected_tokens_are_refused_and_nothing_moves(
    server: LiveServer, issuer: LocalIssuer
) -> None:
    gate = Gate(server, issuer)
    for case, (token, status, phrase) in _refusals(issuer).items():
        answer = gate.promote(token)
        assert answer.status_code == status, (case, answer.text)
        body = answer.json()
        expected = "UNAUTHENTICATED" if status == 401 else "PERMISSION_DENIED"
        assert body["error_code"] == expected, (case, body)
        assert phrase in body["message"], (case, body["message"])
        gate.nothing_moved()


def test_a_token_for_an_ungated_target_names_no_gate(
    server: LiveServer, issuer: LocalIssuer
) -> None:
    gate = Gate(server, issuer)
    token = issuer.token(issuer.claims(AUDIENCE))
    answer = gate.promote(token, target="Production")
    assert answer.status_code == 401, answer.text
    assert answer.json()["error_code"] == "UNAUTHENTICATED"
    assert gate.name not in answer.text
    gate.nothing_moved()


def test_key_rotation_is_followed_and_a_dropped_key_stops_verifying(
    server: LiveServer, issuer: LocalIssuer
) -> None:
    gate = Gate(server, issuer)
    old = issuer.keys[0]
    first = gate.promote(issuer.token(issuer.claims(AUDIENCE)), dry_run=True)
    assert first.status_code == 200, first.text
    old_token = issuer.token(issuer.claims(AUDIENCE), key=old)

    # The issuer rotates: k2 replaces k1 in its published set.
    issuer.keys = [new_key("k2")]
    time.sleep(1.1)
    fetched = issuer.fetches["jwks"]
    rotated = gate.promote(issuer.token(issuer.claims(AUDIENCE)))
    assert rotated.status_code == 200, rotated.text
    assert rotated.json()["outcome"] == "passed"
    assert issuer.fetches["jwks"] == fetched + 1

    # k1 is gone from the refetched set: a token it signed (still unexpired) is refused.
    stale = gate.promote(old_token)
    assert stale.status_code == 401 and "not among" in stale.json()["message"], stale.text

    # A burst of made-up key ids costs the issuer one fetch per refetch interval (1 s here),
    # not one per token (the exact count is checked with a fake clock in test_oidc_keys).
    forged = [issuer.token(issuer.claims(AUDIENCE), key=new_key(f"x{n}")) for n in range(8)]
    time.sleep(1.1)
    before, started = issuer.fetches["jwks"], time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(gate.promote, forged))
    elapsed = time.monotonic() - started
    assert [a.status_code for a in answers] == [401] * 8
    assert 1 <= issuer.fetches["jwks"] - before <= 1 + int(elapsed), elapsed


def test_removed_trust_refuses_its_tokens_and_hmac_keeps_working_beside_it(
    server: LiveServer, issuer: LocalIssuer
) -> None:
    gate = Gate(server, issuer)
    secret = _ok(gate.admin.post(f"{MLGATE}/gates/secrets/add", json={"gate": gate.name}))
    ref = {"gate": gate.name, "trust_id": gate.trust["trust_id"]}
    removed = _ok(gate.admin.post(f"{MLGATE}/gates/oidc/remove", json=ref))["trust"]
    assert removed["active"] is False and removed["revoked_at"]
    answer = gate.promote(issuer.token(issuer.claims(AUDIENCE)))
    assert answer.status_code == 401, answer.text
    gate.nothing_moved()
    listed = _ok(gate.admin.get(f"{MLGATE}/gates/oidc/list", params={"gate": gate.name}))
    assert [t["trust_id"] for t in listed["trusts"]] == [gate.trust["trust_id"]]
    # The HMAC path is unchanged beside (or without) an OIDC trust.
    raw = msgspec.json.encode(gate.body())
    headers = signed(secret["secret"]["secret"], raw) | {"content-type": "application/json"}
    hmac_answer = httpx.post(
        f"{server.url}{MLGATE}/gates/promote", content=raw, headers=headers, timeout=60
    )
    assert hmac_answer.status_code == 200, hmac_answer.text
    assert hmac_answer.json()["actor"].startswith(f"gate:{gate.name}/")


def test_trust_configuration_is_checked_and_admin_only(
    server: LiveServer, issuer: LocalIssuer
) -> None:
    gate = Gate(server, issuer)
    base = {"gate": gate.name, "issuer": issuer.url, "audience": AUDIENCE, "claims": RULES}
    bad = {
        "http issuer off loopback": base | {"issuer": "http://ci.example.com"},
        "issuer with a query": base | {"issuer": "https://ci.example.com/?x=1"},
        "no claim rules": base | {"claims": {}},
        "a rule that allows anything": base | {"claims": {"repository": ["*"]}},
        "a rule on a checked claim": base | {"claims": {"aud": ["x"]}},
        "no audience": {k: v for k, v in base.items() if k != "audience"},
    }
    for case, body in bad.items():
        answer = gate.admin.post(f"{MLGATE}/gates/oidc/add", json=body)
        assert answer.status_code == 400, (case, answer.text)
        assert answer.json()["error_code"] == "INVALID_PARAMETER_VALUE", case
    missing = gate.admin.post(f"{MLGATE}/gates/oidc/add", json=base | {"gate": "no-such-gate"})
    assert missing.status_code == 404 and missing.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    user = f"u-{uuid.uuid4().hex[:6]}"
    _ok(gate.admin.post(f"{MLGATE}/users/create", json={"username": user, "password": PASSWORD}))
    with httpx.Client(base_url=server.url, auth=(user, PASSWORD)) as plain:
        refused = plain.post(f"{MLGATE}/gates/oidc/add", json=base)
        assert refused.status_code == 403, refused.text
        assert plain.get(f"{MLGATE}/gates/oidc/list", params={"gate": gate.name}).status_code == 403
    # The trust's addition is in the audit trail, by the admin who made it.
    entries = _ok(
        gate.admin.get(
            f"{MLGATE}/audit",
            params={"kind": "policy.oidc_trust_added", "subject": f"policy:{gate.name}"},
        )
    )["entries"]
    assert [e["actor"] for e in entries] == [ADMIN_USER]


def _mlgate(server: LiveServer, *args: str, password: str = ADMIN_PASSWORD) -> Any:
    import os
    import subprocess
    import sys

    env = {
        **os.environ,
        "MLGATE_URL": server.url,
        "MLFLOW_TRACKING_USERNAME": ADMIN_USER,
        "MLFLOW_TRACKING_PASSWORD": password,
    }
    return subprocess.run(
        [sys.executable, "-m", "gates.server", "oidc-trust", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_oidc_trust_cli_configures_a_gate_through_the_server_as_the_admin(
    server: LiveServer, issuer: LocalIssuer
) -> None:
    gate = Gate(server, issuer)
    added = _mlgate(
        server,
        "add",
        "--gate",
        gate.name,
        "--issuer",
        issuer.url,
        "--audience",
        "https://other-audience.test",
        "--claim",
        "repository=octo/fraud",
        "--claim",
        "environment=production",
        "--json",
    )
    assert added.returncode == 0, added.stderr
    trust = json.loads(added.stdout)["trust"]
    assert trust["claims"] == {"environment": ["production"], "repository": ["octo/fraud"]}
    assert trust["created_by"] == ADMIN_USER
    # The new trust accepts tokens for its own audience.
    token = issuer.token(issuer.claims("https://other-audience.test"))
    assert gate.promote(token, dry_run=True).status_code == 200
    listed = _mlgate(server, "list", "--gate", gate.name)
    assert listed.returncode == 0 and trust["trust_id"] in listed.stdout, listed.stderr
    removed = _mlgate(server, "remove", "--gate", gate.name, "--trust-id", trust["trust_id"])
    assert removed.returncode == 0 and "removed" in removed.stdout, removed.stdout
    assert gate.promote(token, dry_run=True).status_code == 401
    bad = _mlgate(
        server,
        "add",
        "--gate",
        gate.name,
        "--issuer",
        issuer.url,
        "--audience",
        "a",
        "--claim",
        "no-equals-sign",
    )
    assert bad.returncode == 2 and "NAME=GLOB" in bad.stderr
    refused = _mlgate(server, "list", "--gate", gate.name, password="wrong-password-here")
    assert refused.returncode == 8 and "401" in refused.stderr


def test_version_page_shows_the_verified_oidc_identity_beside_the_actor(
    server: LiveServer, issuer: LocalIssuer
) -> None:
    from tests.web.support import Browser

    gate = Gate(server, issuer)
    answer = gate.promote(issuer.token(issuer.claims(AUDIENCE)), requested_by="someone")
    assert answer.status_code == 200, answer.text
    browser = Browser(server.url)
    try:
        assert browser.login(ADMIN_USER, ADMIN_PASSWORD).status_code in (302, 303)
        page = browser.get(f"/models/{gate.model}/versions/{answer.json()['version']}")
        assert page.status_code == 200, page.text[:500]
        assert answer.json()["actor"] in page.text
        shown = re.search(r'data-field="oidc-identity">([^<]*)<', page.text)
        assert shown is not None, page.text
        assert "repository=octo/fraud" in shown.group(1)
        assert "ref=refs/heads/main" in shown.group(1) and "run_id=4242" in shown.group(1)
    finally:
        browser.close()
