"""A local OIDC issuer for tests: discovery document and JWKS served on loopback, tokens signed
here (joserfc), keys switchable mid-test to model a rotation, fetches counted."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

Key = RSAKey | ECKey


def new_key(kid: str, kind: str = "RSA") -> Key:
    if kind == "EC":
        return ECKey.generate_key("P-256", parameters={"kid": kid})
    return RSAKey.generate_key(2048, parameters={"kid": kid})


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class LocalIssuer:
    """``issuer`` is ``http://127.0.0.1:<port>``; ``keys`` are the published signing keys."""

    def __init__(self) -> None:
        self.keys: list[Key] = [new_key("k1")]
        self.fetches = {"discovery": 0, "jwks": 0}
        # GitHub's runner token service: ACTIONS_ID_TOKEN_REQUEST_URL/_TOKEN point here.
        self.request_token = "runner-request-token"
        self.token_claims: dict[str, Any] = {}
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body: dict[str, Any]
                if self.path == "/.well-known/openid-configuration":
                    issuer.fetches["discovery"] += 1
                    body = {"issuer": issuer.url, "jwks_uri": f"{issuer.url}/jwks"}
                elif self.path == "/jwks":
                    issuer.fetches["jwks"] += 1
                    body = {"keys": [k.as_dict(private=False) for k in issuer.keys]}
                elif self.path.startswith("/token?"):
                    expected = f"bearer {issuer.request_token}"
                    if self.headers.get("authorization") != expected:
                        self.send_error(401)
                        return
                    query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                    claims = issuer.claims(query["audience"][0], **issuer.token_claims)
                    body = {"value": issuer.token(claims)}
                else:
                    self.send_error(404)
                    return
                raw = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def claims(self, audience: str, **overrides: Any) -> dict[str, Any]:
        """GitHub Actions-shaped claims for ``octo/fraud`` on main, valid for five minutes."""
        now = int(time.time())
        base: dict[str, Any] = {
            "iss": self.url,
            "aud": audience,
            "sub": "repo:octo/fraud:environment:production",
            "repository": "octo/fraud",
            "repository_owner": "octo",
            "ref": "refs/heads/main",
            "environment": "production",
            "workflow_ref": "octo/fraud/.github/workflows/train.yml@refs/heads/main",
            "run_id": "4242",
            "sha": "0123abcd",
            "iat": now,
            "nbf": now,
            "exp": now + 300,
        }
        base.update(overrides)
        return {k: v for k, v in base.items() if v is not None}

    def token(self, claims: dict[str, Any], key: Key | None = None, alg: str | None = None) -> str:
        key = key or self.keys[0]
        alg = alg or ("ES256" if isinstance(key, ECKey) else "RS256")
        return jwt.encode({"alg": alg, "kid": key.kid}, claims, key, algorithms=[alg])

    @staticmethod
    def unsigned(claims: dict[str, Any], kid: str) -> str:
        """``alg: none`` with a junk signature (an empty one is not even JWT-shaped)."""
        head = _b64(json.dumps({"alg": "none", "kid": kid}).encode())
        return f"{head}.{_b64(json.dumps(claims).encode())}.{_b64(b'x')}"

    def hs256_with_public_key(self, claims: dict[str, Any]) -> str:
        """The algorithm-confusion attack: HMAC keyed with the issuer's *public* key."""
        key = self.keys[0]
        pem = key.as_pem(private=False)
        head = _b64(json.dumps({"alg": "HS256", "kid": key.kid}).encode())
        body = _b64(json.dumps(claims).encode())
        signing_input = f"{head}.{body}".encode()
        mac = hmac.new(pem, signing_input, hashlib.sha256).digest()
        return f"{head}.{body}.{_b64(mac)}"
