"""Browser sessions: the session cookie, CSRF tokens, and where a login may send a browser.

One of four homes of authentication (README, "Where authentication lives"). This module is the
browser's side of a session; the session record (which user a cookie secret belongs to) is
checked in ``gates/identity/service/web_sessions.py`` with the rest of the deciding, what a
route needs is declared in ``tracking/core/auth.py``, and ``gates/server/security.py`` enforces
it (its middleware reads the cookie through this module). The login and logout pages that open
and close sessions are ``gates/server/web/pages/account.py``.

- The session cookie (``mlgate_session``) is HttpOnly, SameSite=Lax and Secure unless
  ``MLGATE_UI_COOKIE_SECURE=false``. It authenticates UI pages only: the JSON API never reads
  it, so a cookie can never be replayed against the API by a forged cross-site request.
- Every form carries a CSRF token. Signed in, it is the session's own secret (kept in the
  database); signed out or with authentication off, it is a double-submit cookie
  (``mlgate_csrf``, SameSite=Strict). A POST must also not come from another site: its
  ``Origin`` (when sent) must be this server, and ``Sec-Fetch-Site`` must not be cross-site.
"""

from __future__ import annotations

import re
import secrets
from typing import Any

from litestar import Request, Response
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from gates.identity.credentials import constant_time_equals
from tracking.core.errors import PermissionDenied
from tracking.core.settings import Settings

SESSION_COOKIE = "mlgate_session"
CSRF_COOKIE = "mlgate_csrf"
CSRF_FIELD = "csrf_token"
# Set by the authentication middleware when a session cookie signed the request in.
SESSION_CSRF_SCOPE_KEY = "mlgate.session_csrf"
_NEW_CSRF_SCOPE_KEY = "mlgate.new_csrf"
API_PATH_PREFIXES = ("/api/", "/ajax-api/")
TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{20,100}$")


def is_web_path(path: str) -> bool:
    """Whether a path belongs to the UI (the only routes a session cookie may sign in)."""
    return not path.startswith(API_PATH_PREFIXES)


def cookie_value(scope: Any, name: str) -> str | None:
    for key, value in scope.get("headers", ()):
        if bytes(key).lower() != b"cookie":
            continue
        for part in bytes(value).decode("latin-1").split(";"):
            found, sep, content = part.strip().partition("=")
            if sep and found == name:
                return content.strip()
    return None


def csrf_token(request: Request[Any, Any, Any]) -> str:
    """The token this request's forms must carry (see the module doc)."""
    signed_in = request.scope.get(SESSION_CSRF_SCOPE_KEY)
    if isinstance(signed_in, str):
        return signed_in
    existing = request.scope.get(_NEW_CSRF_SCOPE_KEY) or cookie_value(request.scope, CSRF_COOKIE)
    if isinstance(existing, str) and TOKEN_RE.match(existing):
        return existing
    fresh = secrets.token_urlsafe(32)
    request.scope[_NEW_CSRF_SCOPE_KEY] = fresh  # type: ignore[literal-required]
    return fresh


def set_csrf_cookie_if_new(
    request: Request[Any, Any, Any], response: Response[Any], settings: Settings
) -> None:
    fresh = request.scope.get(_NEW_CSRF_SCOPE_KEY)
    if isinstance(fresh, str):
        response.set_cookie(
            CSRF_COOKIE,
            fresh,
            path="/",
            httponly=True,
            secure=settings.ui_cookie_secure,
            samesite="strict",
        )


def set_session_cookie(response: Response[Any], secret: str, settings: Settings) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        secret,
        path="/",
        max_age=settings.ui_session_hours * 3600,
        httponly=True,
        secure=settings.ui_cookie_secure,
        samesite="lax",
    )


def clear_session_cookie(response: Response[Any], settings: Settings) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/")


def _own_origin(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    return f"{connection.url.scheme}://{connection.headers.get('host', '')}".lower()


async def csrf_guard(
    connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
) -> None:
    """Refuse a UI form POST that is cross-site or lacks the right CSRF token (403)."""
    if connection.scope.get("method") != "POST":
        return
    fetch_site = connection.headers.get("sec-fetch-site")
    if fetch_site in ("cross-site", "same-site"):
        raise PermissionDenied("Refused a cross-site form submission.")
    origin = connection.headers.get("origin")
    if origin is not None and origin.lower() != _own_origin(connection):
        raise PermissionDenied("Refused a form submission from another origin.")
    assert isinstance(connection, Request)
    form = await connection.form()
    sent = form.get(CSRF_FIELD)
    signed_in = connection.scope.get(SESSION_CSRF_SCOPE_KEY)
    expected = (
        signed_in if isinstance(signed_in, str) else cookie_value(connection.scope, CSRF_COOKIE)
    )
    if not isinstance(sent, str) or not expected or not constant_time_equals(sent, expected):
        raise PermissionDenied(
            "The form's security token is missing or stale. Reload the page and try again."
        )


def safe_next(target: str | None) -> str:
    """A post-login redirect target: a path on this server, never another site."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    if any(ord(ch) < 0x20 for ch in target):
        return "/"
    return target
