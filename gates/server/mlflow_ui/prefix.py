"""Requests MLflow's UI makes under ``/mlflow/``, handed to mlgate's own API routes.

The UI computes every URL relative to the page (``ajax-api/2.0/mlflow/runs/search``,
``get-artifact?...``, ``graphql``), so served at ``/mlflow/`` it calls ``/mlflow/ajax-api/...``.
This outermost wrapper strips the prefix, so those calls reach exactly the handlers (and the
permission declarations) that ``/ajax-api/...`` has, and marks the request as the UI's:

- a UI request may be signed in by the web UI's session cookie (the browser holds no other
  credential), which plain ``/api/`` and ``/ajax-api/`` requests never are;
- so it is also where cross-site request forgery is refused: a write (any method but GET,
  HEAD, OPTIONS) must say it comes from this origin, ``Sec-Fetch-Site: same-origin`` (every
  current browser sends it) or else an ``Origin`` equal to this server's. A request that says
  neither is refused too: scripts use ``/api/2.0/mlflow``, never the UI's prefix.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar.types import ASGIApp, Receive, Scope, Send

from gates.server.hardening import SECURITY_HEADERS

UI_PREFIX = "/mlflow"
# Set in the scope of every request that arrived under UI_PREFIX and was forwarded.
MLFLOW_UI_SCOPE_KEY = "mlgate.mlflow_ui"
# Internal path of the UI's GraphQL endpoint (an API path: no cookie unless forwarded).
GRAPHQL_PATH = "/ajax-api/graphql"
_FORWARDED = ("/ajax-api/", "/get-artifact", "/model-versions/get-artifact")
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if bytes(key).lower() == name:
            return bytes(value).decode("latin-1")
    return None


def forwarded_path(path: str) -> str | None:
    """The API path a ``/mlflow/...`` request stands for, or None (a page or static file)."""
    if not path.startswith(UI_PREFIX + "/"):
        return None
    rest = path[len(UI_PREFIX) :]
    if rest == "/graphql":
        return GRAPHQL_PATH
    if rest.startswith("/ajax-api/") or rest in _FORWARDED:
        return rest
    return None


def cross_site_refusal(scope: Scope) -> str | None:
    """Why a forwarded write must be refused as possibly cross-site, or None."""
    if scope.get("method", "GET") in _SAFE_METHODS:
        return None
    fetch_site = _header(scope, b"sec-fetch-site")
    if fetch_site is not None:
        return None if fetch_site == "same-origin" else f"Sec-Fetch-Site is {fetch_site!r}"
    origin = _header(scope, b"origin")
    if origin is None:
        return "neither Sec-Fetch-Site nor Origin was sent"
    scheme = scope.get("scheme", "http")
    own = f"{scheme}://{_header(scope, b'host') or ''}".lower()
    return None if origin.lower() == own else f"Origin {origin!r} is not this server"


class MlflowUiPrefix:
    """Outer ASGI wrapper: forward ``/mlflow/<api path>`` to ``/<api path>`` (see module doc)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            target = forwarded_path(scope["path"])
            if target is not None:
                refusal = cross_site_refusal(scope)
                if refusal is not None:
                    await _refuse(send, f"Refused a cross-site write to MLflow's UI: {refusal}")
                    return
                # In place: the outer request observer reads the route template and the
                # principal the inner app writes into this same scope.
                scope["path"] = target
                raw = scope.get("raw_path")
                if target == GRAPHQL_PATH:
                    scope["raw_path"] = target.encode()
                elif isinstance(raw, bytes) and raw.startswith(UI_PREFIX.encode() + b"/"):
                    scope["raw_path"] = raw[len(UI_PREFIX) :]
                scope[MLFLOW_UI_SCOPE_KEY] = True  # type: ignore[literal-required]
        await self.app(scope, receive, send)


async def _refuse(send: Send, message: str) -> None:
    raw: Any = send  # plain ASGI messages
    body = msgspec.json.encode({"error_code": "PERMISSION_DENIED", "message": message})
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    start = {"type": "http.response.start", "status": 403, "headers": [*headers, *SECURITY_HEADERS]}
    await raw(start)
    await raw({"type": "http.response.body", "body": body})
