"""Browser and protocol safety that applies with or without authentication.

- The ``Host`` header must name this server (an allowlist): a page on another site that
  rebinds its DNS name to 127.0.0.1 sends its own name and is refused, which is what keeps
  the auth-off embedded default safe from the browser next to it.
- Mutations must carry ``application/json`` (checked by the guard, which knows the route):
  an HTML form or a ``text/plain`` fetch cannot send that cross-site without a CORS
  preflight, so a forged cross-site write never reaches a handler.
- Security headers on every response, errors and 404s included (added by the outermost
  layer, :class:`gates.server.observe.RequestObserver`).
"""

from __future__ import annotations

import ipaddress
from typing import Any

from litestar.types import ASGIApp, Receive, Scope, Send

from tracking.core.errors import UnsupportedMediaType
from tracking.core.settings import Settings

SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    # Responses are JSON or downloads (attachments), never pages: nothing may run or embed.
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'; sandbox"),
    (b"cross-origin-opener-policy", b"same-origin"),
    # Credentials are sent with every call; nothing in between should keep a copy.
    (b"cache-control", b"no-store"),
)
JSON_MEDIA_TYPES = frozenset({"application/json"})
MUTATING_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _host_name(header: str) -> str:
    """The host part of a Host header (``[::1]:5000`` -> ``[::1]``), lower-cased."""
    value = header.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        return value[: end + 1] if end > 0 else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def host_allowed(header: str | None, allowed: tuple[str, ...], server_host: str | None) -> bool:
    """Whether a Host header names this server.

    ``allowed`` holds names without ports: exact names, ``*.example.com`` suffixes, or ``*``.
    The literal address the connection arrived on (``scope["server"]``) is also accepted: a
    browser led here by DNS rebinding always sends the attacker's name, never our address.
    """
    if not header:
        return False
    name = _host_name(header)
    for entry in allowed:
        pattern = entry.strip().lower()
        if pattern == "*" or pattern == name:
            return True
        if pattern.startswith("*.") and name.endswith(pattern[1:]):
            return True
    if server_host:
        try:
            address = ipaddress.ip_address(server_host.strip("[]"))
        except ValueError:
            return name == server_host.lower()
        literal = f"[{address}]" if address.version == 6 else str(address)
        return name == literal
    return False


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


class HostAllowlist:
    """Outermost ASGI wrapper: refuse requests whose Host is not this server, as MLflow JSON."""

    # Verdicts kept per (Host header, server address): a server sees a handful of pairs.
    # Beyond this many (a caller making up names), the rest are checked each time.
    CACHE_LIMIT = 256

    def __init__(
        self, app: ASGIApp, allowed: tuple[str, ...], exempt: frozenset[str] = frozenset()
    ) -> None:
        self.app = app
        self.allowed = allowed
        # Paths answered whatever the Host (probes and scrapers address a pod by its IP).
        self.exempt = exempt
        self._verdicts: dict[tuple[str | None, str | None], bool] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and scope["path"] not in self.exempt:
            server = scope.get("server")
            if not self.allowed_host(_header(scope, b"host"), server[0] if server else None):
                await _reject_host(scope, send)
                return
        await self.app(scope, receive, send)

    def allowed_host(self, header: str | None, server_host: str | None) -> bool:
        key = (header, server_host)
        verdict = self._verdicts.get(key)
        if verdict is None:
            verdict = host_allowed(header, self.allowed, server_host)
            if len(self._verdicts) < self.CACHE_LIMIT:
                self._verdicts[key] = verdict
        return verdict


async def _reject_host(scope: Scope, send: Send) -> None:
    raw: Any = send  # plain ASGI messages, not Litestar's typed events
    if scope["type"] != "http":
        await raw({"type": "websocket.close", "code": 1008})
        return
    body = b'{"error_code": "BAD_REQUEST", "message": "Invalid Host header."}'
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await raw(
        {"type": "http.response.start", "status": 400, "headers": [*headers, *SECURITY_HEADERS]}
    )
    await raw({"type": "http.response.body", "body": body})


def has_body(scope: Scope) -> bool:
    length = _header(scope, b"content-length")
    if length is not None:
        return length.strip() not in ("", "0")
    return _header(scope, b"transfer-encoding") is not None


def require_json_body(scope: Scope) -> None:
    """Refuse a mutation whose body is not ``application/json`` (415, MLflow JSON error)."""
    if scope.get("method") not in MUTATING_METHODS or not has_body(scope):
        return
    content_type = (_header(scope, b"content-type") or "").split(";", 1)[0].strip().lower()
    if content_type not in JSON_MEDIA_TYPES:
        raise UnsupportedMediaType(
            f"Content-Type must be application/json, not {content_type or 'missing'!r}."
        )


def cors_config(settings: Settings) -> Any:
    """CORS for the configured origins; None (off) by default."""
    from litestar.config.cors import CORSConfig

    origins = settings.cors_origin_list
    if not origins:
        return None
    return CORSConfig(
        allow_origins=list(origins),
        allow_methods=["GET", "POST", "PATCH", "PUT", "DELETE", "OPTIONS"],
        allow_headers=["Authorization", "Content-Type", "X-MLflow-Client-Version"],
        allow_credentials=False,
    )
