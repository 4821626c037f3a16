"""The OIDC pieces below the webhook: issuer URLs, claim rules and globs, and the key cache
against a real issuer served on loopback (TTL, rotation, rate limit, failures, SSRF policy)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from gates.events.sender import PinnedSender
from gates.events.ssrf import Allowlist
from gates.policies import oidc
from gates.policies.errors import OidcClaimsRefused, OidcTokenRefused
from gates.policies.jwks import IssuerKeys, IssuerUnavailable
from tests.gates.oidc_issuer import LocalIssuer, new_key
from tracking.core.errors import InvalidParameter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def issuer() -> Iterator[LocalIssuer]:
    local = LocalIssuer()
    yield local
    local.close()


def _keys(clock: Clock, *, allow: str = "127.0.0.0/8") -> IssuerKeys:
    return IssuerKeys(
        PinnedSender(Allowlist.parse(allow), 5.0),
        cache_seconds=300,
        refetch_interval=30,
        allow_http_loopback=True,
        clock=clock,
    )


def test_issuer_urls_are_https_unless_loopback_is_allowed_for_tests() -> None:
    assert (
        oidc.canonical_issuer(
            "https://Token.Actions.GithubUserContent.com", allow_http_loopback=False
        )
        == "https://token.actions.githubusercontent.com"
    )
    assert oidc.canonical_issuer("https://gitlab.example.com/", allow_http_loopback=False) == (
        "https://gitlab.example.com/"
    )
    assert oidc.canonical_issuer("http://127.0.0.1:8080", allow_http_loopback=True) == (
        "http://127.0.0.1:8080"
    )
    for bad, loopback in [
        ("http://127.0.0.1:8080", False),
        ("http://ci.example.com", True),
        ("https://user:pw@ci.example.com", False),
        ("https://ci.example.com/?a=b", False),
        ("https://ci.example.com/#x", False),
        ("ftp://ci.example.com", False),
        (" https://ci.example.com", False),
        ("", False),
    ]:
        with pytest.raises(InvalidParameter):
            oidc.canonical_issuer(bad, allow_http_loopback=loopback)


def test_claim_rules_are_canonical_and_never_allow_everything() -> None:
    rules = oidc.canonical_rules({"ref": "refs/heads/main", "repository": ["b/x", "a/x", "a/x"]})
    assert rules == {"ref": ["refs/heads/main"], "repository": ["a/x", "b/x"]}
    bad_rules: list[object] = [
        {},
        None,
        {"repository": []},
        {"repository": ["*"]},
        {"repository": ["?*"]},
        {"aud": ["x"]},
        {"exp": ["1"]},
        {"bad name": ["x"]},
        {"repository": [1]},
        {f"c{n}": ["x"] for n in range(17)},
    ]
    for bad in bad_rules:
        with pytest.raises(InvalidParameter):
            oidc.canonical_rules(bad)


def test_globs_match_whole_values_with_star_and_question_mark_only() -> None:
    assert oidc.glob_matches("refs/tags/v*", "refs/tags/v1.2/rc")
    assert oidc.glob_matches("octo/fraud-?", "octo/fraud-a")
    assert not oidc.glob_matches("octo/fraud", "octo/fraud-evil")
    assert not oidc.glob_matches("octo/fraud", "evil/octo/fraud")
    assert not oidc.glob_matches("octo/[f]raud", "octo/fraud")  # brackets are literal
    assert oidc.glob_matches("octo/[f]raud", "octo/[f]raud")
    assert not oidc.glob_matches("a.c", "abc")  # regex characters are literal
    assert oidc.glob_matches("*", "") and oidc.glob_matches("a**", "a")
    # Many stars against a long near-miss: a backtracking regex would take ages here.
    started = time.monotonic()
    assert not oidc.glob_matches("*a" * 120 + "b", "a" * 16000)
    assert time.monotonic() - started < 5


def test_claim_rules_refuse_missing_non_string_and_unlisted_values() -> None:
    rules = {"repository": ["octo/fraud"], "ref": ["refs/heads/main"]}
    oidc.check_rules({"repository": "octo/fraud", "ref": "refs/heads/main"}, rules)
    refused: list[dict[str, Any]] = [
        {"repository": "octo/fraud"},
        {"repository": "octo/fraud", "ref": ["refs/heads/main"]},
        {"repository": "octo/fraud2", "ref": "refs/heads/main"},
    ]
    for claims in refused:
        with pytest.raises(OidcClaimsRefused):
            oidc.check_rules(claims, rules)


def test_only_rs256_and_es256_with_a_kid_are_even_looked_at(issuer: LocalIssuer) -> None:
    claims = issuer.claims("aud")
    assert oidc.peek(issuer.token(claims)).algorithm == "RS256"
    assert oidc.peek(issuer.token(claims, key=new_key("e", "EC"))).algorithm == "ES256"
    with pytest.raises(OidcTokenRefused, match="'none'"):
        oidc.peek(LocalIssuer.unsigned(claims, "k1"))
    with pytest.raises(OidcTokenRefused, match="'HS256'"):
        oidc.peek(issuer.hs256_with_public_key(claims))
    with pytest.raises(OidcTokenRefused, match="not a compact JWT"):
        oidc.peek("mlg_abc_def")


async def test_keys_are_cached_refetched_for_a_new_kid_and_rate_limited(
    issuer: LocalIssuer,
) -> None:
    clock = Clock()
    keys = _keys(clock)
    try:
        first = await keys.key(issuer.url, "k1")
        assert first.kid == "k1" and issuer.fetches == {"discovery": 1, "jwks": 1}
        await keys.key(issuer.url, "k1")
        assert issuer.fetches["jwks"] == 1  # cached
        issuer.keys = [new_key("k2")]
        # Within the refetch interval an unknown kid does not reach the issuer.
        clock.now += 10
        with pytest.raises(OidcTokenRefused, match="not among"):
            await keys.key(issuer.url, "k2")
        assert issuer.fetches["jwks"] == 1
        clock.now += 30
        assert (await keys.key(issuer.url, "k2")).kid == "k2"
        assert issuer.fetches["jwks"] == 2
        # k1 is gone from the cache with that fetch: no stale key verifies anything.
        with pytest.raises(OidcTokenRefused, match="not among"):
            await keys.key(issuer.url, "k1")
        # Past the cache lifetime the set is fetched again even for a known kid.
        clock.now += 301
        await keys.key(issuer.url, "k2")
        assert issuer.fetches["jwks"] == 3
    finally:
        await keys.aclose()


async def test_an_unreadable_issuer_fails_closed_and_is_not_asked_on_every_request(
    issuer: LocalIssuer,
) -> None:
    clock = Clock()
    keys = _keys(clock)
    try:
        await keys.key(issuer.url, "k1")
        issuer.close()
        clock.now += 301  # the cache expired while the issuer is down
        with pytest.raises(IssuerUnavailable):
            await keys.key(issuer.url, "k1")
        with pytest.raises(IssuerUnavailable):
            await keys.key(issuer.url, "k1")
    finally:
        await keys.aclose()


async def test_loopback_issuers_need_the_ssrf_allowance(issuer: LocalIssuer) -> None:
    keys = _keys(Clock(), allow="")
    try:
        with pytest.raises(IssuerUnavailable, match="loopback"):
            await keys.key(issuer.url, "k1")
        assert issuer.fetches["discovery"] == 0
    finally:
        await keys.aclose()


class _Lying(BaseHTTPRequestHandler):
    """A discovery document naming another issuer, or redirecting, or a huge key set."""

    mode = "other-issuer"

    def do_GET(self) -> None:
        host = f"http://{self.headers['host']}"
        body: Any
        if self.mode == "redirect":
            self.send_response(302)
            self.send_header("location", "http://127.0.0.1:9/elsewhere")
            self.end_headers()
            return
        if self.path.startswith("/.well-known"):
            issuer = "https://elsewhere.example" if self.mode == "other-issuer" else host
            body = {"issuer": issuer, "jwks_uri": f"{host}/jwks"}
        else:
            body = {"keys": [{"kty": "RSA", "kid": "x", "n": "A" * 400_000, "e": "AQAB"}]}
        raw = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("content-length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.mark.parametrize(
    ("mode", "phrase"),
    [("other-issuer", "another issuer"), ("redirect", "redirects"), ("huge", "larger")],
)
async def test_discovery_that_lies_redirects_or_floods_is_not_used(mode: str, phrase: str) -> None:
    handler = type("Handler", (_Lying,), {"mode": mode})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    keys = _keys(Clock())
    try:
        with pytest.raises(IssuerUnavailable, match=phrase):
            await keys.key(url, "x")
    finally:
        await keys.aclose()
        server.shutdown()
        server.server_close()


def test_a_key_signs_only_with_its_own_type_and_published_algorithm(issuer: LocalIssuer) -> None:
    claims = issuer.claims("aud")
    rsa = issuer.keys[0]
    ec = new_key("k1", "EC")
    # An ES256 token checked against the RSA key published under its kid.
    with pytest.raises(OidcTokenRefused, match="not a EC key"):
        oidc.verify_signature(oidc.peek(issuer.token(claims, key=ec)), rsa)
    pinned = oidc.import_key_set({"keys": [rsa.as_dict(private=False) | {"alg": "RS384"}]})["k1"]
    with pytest.raises(OidcTokenRefused, match="published for RS384"):
        oidc.verify_signature(oidc.peek(issuer.token(claims)), pinned)
    assert oidc.verify_signature(oidc.peek(issuer.token(claims)), rsa)["sub"] == claims["sub"]
    # Private keys and encryption keys in a key set are never used.
    loaded = oidc.import_key_set(
        {
            "keys": [
                rsa.as_dict(private=True),
                ec.as_dict(private=False) | {"kid": "enc", "use": "enc"},
                {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
                "junk",
            ]
        }
    )
    assert loaded == {}
