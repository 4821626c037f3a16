"""The UI's routes: every page module's handlers, its error pages, CSRF checks and static files."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote

from litestar import Request, Response
from litestar.datastructures import CacheControlHeader
from litestar.exceptions import HTTPException
from litestar.response import Redirect
from litestar.static_files import create_static_files_router
from litestar.types import ControllerRouterHandler

from gates.server.web import session
from gates.server.web.pages import (
    account,
    admin_gates,
    admin_identity,
    admin_webhooks,
    approvals,
    artifacts,
    audit_pages,
    logged_models,
    registry_actions,
    registry_pages,
    tracking_pages,
)
from gates.server.web.render import STATIC_DIR, page
from tracking.core.auth import PUBLIC, permission_opt
from tracking.core.errors import MlflowError, Unauthenticated, fault_error

Req = Request[Any, Any, Any]
log = logging.getLogger("mlgate.web")

# Page modules, in the order their routes are registered. Each exports ROUTE_HANDLERS.
PAGE_MODULES: tuple[Any, ...] = (
    account,
    registry_pages,
    registry_actions,
    approvals,
    tracking_pages,
    artifacts,
    logged_models,
    audit_pages,
    admin_identity,
    admin_gates,
    admin_webhooks,
)


def _wants_login(request: Req) -> Response[Any]:
    target = request.url.path
    if request.url.query:
        target = f"{target}?{request.url.query}"
    return Redirect(f"/login?next={quote(target, safe='')}", status_code=303)


def ui_error(request: Req, exc: Exception) -> Response[Any]:
    """UI routes answer errors with a page, not JSON; signed-out visitors go to the login."""
    if isinstance(exc, Unauthenticated) and request.method == "GET":
        return _wants_login(request)
    if not isinstance(exc, MlflowError | HTTPException):
        exc = fault_error(exc) or exc
    if isinstance(exc, MlflowError):
        status, code, message = exc.status_code, exc.error_code, exc.message
    elif isinstance(exc, HTTPException):
        status, code, message = exc.status_code, "BAD_REQUEST", str(exc.detail)
    else:
        log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        status, code, message = 500, "INTERNAL_ERROR", ""
    headers = exc.headers if isinstance(exc, MlflowError) else None
    if status == 503:
        message = "The server cannot reach its database right now. Try again in a moment."
    elif status == 507:
        message = "The server has run out of storage space."
    elif status >= 500:
        code, message = "INTERNAL_ERROR", "Something went wrong on the server."
    response = page(request, "error.html", status_code=status, code=code, message=message)
    if headers:
        response.headers.update(headers)
    return response


def web_route_handlers() -> list[ControllerRouterHandler]:
    handlers: list[ControllerRouterHandler] = []
    for module in PAGE_MODULES:
        handlers.extend(module.ROUTE_HANDLERS)
    return handlers


def static_router() -> ControllerRouterHandler:
    return create_static_files_router(
        path="/static",
        directories=[STATIC_DIR],
        opt=permission_opt(PUBLIC),
        include_in_schema=False,
        name="static",
        cache_control=CacheControlHeader(max_age=3600, private=True),
    )


UI_EXCEPTION_HANDLERS: dict[Any, Any] = {
    MlflowError: ui_error,
    HTTPException: ui_error,
    Exception: ui_error,
}
UI_GUARDS = [session.csrf_guard]
