"""Authentication and authorization for the whole app, wired by the composition root.

The shell is the only place that sees the three domains, so it is where a request's principal
(``gates.identity``) meets the objects it acts on (``tracking`` and ``registry`` lookups):

- :class:`AuthenticationMiddleware` reads ``Authorization`` exactly as the MLflow client sends
  it (Basic from MLFLOW_TRACKING_USERNAME/PASSWORD, Bearer from MLFLOW_TRACKING_TOKEN) and
  puts the principal in the request scope; bad credentials are a 401 on any route, and
  failed logins are throttled per user name and client (counters in the database).
- :func:`make_guard` builds the global guard. It refuses any route without a ``permission``
  in its ``opt`` (fail closed: a route nobody mapped to a rule cannot be reached), refuses
  non-JSON mutation bodies, then checks the declaration against the principal's grants,
  locating the experiment or registered model the request names. Search routes get a
  visibility scope instead, which their queries filter by.
- :func:`check_pointer_move` is the registry's ``before_pointer_move`` hook: inside the
  transaction, with the model row locked, it checks promote rights on every stage or alias a
  move changes, including the stage a version leaves.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, NoReturn

import msgspec
from litestar import Litestar, Request, Response
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from litestar.types import ASGIApp, Receive, Scope, Send

from gates.identity import service as identity
from gates.identity import sessions
from gates.identity.errors import (
    AuthenticationRequired,
    InvalidCredentials,
    LoginThrottled,
    NoAdministrator,
)
from gates.identity.policy import ACTIVE_STAGES, allows, canonical_target, visible_scope
from gates.policies.api import GATES_PATH
from gates.policies.oidc import looks_like_jwt
from gates.server.hardening import require_json_body
from gates.server.mlflow_ui.prefix import MLFLOW_UI_SCOPE_KEY
from gates.server.web import session as web_session
from registry import events
from registry import service as registry_service
from registry.api import MLGATE_API_PREFIX
from registry.artifacts.api import RAW_BODY_OPT, requested_artifact_path
from registry.artifacts.paths import in_frozen_area
from registry.events import PointerMove
from registry.uris import parse_model_uri
from tracking import service as tracking_service
from tracking.core.auth import (
    PRINCIPAL_SCOPE_KEY,
    PUBLIC,
    Permission,
    Principal,
    bind_principal,
    bound_principal,
    current_principal,
    set_visibility,
)
from tracking.core.db import Database
from tracking.core.errors import MlflowError, PermissionDenied
from tracking.core.settings import Settings
from tracking.service import ExperimentIdentity

log = logging.getLogger("mlgate.security")

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})
# Routes where a bearer JWT is a CI job's OIDC token for a gate, not an mlgate API token.
OIDC_TOKEN_PATHS = frozenset({f"{MLGATE_API_PREFIX}{GATES_PATH}/promote"})
# Which grants a resource kind is governed by.
_GRANT_TYPE = {
    "experiment": "experiment",
    "run": "experiment",
    "logged_model": "experiment",
    "artifact": "experiment",
    "registered_model": "registered_model",
    "model_version": "registered_model",
}
_ARTIFACT_ACTION = {"read": "read", "edit": "edit", "delete": "delete"}


class _Unknown:
    """A located value that cannot name anything (a number where a name goes, a list…)."""


UNKNOWN = _Unknown()
Located = str | _Unknown


# --- start-up checks -----------------------------------------------------------------------


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
    """Lifespan: bootstrap the administrator and install the pointer-move hook (auth on)."""

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        if not settings.auth:
            yield
            return
        try:
            await bootstrap_admin(app.state["db"], settings)
        except NoAdministrator as exc:
            raise RuntimeError(f"mlgate refuses to start: {exc}") from None
        events.remove_hook(check_pointer_move)
        events.before_pointer_move(check_pointer_move)
        try:
            yield
        finally:
            events.remove_hook(check_pointer_move)

    return lifespan


# --- authentication ------------------------------------------------------------------------


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
    """One read transaction for a request's authentication and its guard's authorization.

    Each transaction costs a pool checkout (with its ping on PostgreSQL), BEGIN and the end,
    about as much as the statements themselves; sharing one saves that on every
    authenticated request. The guard closes it before the handler runs, so no request holds
    it while it works; the middleware closes it in any case. Reopens lazily after a close.
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
                principal = await self.authenticate(scope, header, read)
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

    async def authenticate(self, scope: Scope, header: str, read: SharedRead) -> Principal | None:
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
            # The read stays open for the guard (the token-authenticated request is the hot
            # path: CI and production clients); Basic keeps its own, as argon2 may run.
            async with read.use() as s:
                principal = await identity.verify_token(s, credentials.strip())
            if principal is None:
                await read.close()
                await self._failed(db, identity.BEARER_LOGIN, client)
            return principal
        raise InvalidCredentials()

    async def _failed(self, db: Database, username: str, client: str) -> NoReturn:
        async with db.write() as s:  # committed although the request fails
            retry_after = await identity.record_login_failure(s, username, client, self.policy)
        if retry_after is not None:
            raise LoginThrottled(retry_after)
        raise InvalidCredentials()


