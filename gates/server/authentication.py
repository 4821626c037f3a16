"""Who is calling: the start-up checks and the middleware that authenticates each request.

- :func:`bind_refusal` and :func:`identity_lifespan` refuse to serve without authentication
  on a public address, and with it on, without an administrator (one is created from settings
  on first start).
- :class:`AuthenticationMiddleware` reads ``Authorization`` exactly as the MLflow client sends
  it (Basic from MLFLOW_TRACKING_USERNAME/PASSWORD, Bearer from MLFLOW_TRACKING_TOKEN), or the
  web UI's session cookie, and puts the principal in the request scope; bad credentials are a
  401 on any route, and failed logins are throttled per user name and client (counters in the
  database). What the principal may do is decided in :mod:`gates.server.security`.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, NoReturn

from litestar import Litestar
from litestar.types import ASGIApp, Receive, Scope, Send

from gates.identity import service as identity
from gates.identity.errors import InvalidCredentials, LoginThrottled, NoAdministrator
from gates.identity.service import web_sessions as sessions
from gates.policies.api import GATES_PATH
from gates.policies.oidc import looks_like_jwt
from gates.server.mlflow_ui.prefix import MLFLOW_UI_SCOPE_KEY
from gates.server.web import session as web_session
from registry.api import MLGATE_API_PREFIX
from tracking.core.auth import PRINCIPAL_SCOPE_KEY, Principal, bind_principal
from tracking.core.db import Database
from tracking.core.settings import Settings

log = logging.getLogger("mlgate.security")

# Routes where a bearer JWT is a CI job's OIDC token for a gate, not an mlgate API token.
OIDC_TOKEN_PATHS = frozenset({f"{MLGATE_API_PREFIX}{GATES_PATH}/promote"})

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})


# --- start-up checks ------------------------------------------------------------------------


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind_refusal(settings: Settings) -> str | None:
    """Why the server must not start on this address, or None."""
    if settings.auth or settings.allow_unauthenticated_public_bind or is_loopback(settings.host):
        return None
    return (
        f"refusing to listen on {settings.host} with authentication off: anyone who can reach "
        "this address could read and change every model. Turn authentication on "
        "(MLGATE_AUTH=true, with MLGATE_ADMIN_USERNAME/MLGATE_ADMIN_PASSWORD for the first "
        "administrator), bind 127.0.0.1, or set MLGATE_ALLOW_UNAUTHENTICATED_PUBLIC_BIND=true "
        "if something in front of mlgate does authenticate."
    )


async def bootstrap_admin(db: Database, settings: Settings) -> bool:
    """With auth on: make sure an administrator exists (from settings on first start).

    Raises :class:`NoAdministrator` when none exists and none is configured.
    """
    async with db.write() as s:
        created = await identity.ensure_admin(s, settings.admin_username, settings.admin_password)
    if created:
        log.warning("created the first administrator %r from settings", settings.admin_username)
    return created


def identity_lifespan(
    settings: Settings,
) -> Callable[[Litestar], Any]:
    """Lifespan: with auth on, refuse to start without an administrator (made from settings
    on first start)."""

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        if not settings.auth:
            yield
            return
        try:
            await bootstrap_admin(app.state["db"], settings)
        except NoAdministrator as exc:
            raise RuntimeError(f"mlgate refuses to start: {exc}") from None
        yield

    return lifespan


# --- authentication -------------------------------------------------------------------------


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


def client_address(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


def _basic_credentials(encoded: str) -> tuple[str, str]:
    try:
        raw = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidCredentials() from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        # requests encodes credentials as latin-1 when it can.
        text = raw.decode("latin-1")
    username, sep, password = text.partition(":")
    if not sep or not username:
        raise InvalidCredentials()
    return username, password


# The scope key of a request's shared read (see SharedRead).
SHARED_READ_SCOPE_KEY = "mlgate.shared_read"


class SharedRead:
    """One read transaction for a request's authorization checks, opened only when the guard
    must locate an object (a bearer token is read on the driver, without a session).

    Each transaction costs a pool checkout (with its ping on PostgreSQL), BEGIN and the end,
    about as much as the statements themselves; sharing one saves that when several checks
    run. The guard closes it before the handler runs, so no request holds it while it works;
    the middleware closes it in any case. Reopens lazily after a close.
    """

    def __init__(self, db: Database) -> None:
        self._db = db
        self._context: Any = None
        self._session: Any = None

    async def session(self) -> Any:
        if self._session is None:
            context = self._db.read()
            self._session = await context.__aenter__()
            self._context = context
        return self._session

    @asynccontextmanager
    async def use(self) -> AsyncIterator[Any]:
        """The shared session; on an error the transaction is ended and the error raised."""
        session = await self.session()
        try:
            yield session
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        context, self._context, self._session = self._context, None, None
        if context is not None:
            await context.__aexit__(None, None, None)


def shared_read(scope: Any) -> SharedRead | None:
    found = scope.get(SHARED_READ_SCOPE_KEY)
    return found if isinstance(found, SharedRead) else None


class AuthenticationMiddleware:
    """Resolve ``Authorization`` into a :class:`Principal` (installed only with auth on)."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.policy = identity.ThrottlePolicy(
            max_failures=settings.login_max_failures,
            window_seconds=settings.login_failure_window,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = _header(scope, b"authorization")
        principal = None
        read = SharedRead(scope["app"].state["db"])
        scope[SHARED_READ_SCOPE_KEY] = read  # type: ignore[literal-required]
        try:
            if header is not None and header.strip():
                principal = await self.authenticate(scope, header)
            elif web_session.is_web_path(scope["path"]) or scope.get(MLFLOW_UI_SCOPE_KEY):
                # MLflow's UI (forwarded from /mlflow/, where cross-site writes were refused)
                # runs in the browser, which holds only the UI's session cookie.
                cookie = web_session.cookie_value(scope, web_session.SESSION_COOKIE)
                if cookie:
                    principal = await self.authenticate_browser(scope, cookie)
            scope[PRINCIPAL_SCOPE_KEY] = principal  # type: ignore[literal-required]
            with bind_principal(principal):
                await self.app(scope, receive, send)
        finally:
            await read.close()

    async def authenticate_browser(self, scope: Scope, cookie: str) -> Principal | None:
        """A web UI session; a stale or unknown cookie just means "signed out"."""
        db: Database = scope["app"].state["db"]
        async with db.read() as s:
            found = await sessions.resolve_session(s, cookie)
        if found is None:
            return None
        scope[web_session.SESSION_CSRF_SCOPE_KEY] = found.csrf_secret  # type: ignore[literal-required]
        return found.principal

    async def authenticate(self, scope: Scope, header: str) -> Principal | None:
        db: Database = scope["app"].state["db"]
        client = client_address(scope)
        scheme, _, credentials = header.strip().partition(" ")
        if scheme.lower() == "basic":
            username, password = _basic_credentials(credentials)
            async with db.read() as s:
                outcome = await identity.authenticate_basic(
                    s, username, password, client, self.policy
                )
            if outcome.principal is None:
                await self._failed(db, username, client)
            if outcome.had_failures:
                async with db.write() as s:
                    await identity.clear_login_failures(s, username, client)
            return outcome.principal
        if scheme.lower() == "bearer":
            if scope["path"] in OIDC_TOKEN_PATHS and looks_like_jwt(credentials.strip()):
                # A CI job's OIDC token, checked by the gate it asks against the issuers that
                # gate trusts (gates.policies.oidc_trusts); it names no mlgate principal.
                return None
            # The token-authenticated request is the hot path (CI and production clients):
            # one statement on a pooled connection's driver, no session. Nothing is cached,
            # so a revoked token is refused at its next request on every replica. The guard
            # opens the shared read only if it must locate an object.
            async with db.driver_read() as r:
                principal = await identity.verify_token_at_once(r, credentials.strip())
            if principal is None:
                await self._failed(db, identity.BEARER_LOGIN, client)
            return principal
        raise InvalidCredentials()

    async def _failed(self, db: Database, username: str, client: str) -> NoReturn:
        async with db.write() as s:  # committed although the request fails
            retry_after = await identity.record_login_failure(s, username, client, self.policy)
        if retry_after is not None:
            raise LoginThrottled(retry_after)
        raise InvalidCredentials()
