"""Signing in and out, and the home page."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get, post
from litestar.response import Redirect

from gates.identity import service as identity
from gates.identity.errors import LoginThrottled
from gates.identity.service import web_sessions as sessions
from gates.server.authentication import client_address
from gates.server.web import session
from gates.server.web.render import page, settings_of
from registry.artifacts.api import RAW_BODY_OPT
from tracking.core.auth import PUBLIC, current_principal, permission_opt
from tracking.core.http import database

Req = Request[Any, Any, Any]


@get("/", opt=permission_opt(PUBLIC), include_in_schema=False)
async def home(request: Req) -> Response[Any]:
    settings = settings_of(request)
    if settings.auth and current_principal(request) is None:
        return Redirect("/login", status_code=303)
    return Redirect("/models", status_code=303)


@get("/login", opt=permission_opt(PUBLIC), include_in_schema=False)
async def login_form(request: Req, next: str | None = None) -> Response[Any]:
    settings = settings_of(request)
    if not settings.auth or current_principal(request) is not None:
        return Redirect(session.safe_next(next), status_code=303)
    return page(request, "login.html", next=session.safe_next(next), error=None, username="")


@post(
    "/login",
    opt=permission_opt(PUBLIC, **{RAW_BODY_OPT: True}),
    include_in_schema=False,
    status_code=303,
)
async def login(request: Req) -> Response[Any]:
    settings = settings_of(request)
    form = await request.form()
    target = session.safe_next(_text(form.get("next")))
    if not settings.auth:
        return Redirect(target, status_code=303)
    username = _text(form.get("username"))
    password = _text(form.get("password"))
    client = client_address(request.scope)
    policy = identity.ThrottlePolicy(
        max_failures=settings.login_max_failures,
        window_seconds=settings.login_failure_window,
    )
    db = database(request)
    try:
        async with db.read() as s:
            outcome = await identity.authenticate_basic(s, username, password, client, policy)
    except LoginThrottled as exc:
        return _login_failed(request, username, target, exc.message, 429)
    if outcome.principal is None:
        async with db.write() as s:
            retry = await identity.record_login_failure(s, username, client, policy)
        message = "Wrong user name or password."
        if retry is not None:
            message = f"Too many failed sign-ins. Try again in {retry} seconds."
        return _login_failed(request, username, target, message, 401 if retry is None else 429)
    async with db.write() as s:
        if outcome.had_failures:
            await identity.clear_login_failures(s, username, client)
        created = await sessions.start_session(
            s, outcome.principal.user_id, settings.ui_session_hours * 3600
        )
    response: Response[Any] = Redirect(target, status_code=303)
    session.set_session_cookie(response, created.secret, settings)
    return response


def _login_failed(
    request: Req, username: str, target: str, message: str, status: int
) -> Response[Any]:
    return page(
        request, "login.html", status_code=status, next=target, error=message, username=username
    )


@post(
    "/logout",
    opt=permission_opt(PUBLIC, **{RAW_BODY_OPT: True}),
    include_in_schema=False,
    status_code=303,
)
async def logout(request: Req) -> Response[Any]:
    settings = settings_of(request)
    secret = session.cookie_value(request.scope, session.SESSION_COOKIE)
    if secret:
        async with database(request).write() as s:
            await sessions.end_session(s, secret)
    response: Response[Any] = Redirect("/login" if settings.auth else "/", status_code=303)
    session.clear_session_cookie(response, settings)
    return response


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


ROUTE_HANDLERS = [home, login_form, login, logout]