# --- authorization -------------------------------------------------------------------------


def make_guard(
    settings: Settings,
) -> Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], Coroutine[Any, Any, None]]:
    """The global guard (see the module doc)."""

    async def guard(
        connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
    ) -> None:
        read = shared_read(connection.scope)
        try:
            await check(connection, handler, read)
        finally:
            if read is not None:  # the handler runs without the authentication's read
                await read.close()

    async def check(
        connection: ASGIConnection[Any, Any, Any, Any],
        handler: BaseRouteHandler,
        read: SharedRead | None,
    ) -> None:
        permission = handler.opt.get("permission")
        if not isinstance(permission, Permission):
            # Refused with auth off too, so a route added without a rule fails every test.
            log.error("route %s has no permission declaration: refused", connection.url.path)
            raise PermissionDenied("This route declares no permission rule and is refused.")
        if not handler.opt.get(RAW_BODY_OPT):
            require_json_body(connection.scope)
        if not settings.auth or permission.resource == "public":
            return
        principal = current_principal(connection)
        if principal is None:
            raise AuthenticationRequired()
        if principal.is_admin or permission.resource == "authenticated":
            return
        if permission.resource == "admin":
            raise PermissionDenied("This operation needs an administrator.")
        assert isinstance(connection, Request)
        await Authorizer(connection, principal, read).check(permission)

    return guard


