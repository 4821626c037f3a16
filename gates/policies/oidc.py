"""OIDC trust of a gate: a trust's rules, and checking a CI token against them (no I/O here).

A CI system (GitHub Actions, GitLab, ...) hands each job a short-lived JWT signed by its
issuer. A gate that trusts the issuer accepts such a token as ``Authorization: Bearer <jwt>``
on the promote webhook when: the signature verifies with one of the issuer's published keys
(RS256 or ES256 only: ``none`` and the HMAC family are refused before anything else, so a
public key can never be used as an HMAC secret), ``iss`` is the trust's issuer exactly,
``aud`` names the trust's audience, ``exp``/``nbf``/``iat`` hold within a minute of leeway,
and every claim rule matches (``{"repository": ["octo/fraud"], "ref": ["refs/heads/main"]}``:
each named claim must be present, a string, and match one of its globs).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, RSAKey

from gates.policies.errors import OidcClaimsRefused, OidcTokenRefused
from tracking.core.errors import InvalidParameter

ALLOWED_ALGORITHMS = ("RS256", "ES256")
_KEY_TYPE = {"RS256": "RSA", "ES256": "EC"}
# Clock skew between the issuer, the runner and this server; tokens live minutes anyway.
LEEWAY_SECONDS = 60
MAX_TOKEN_LEN = 16 * 1024
MAX_RULES = 16
MAX_PATTERNS = 32
MAX_PATTERN_LEN = 256
MAX_AUDIENCE_LEN = 256
MAX_ISSUER_LEN = 512
ACTOR_LEN = 256
CLAIM_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.:-]{0,63}$")
# Checked by the verifier itself; a rule on them would be a second, weaker check.
RESERVED_CLAIMS = frozenset({"iss", "aud", "exp", "nbf", "iat", "jti"})
# What is recorded of a verified token besides ``iss`` and ``sub`` (when present): the claims
# GitHub Actions and GitLab CI put in theirs to say which pipeline asked, plus every rule's.
RECORDED_CLAIMS = (
    "repository",
    "repository_owner",
    "ref",
    "environment",
    "workflow_ref",
    "job_workflow_ref",
    "run_id",
    "run_attempt",
    "sha",
    "actor",
    "event_name",
    "project_path",
    "pipeline_id",
)
_JWT_SHAPE = re.compile(r"^eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")
_LOOPBACK_NAMES = ("localhost",)


def looks_like_jwt(value: str) -> bool:
    """Whether a bearer credential is a compact JWS (mlgate's own tokens are ``mlg_...``)."""
    return len(value) <= MAX_TOKEN_LEN and bool(_JWT_SHAPE.match(value))


# --- the trust's configuration -------------------------------------------------------------------


def _is_loopback_host(host: str) -> bool:
    import ipaddress

    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def canonical_issuer(value: object, *, allow_http_loopback: bool) -> str:
    """The issuer URL as tokens must name it: https (http only for loopback when allowed), a
    host, no credentials, query or fragment; scheme and host lower-cased, the path kept."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidParameter("Missing value for required parameter 'issuer'.")
    if len(value) > MAX_ISSUER_LEN or value != value.strip():
        raise InvalidParameter(f"issuer must be a URL of at most {MAX_ISSUER_LEN} characters.")
    try:
        parts = urllib.parse.urlsplit(value)
        host = parts.hostname or ""
        port = parts.port
    except ValueError as exc:
        raise InvalidParameter(f"issuer is not a valid URL ({exc}).") from None
    if not host or parts.username is not None or parts.password is not None:
        raise InvalidParameter("issuer must be an https URL with a host and no credentials.")
    if parts.query or parts.fragment or "?" in value or "#" in value:
        raise InvalidParameter("issuer must not have a query or a fragment.")
    scheme = parts.scheme.lower()
    if scheme == "http" and allow_http_loopback and _is_loopback_host(host):
        pass
    elif scheme != "https":
        raise InvalidParameter(
            "issuer must be an https URL (http is accepted only for a loopback issuer with "
            "MLGATE_OIDC_ALLOW_HTTP_LOOPBACK=true, for tests)."
        )
    shown_host = f"[{host}]" if ":" in host else host
    netloc = shown_host if port is None else f"{shown_host}:{port}"
    return urllib.parse.urlunsplit((scheme, netloc, parts.path, "", ""))


def discovery_url(issuer: str) -> str:
    return issuer.rstrip("/") + "/.well-known/openid-configuration"


def check_audience(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidParameter("Missing value for required parameter 'audience'.")
    if len(value) > MAX_AUDIENCE_LEN or value != value.strip():
        raise InvalidParameter(f"audience must be at most {MAX_AUDIENCE_LEN} characters.")
    return value


def canonical_rules(value: object) -> dict[str, list[str]]:
    """``{claim: [glob, ...]}``: at least one rule (an issuer like GitHub's signs tokens for
    every repository on it, so a trust without rules would let any of them in)."""
    if not isinstance(value, Mapping) or not value:
        raise InvalidParameter(
            "claims must map at least one claim to its allowed values, e.g. "
            '{"repository": ["octo/fraud"], "ref": ["refs/heads/main"]}.'
        )
    if len(value) > MAX_RULES:
        raise InvalidParameter(f"claims may name at most {MAX_RULES} claims.")
    out: dict[str, list[str]] = {}
    for name, patterns in value.items():
        if not isinstance(name, str) or not CLAIM_NAME.match(name):
            raise InvalidParameter(f"claim name {name!r} is not valid.")
        if name in RESERVED_CLAIMS:
            raise InvalidParameter(f"claim '{name}' is checked by mlgate itself; no rule on it.")
        if isinstance(patterns, str):
            patterns = [patterns]
        if not isinstance(patterns, list) or not patterns or len(patterns) > MAX_PATTERNS:
            raise InvalidParameter(
                f"claim '{name}' needs 1 to {MAX_PATTERNS} allowed values (strings)."
            )
        for p in patterns:
            if not isinstance(p, str) or not p or len(p) > MAX_PATTERN_LEN:
                raise InvalidParameter(
                    f"claim '{name}': each allowed value is a string of 1 to "
                    f"{MAX_PATTERN_LEN} characters."
                )
            if p.strip("*?") == "":
                raise InvalidParameter(
                    f"claim '{name}': {p!r} would allow any value; name the allowed values."
                )
        out[name] = sorted(set(patterns))
    return dict(sorted(out.items()))


def glob_matches(pattern: str, value: str) -> bool:
    """``*`` matches any run of characters (``/`` included), ``?`` one; the rest is literal.

    The classic two-pointer wildcard match: at most len(pattern) * len(value) steps, never
    the exponential backtracking a regular expression of many ``*`` can fall into.
    """
    p = v = 0
    star, resume = -1, 0
    while v < len(value):
        if p < len(pattern) and pattern[p] in ("?", value[v]) and pattern[p] != "*":
            p, v = p + 1, v + 1
        elif p < len(pattern) and pattern[p] == "*":
            star, resume = p, v
            p += 1
        elif star >= 0:
            resume += 1
            p, v = star + 1, resume
        else:
            return False
    while p < len(pattern) and pattern[p] == "*":
        p += 1
    return p == len(pattern)


# --- the token -----------------------------------------------------------------------------------


def _segment(text: str, what: str) -> dict[str, Any]:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        decoded = json.loads(raw)
    except (binascii.Error, ValueError) as exc:
        raise OidcTokenRefused(f"the token's {what} is not base64url JSON ({exc}).") from None
    if not isinstance(decoded, dict):
        raise OidcTokenRefused(f"the token's {what} is not a JSON object.")
    return decoded


@dataclass(frozen=True, slots=True)
class UnverifiedToken:
    """A token's header and claims as sent: only for choosing the issuer and key to check."""

    token: str
    algorithm: str
    key_id: str
    issuer: str


def peek(token: str) -> UnverifiedToken:
    """The algorithm, key id and issuer a token names; refuses algorithms outside the list."""
    if not looks_like_jwt(token):
        raise OidcTokenRefused("the bearer credential is not a compact JWT.")
    head, body, _ = token.split(".")
    header = _segment(head, "header")
    alg = header.get("alg")
    if alg not in ALLOWED_ALGORITHMS:
        raise OidcTokenRefused(
            f"algorithm {alg!r} is not accepted (only {', '.join(ALLOWED_ALGORITHMS)})."
        )
    if header.get("crit") is not None:
        raise OidcTokenRefused("tokens with critical header parameters are not accepted.")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid or len(kid) > 256:
        raise OidcTokenRefused("the token's header names no key id ('kid').")
    issuer = _segment(body, "claims").get("iss")
    if not isinstance(issuer, str) or not issuer:
        raise OidcTokenRefused("the token has no issuer ('iss').")
    return UnverifiedToken(token, str(alg), kid, issuer)


PublicKey = RSAKey | ECKey


def import_key_set(document: object) -> dict[str, PublicKey]:
    """The signing keys of a JWKS document by key id; keys that are not RSA or P-256 EC
    signing keys with a ``kid`` (or that do not parse) are skipped, and private parts refused."""
    keys = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(keys, list):
        raise ValueError("the JWKS document has no 'keys' list")
    out: dict[str, PublicKey] = {}
    for item in keys[:100]:
        if not isinstance(item, dict) or not isinstance(item.get("kid"), str):
            continue
        if item.get("use", "sig") != "sig" or "d" in item:
            continue
        try:
            if item.get("kty") == "RSA":
                out[item["kid"]] = RSAKey.import_key(item)
            elif item.get("kty") == "EC" and item.get("crv") == "P-256":
                out[item["kid"]] = ECKey.import_key(item)
        except (JoseError, ValueError, TypeError):
            continue
    return out


def verify_signature(peeked: UnverifiedToken, key: PublicKey) -> dict[str, Any]:
    """The claims of a token whose signature ``key`` verifies under its (allowed) algorithm."""
    if key.alg is not None and key.alg != peeked.algorithm:
        raise OidcTokenRefused(
            f"key '{peeked.key_id}' is published for {key.alg}, not {peeked.algorithm}."
        )
    if key.key_type != _KEY_TYPE[peeked.algorithm]:
        raise OidcTokenRefused(
            f"key '{peeked.key_id}' is not a {_KEY_TYPE[peeked.algorithm]} key; it cannot "
            f"verify {peeked.algorithm}."
        )
    try:
        obj = jws.deserialize_compact(peeked.token, key, algorithms=[peeked.algorithm])
    except (JoseError, ValueError) as exc:
        raise OidcTokenRefused(f"the signature does not verify ({exc}).") from None
    try:
        claims = json.loads(obj.payload)
    except ValueError:
        claims = None
    if not isinstance(claims, dict):
        raise OidcTokenRefused("the token's claims are not a JSON object.")
    return claims


def _number(claims: Mapping[str, Any], name: str, *, required: bool) -> float | None:
    value = claims.get(name)
    if value is None:
        if required:
            raise OidcTokenRefused(f"the token has no '{name}' claim.")
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise OidcTokenRefused(f"the token's '{name}' is not a NumericDate.")
    return float(value)


def check_registered_claims(
    claims: Mapping[str, Any], *, issuer: str, audience: str, now: float
) -> str:
    """Issuer, audience and the time claims; returns the subject."""
    if claims.get("iss") != issuer:
        raise OidcTokenRefused("the token's issuer is not the trusted issuer.")
    aud = claims.get("aud")
    audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    if audience not in audiences:
        raise OidcTokenRefused(f"the token's audience does not include '{audience}'.")
    exp = _number(claims, "exp", required=True)
    assert exp is not None
    if now >= exp + LEEWAY_SECONDS:
        raise OidcTokenRefused("the token has expired.")
    nbf = _number(claims, "nbf", required=False)
    if nbf is not None and now + LEEWAY_SECONDS < nbf:
        raise OidcTokenRefused("the token is not valid yet (nbf).")
    iat = _number(claims, "iat", required=False)
    if iat is not None and now + LEEWAY_SECONDS < iat:
        raise OidcTokenRefused("the token was issued in the future (iat).")
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub or len(sub) > 255:
        raise OidcTokenRefused("the token has no subject ('sub') of at most 255 characters.")
    return sub


def check_rules(claims: Mapping[str, Any], rules: Mapping[str, list[str]]) -> None:
    """Every rule's claim is a string matching one of its globs (a 403: the caller is known)."""
    for name, patterns in rules.items():
        value = claims.get(name)
        if not isinstance(value, str):
            raise OidcClaimsRefused(f"the token has no string claim '{name}' the gate requires.")
        if not any(glob_matches(p, value) for p in patterns):
            raise OidcClaimsRefused(
                f"claim '{name}' = {value[:200]!r} is not among the values the gate trusts."
            )


def recorded_identity(
    claims: Mapping[str, Any], rules: Mapping[str, list[str]], trust_id: str
) -> dict[str, str]:
    """What a decision records of the verified token: issuer, subject, trust, and claims."""
    out = {"iss": str(claims["iss"]), "sub": str(claims["sub"]), "trust_id": trust_id}
    for name in (*RECORDED_CLAIMS, *rules):
        value = claims.get(name)
        if isinstance(value, str | int) and not isinstance(value, bool):
            out[name] = str(value)[:256]
    return out


def actor_name(issuer: str, subject: str) -> str:
    """``oidc:<issuer host and path>/<sub>``: the subject, qualified by who vouched for it."""
    parts = urllib.parse.urlsplit(issuer)
    where = (parts.netloc + parts.path).rstrip("/")
    actor = f"oidc:{where}/{subject}"
    if len(actor) > ACTOR_LEN:
        raise OidcTokenRefused(f"issuer and subject are longer than {ACTOR_LEN} characters.")
    return actor
