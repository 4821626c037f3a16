"""Rendering pages: the Jinja environment, its filters, and the headers every page carries."""

from __future__ import annotations

import base64
import binascii
import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from litestar import Request, Response
from litestar.response import Redirect

from gates.identity.policy import allows
from gates.server.web import session
from tracking.core.auth import Principal, current_principal
from tracking.core.settings import Settings

STATIC_DIR = Path(__file__).parent / "static"
VENDOR_DIR = STATIC_DIR / "vendor"
# Pages run only the UI's own scripts and styles, served from this origin. JSON data for the
# charts sits in <script type="application/json"> blocks, which are data, never executed.
PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'"
)
HTML = "text/html; charset=utf-8"
# Post/redirect/get messages ride in a short-lived cookie, never in the URL: a link someone
# sends cannot make a page show words the server did not say.
FLASH_COOKIE = "mlgate_flash"
FLASH_KINDS = ("notice", "error")
FLASH_MAX = 1000


def format_time(ms: int | None) -> str:
    if ms is None:
        return ""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def format_number(value: Any) -> str:
    """Metric values for people: integers as such, floats to 6 significant digits."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return f"{value:.6g}"
    return str(value)


def format_bytes(size: int | None) -> str:
    if size is None:
        return ""
    amount = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if amount < 1024 or unit == "GiB":
            return f"{int(amount)} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    return str(size)


def with_query(target: str, /, **params: Any) -> str:
    """``target?a=1&b=2`` for the params that are set (lists repeat the key)."""
    pairs: list[tuple[str, str]] = []
    for key, value in params.items():
        if value is None or value == "":
            continue
        if isinstance(value, list | tuple):
            pairs.extend((key, str(item)) for item in value)
        else:
            pairs.append((key, str(value)))
    return f"{target}?{urlencode(pairs)}" if pairs else target


def may_on_model(
    principal: Principal | None, action: str, model: str, target: str | None = None
) -> bool:
    """Whether to offer a form: the guard's own rule for ``action`` on ``model`` (auth off or
    an admin: everything). Offering is all this decides; the service checks again on submit."""
    if principal is None or principal.is_admin:
        return True
    return allows(principal.grants, "registered_model", model, None, action, target)


def may_promote_somewhere(principal: Principal | None, model: str) -> bool:
    """Whether any of the principal's grants lets them move some pointer of ``model``."""
    if principal is None or principal.is_admin:
        return True
    return any(
        allows([rule], "registered_model", model, None, "promote", (rule.targets or (None,))[0])
        for rule in principal.grants
    )


ENV = Environment(
    loader=PackageLoader("gates.server.web", "templates"),
    autoescape=select_autoescape(["html"]),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
ENV.filters["ts"] = format_time
ENV.filters["num"] = format_number
ENV.filters["bytes"] = format_bytes
ENV.globals["with_query"] = with_query
ENV.globals["may_on_model"] = may_on_model
ENV.globals["may_promote_somewhere"] = may_promote_somewhere


def redirect_with_flash(
    request: Request[Any, Any, Any], target: str, kind: str, text: str
) -> Response[Any]:
    """A 303 to ``target`` (a path on this server) that shows ``text`` on the page it lands on."""
    payload = json.dumps({"kind": kind, "text": text[:FLASH_MAX]}).encode()
    response: Response[Any] = Redirect(target, status_code=303)
    response.set_cookie(
        FLASH_COOKIE,
        base64.urlsafe_b64encode(payload).decode(),
        path="/",
        max_age=120,
        httponly=True,
        secure=settings_of(request).ui_cookie_secure,
        samesite="strict",
    )
    return response


def take_flash(request: Request[Any, Any, Any]) -> dict[str, str] | None:
    """The pending flash message of this browser, if any (well-formed ones only)."""
    raw = session.cookie_value(request.scope, FLASH_COOKIE)
    if not raw:
        return None
    try:
        found = json.loads(base64.urlsafe_b64decode(raw.encode()))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(found, dict):
        return None
    kind, text = found.get("kind"), found.get("text")
    if kind not in FLASH_KINDS or not isinstance(text, str):
        return None
    return {"kind": kind, "text": text[:FLASH_MAX]}


def settings_of(request: Request[Any, Any, Any]) -> Settings:
    found: Settings = request.app.state["settings"]
    return found


def page(
    request: Request[Any, Any, Any],
    template: str,
    *,
    status_code: int = 200,
    **context: Any,
) -> Response[str]:
    """Render ``template`` as a full page for this request's user."""
    settings = settings_of(request)
    principal = current_principal(request)
    csrf = session.csrf_token(request)
    flash = take_flash(request)
    body = ENV.get_template(template).render(
        request_path=request.url.path,
        principal=principal,
        auth_on=settings.auth,
        csrf_token=csrf,
        charts_available=(VENDOR_DIR / "uPlot.iife.min.js").is_file(),
        flash=flash,
        **context,
    )
    response = Response(
        content=body,
        status_code=status_code,
        media_type=HTML,
        # same-origin (not the API's no-referrer): with no-referrer, browsers send
        # "Origin: null" on form posts, and the CSRF guard needs the real origin.
        headers={"Content-Security-Policy": PAGE_CSP, "Referrer-Policy": "same-origin"},
    )
    session.set_csrf_cookie_if_new(request, response, settings)
    if session.cookie_value(request.scope, FLASH_COOKIE) is not None:
        response.delete_cookie(FLASH_COOKIE, path="/")
    return response


def render_fragment(template: str, **context: Any) -> str:
    return ENV.get_template(template).render(**context)