class Authorizer:
    """Checks one request's permission declaration against a non-admin principal."""

    def __init__(
        self,
        request: Request[Any, Any, Any],
        principal: Principal,
        read: SharedRead | None = None,
    ) -> None:
        self.request = request
        self.principal = principal
        self.read = read
        self._body: dict[str, Any] | None = None

    async def check(self, permission: Permission) -> None:
        grant_type = _GRANT_TYPE[permission.resource]
        if permission.filtered:
            scope = visible_scope(self.principal.grants, grant_type)
            set_visibility(self.request.scope, grant_type, scope)  # type: ignore[arg-type]
            return
        db: Database = self.request.app.state["db"]
        async with self.read.use() if self.read is not None else db.read() as s:
            await self._check(s, permission)
            for extra in permission.also:
                await self._check(s, extra)
            if permission.sources:
                await self._check_sources(s)

    # -- locating the object -------------------------------------------------------------------

    async def _json_body(self) -> dict[str, Any]:
        if self._body is None:
            try:
                decoded = msgspec.json.decode(await self.request.body())
            except msgspec.DecodeError:
                decoded = None
            self._body = decoded if isinstance(decoded, dict) else {}
        return self._body

    async def _field(self, name: str) -> Any:
        if name in self.request.path_params:
            return self.request.path_params[name]
        if self.request.method in ("GET", "HEAD"):
            # A repeated parameter (``run_id=a&run_id=b``, MLflow UI's bulk routes) names
            # every one of its values, and each is checked.
            values = self.request.query_params.getall(name, [])
            return values if len(values) > 1 else self.request.query_params.get(name)
        return (await self._json_body()).get(name)

    async def locate(self, permission: Permission) -> list[Located]:
        """The values the declaration's locator finds, in the handler's order of preference."""
        for name in permission.locators:
            if "[]." in name:
                list_name, _, item_name = name.partition("[].")
                items = await self._field(list_name)
                found = [
                    _text(item.get(item_name))
                    for item in (items if isinstance(items, list) else [])
                    if isinstance(item, dict) and item.get(item_name) not in (None, "")
                ]
                if found:
                    return list(dict.fromkeys(found))
                continue
            value = await self._field(name)
            if isinstance(value, list):
                named = [_text(item) for item in value if item not in (None, "")]
                if named:
                    return list(dict.fromkeys(named))
                continue
            if value not in (None, ""):
                return [_text(value)]
        return [permission.default] if permission.default is not None else []

    # -- checking ------------------------------------------------------------------------------

    async def check_value(self, permission: Permission, value: str) -> None:
        """Check ``permission`` on one object a handler names itself (MLflow UI's GraphQL)."""
        db: Database = self.request.app.state["db"]
        async with db.read() as s:
            await self._check_one(s, permission, value)

    async def _check(self, s: Any, permission: Permission) -> None:
        if permission.resource == "artifact":
            await self._check_artifact(s, permission)
            return
        values = await self.locate(permission)
        if not values:
            if permission.optional:
                return
            values = [UNKNOWN]
        for value in values:
            await self._check_one(s, permission, value)

    async def _check_one(self, s: Any, permission: Permission, value: Located) -> None:
        resource = permission.resource
        action = permission.action
        if resource in ("registered_model", "model_version"):
            name = self._model_name(permission, value)
            target = await self._target(permission)
            if allows(self.principal.grants, "registered_model", name, None, action, target):
                return
            what = f"registered model '{_shown(value)}'"
            if target is not None:
                what += f" (target {target})"
            raise _denied(action, what)
        experiment = await self._experiment_of(s, resource, permission, value)
        name = experiment.name if experiment else None
        ident = experiment.experiment_id if experiment else None
        if permission.by_name and experiment is None and isinstance(value, str):
            name = value  # not created yet: name grants decide (e.g. experiments/create)
        if allows(self.principal.grants, "experiment", name, ident, action):
            return
        raise _denied(action, f"{resource.replace('_', ' ')} '{_shown(value)}'")

    @staticmethod
    def _model_name(permission: Permission, value: Located) -> str | None:
        if not isinstance(value, str):
            return None
        if not permission.by_uri:
            return value
        try:
            return parse_model_uri(value).name
        except MlflowError:
            return None

    async def _target(self, permission: Permission) -> str | None:
        if permission.target is None:
            return None
        raw = await self._field(permission.target)
        if not isinstance(raw, str) or not raw:
            return None
        return canonical_target(f"@{raw}" if permission.target == "alias" else raw)

    async def _experiment_of(
        self, s: Any, resource: str, permission: Permission, value: Located
    ) -> ExperimentIdentity | None:
        if not isinstance(value, str):
            return None
        if resource == "experiment":
            if permission.by_name:
                return await tracking_service.experiment_identity_by_name(s, value)
            return await tracking_service.experiment_identity(s, value)
        if resource == "run":
            return (await tracking_service.experiments_of_runs(s, [value])).get(value)
        if resource == "logged_model":
            return (await tracking_service.experiments_of_logged_models(s, [value])).get(value)
        raise PermissionDenied(f"No rule for resource kind {resource!r}.")

    async def _check_artifact(self, s: Any, permission: Permission) -> None:
        path = requested_artifact_path(self.request)
        action = _ARTIFACT_ACTION[permission.action]
        experiment = None
        if path.parts:
            experiment = await tracking_service.experiment_identity(s, path.parts[0])
        name = experiment.name if experiment else None
        ident = experiment.experiment_id if experiment else None
        # The frozen copies of version files belong to no experiment: an experiment grant (even
        # '*', which covers "no experiment") never opens them; the model's readers do, below.
        frozen = in_frozen_area(path)
        if not frozen and allows(self.principal.grants, "experiment", name, ident, action):
            return
        if action == "read":
            # A registered version's files may be downloaded by the model's readers (loading
            # models:/name/Production) without access to the experiment that logged them.
            for model in await registry_service.models_storing(s, path):
                if allows(self.principal.grants, "registered_model", model, None, "read"):
                    return
        raise _denied(action, f"artifact '{path.posix or '/'}'")

    async def _check_sources(self, s: Any) -> None:
        body = await self._json_body()
        runs, models, registered = registry_service.source_references(
            _str_or_none(body.get("source")),
            _str_or_none(body.get("run_id")),
            _str_or_none(body.get("model_id")),
        )
        for name in sorted(registered):  # a copy of a registered version
            await self._check_one(s, Permission("registered_model", "read"), name)
        for run_id in sorted(runs):
            await self._check_one(s, Permission("run", "read"), run_id)
        for model_id in sorted(models):
            await self._check_one(s, Permission("logged_model", "read"), model_id)


