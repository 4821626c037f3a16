"""What a caller may do: the route guard and the grant checks behind it, wired by the shell.

The shell is the only place that sees the three domains, so it is where a request's principal
(found by :mod:`gates.server.authentication`) meets the objects it acts on (``tracking`` and
``registry`` lookups):

- :func:`permission_middleware` is the global guard. It refuses any route without a ``permission``
  in its ``opt`` (fail closed: a route nobody mapped to a rule cannot be reached), refuses
  non-JSON mutation bodies, then checks the declaration against the principal's grants,
  locating the experiment or registered model the request names. Search routes get a
  visibility scope instead, which their queries filter by.
- Pointer moves are checked again inside the transaction by the registry guard in
  :mod:`gates.server.hooks`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import msgspec
from litestar import Litestar, Request, Response
from litestar.handlers.base import BaseRouteHandler
from litestar.types import ASGIApp, Receive, Scope, Send

from gates.identity.errors import AuthenticationRequired
from gates.identity.policy import allows, canonical_target, visible_scope
from gates.server.authentication import SharedRead, shared_read
from gates.server.hardening import require_json_body
from registry import service as registry_service
from registry.artifacts.api import RAW_BODY_OPT, requested_artifact_path
from registry.artifacts.paths import in_frozen_area
from registry.uris import parse_model_uri
from tracking import service as tracking_service
from tracking.core.auth import (
    PRINCIPAL_SCOPE_KEY,
    PUBLIC,
    Permission,
    Principal,
    set_visibility,
)
from tracking.core.db import Database
from tracking.core.errors import MlflowError, PermissionDenied
from tracking.core.settings import Settings
from tracking.service import ExperimentIdentity

log = logging.getLogger("mlgate.security")


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


# --- authorization -------------------------------------------------------------------------


def permission_middleware(settings: Settings) -> Callable[[ASGIApp], ASGIApp]:
    """The global guard (see the module doc), as the innermost application middleware.

    It runs where a Litestar guard would: after routing and authentication, before the
    route's own guards (the web UI's CSRF check) and the handler, and its refusals go through
    the route's exception handlers. It is not a Litestar guard because Litestar copies the
    route handler for every guard it calls, which cost more than the check itself.
    """

    def middleware(app: ASGIApp) -> ASGIApp:
        async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
            read = shared_read(scope)
            try:
                await check(scope, receive, send, read)
            finally:
                if read is not None:  # the handler runs without the guard's read
                    await read.close()
            await app(scope, receive, send)

        return guarded

    async def check(scope: Scope, receive: Receive, send: Send, read: SharedRead | None) -> None:
        handler: BaseRouteHandler = scope["route_handler"]
        permission = handler.opt.get("permission")
        if not isinstance(permission, Permission):
            # Refused with auth off too, so a route added without a rule fails every test.
            log.error("route %s has no permission declaration: refused", scope["path"])
            raise PermissionDenied("This route declares no permission rule and is refused.")
        if not handler.opt.get(RAW_BODY_OPT):
            require_json_body(scope)
        if not settings.auth or permission.resource == "public":
            return
        principal = scope.get(PRINCIPAL_SCOPE_KEY)
        if not isinstance(principal, Principal):
            raise AuthenticationRequired()
        if principal.is_admin or permission.resource == "authenticated":
            return
        if permission.resource == "admin":
            raise PermissionDenied("This operation needs an administrator.")
        assert scope["type"] == "http"
        request: Request[Any, Any, Any] = Request(scope, receive, send)
        await Authorizer(request, principal, read).check(permission)

    return middleware


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