def _text(value: Any) -> Located:
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return UNKNOWN


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _shown(value: Located) -> str:
    text = value if isinstance(value, str) else "?"
    return text if len(text) <= 200 else f"{text[:200]}..."


def _denied(action: str, what: str) -> PermissionDenied:
    return PermissionDenied(f"Permission denied: '{action}' on {what}.")


# --- the registry's pointer-move hook ------------------------------------------------------


async def check_pointer_move(session: Any, move: PointerMove) -> None:
    """Promote rights on every pointer a move changes, checked with the model row locked.

    The guard already checked the request's stated target; only here is the version's
    current stage known for certain, so leaving Staging or Production (a demotion changes
    what ``models:/name/Production`` loads) is checked here, as are the pointers a version
    or model deletion takes along. Moves outside a request (no principal) are the system's.
    """
    principal = bound_principal()
    if principal is None or principal.is_admin:
        return
    targets: list[str] = []
    if move.pointer_kind == "alias":
        targets.append(f"@{move.pointer}")
    elif move.action == "transition":
        targets.append(move.pointer)
        if move.from_stage in ACTIVE_STAGES and move.from_stage != move.pointer:
            targets.append(move.from_stage)
    elif move.pointer in ACTIVE_STAGES:
        targets.append(move.pointer)
    for target in targets:
        if not allows(principal.grants, "registered_model", move.name, None, "promote", target):
            raise PermissionDenied(
                f"Permission denied: 'promote' on registered model '{move.name}' (target {target})."
            )


def mark_generated_routes_public(app: Litestar) -> None:
    """Litestar answers OPTIONS on every path with an ``Allow`` header only: public.

    Its generated handler lists the methods the path had when its first handler was
    registered (``experiments/search`` said ``OPTIONS, POST`` and forgot ``GET``), so each one
    is re-pointed at a function that reads the route's final method set.
    """
    for route in app.routes:
        methods = ", ".join(sorted(getattr(route, "methods", ())))
        for handler in getattr(route, "route_handlers", ()):
            generated = handler.handler_name == "options_handler"
            if (
                generated
                and "permission" not in handler.opt
                and handler.http_methods == {"OPTIONS"}
            ):
                handler.opt["permission"] = PUBLIC
                if hasattr(handler, "_fn"):
                    handler._fn = _allow_responder(methods)


def _allow_responder(methods: str) -> Callable[[Scope], Response[None]]:
    def options_handler(scope: Scope) -> Response[None]:
        return Response(content=None, status_code=204, headers={"Allow": methods})

    return options_handler
