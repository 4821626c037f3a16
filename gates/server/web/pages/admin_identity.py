"""Administration pages for identity (admin only): users (create, disable/enable, reset a
password), API tokens (create with the secret shown once, revoke) and grants (list, create,
delete, including target-scoped promotion rights).

Every route declares the same ``ADMIN`` permission as the identity API's admin routes, and
every form calls the identity service function the API calls, so validation, the last-admin
rule, session revocation and audit apply unchanged. A new token's secret is rendered once, in
the answer to the form's POST (``Cache-Control: no-store``); it never rides in a redirect, a
flash cookie or a log line, and no page shows it again.
"""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get, post

from gates.identity import service
from gates.identity.policy import RESOURCE_TYPES, ROLES
from gates.server.web.render import page, redirect_with_flash, with_query
from registry.artifacts.api import RAW_BODY_OPT
from tracking.core.auth import ADMIN, actor_name, current_principal, permission_opt
from tracking.core.clock import now_ms
from tracking.core.errors import InvalidParameter, MlflowError
from tracking.core.http import database

Req = Request[Any, Any, Any]

ADMIN_PAGE = permission_opt(ADMIN)
ADMIN_FORM = permission_opt(ADMIN, **{RAW_BODY_OPT: True})
MAX_FIELD = 1024
MAX_TOKEN_DAYS = 3650
USERS, TOKENS, GRANTS = "/admin/users", "/admin/tokens", "/admin/grants"


async def _fields(request: Req) -> dict[str, str]:
    """The form's text fields (passwords are not stripped; everything else is)."""
    form = await request.form()
    out: dict[str, str] = {}
    for key in form:
        value = form.get(key)
        if isinstance(value, str):
            out[key] = value if "password" in key else value.strip()
    return out


def _field(fields: dict[str, str], key: str, label: str, *, required: bool = True) -> str:
    value = fields.get(key, "")
    if len(value) > MAX_FIELD:
        raise InvalidParameter(f"{label} is at most {MAX_FIELD} characters.")
    if required and not value:
        raise InvalidParameter(f"{label} is required.")
    return value


def _refused(request: Req, target: str, exc: MlflowError) -> Response[Any]:
    if exc.status_code >= 500:
        raise exc
    return redirect_with_flash(request, target, "error", f"Refused: {exc.message} Nothing changed.")


def _page_token(request: Req) -> str | None:
    value = request.query_params.get("page_token")
    return value[:1000] if isinstance(value, str) and value else None


# --- users -------------------------------------------------------------------------------------


@get(USERS, opt=ADMIN_PAGE, include_in_schema=False)
async def users_page(request: Req) -> Response[Any]:
    async with database(request).read() as s:
        users, token = await service.list_users(s, None, _page_token(request))
    principal = current_principal(request)
    return page(
        request,
        "admin_users.html",
        users=users,
        me=principal.name if principal is not None else None,
        min_password=service.MIN_PASSWORD_LEN,
        next_url=with_query(USERS, page_token=token) if token else None,
    )


@post(f"{USERS}/create", opt=ADMIN_FORM, include_in_schema=False, status_code=303)
async def create_user(request: Req) -> Response[Any]:
    fields = await _fields(request)
    try:
        username = _field(fields, "username", "The username")
        password = _field(fields, "password", "The password", required=False) or None
        async with database(request).write() as s:
            user = await service.create_user(
                s,
                username,
                password,
                is_admin=fields.get("is_admin") == "true",
                actor=actor_name(request),
            )
    except MlflowError as exc:
        return _refused(request, USERS, exc)
    how = "" if password else " (no password: it signs in with API tokens only)"
    return redirect_with_flash(request, USERS, "notice", f"Created user {user.username}{how}.")


async def _update_user(request: Req, username: str, **change: Any) -> None:
    principal = current_principal(request)
    service.refuse_self_lockout(
        principal.name if principal is not None else None,
        username,
        is_admin=change.get("is_admin"),
        disabled=change.get("disabled"),
    )
    async with database(request).write() as s:
        await service.update_user(s, username, actor=actor_name(request), **change)


async def _check_own_password(request: Req, username: str, current: str | None) -> None:
    """Your own password, as in the API: only with the current one (a hijacked session
    cannot take the account)."""
    principal = current_principal(request)
    if principal is None or principal.name != username:
        return
    service.require_password_session(principal, "Changing a password")
    async with database(request).read() as s:
        await service.check_current_password(s, username, current)


@post(f"{USERS}/{{username:str}}/disable", opt=ADMIN_FORM, include_in_schema=False, status_code=303)
async def disable_user(request: Req, username: str) -> Response[Any]:
    try:
        await _update_user(request, username, disabled=True)
    except MlflowError as exc:
        return _refused(request, USERS, exc)
    return redirect_with_flash(
        request, USERS, "notice", f"Disabled {username}: signed out, API tokens revoked."
    )


@post(f"{USERS}/{{username:str}}/enable", opt=ADMIN_FORM, include_in_schema=False, status_code=303)
async def enable_user(request: Req, username: str) -> Response[Any]:
    try:
        await _update_user(request, username, disabled=False)
    except MlflowError as exc:
        return _refused(request, USERS, exc)
    return redirect_with_flash(request, USERS, "notice", f"Enabled {username}.")


@post(
    f"{USERS}/{{username:str}}/password", opt=ADMIN_FORM, include_in_schema=False, status_code=303
)
async def reset_password(request: Req, username: str) -> Response[Any]:
    fields = await _fields(request)
    try:
        password = _field(fields, "password", "The new password")
        if password != fields.get("password_again"):
            raise InvalidParameter("The two passwords differ.")
        await _check_own_password(request, username, fields.get("current_password"))
        await _update_user(request, username, password=password)
    except MlflowError as exc:
        return _refused(request, USERS, exc)
    return redirect_with_flash(
        request, USERS, "notice", f"Password of {username} reset; their browsers are signed out."
    )


# --- tokens ------------------------------------------------------------------------------------


async def _tokens_page(
    request: Req, *, created: Any = None, status_code: int = 200
) -> Response[Any]:
    username = request.query_params.get("username") or None
    async with database(request).read() as s:
        tokens, token = await service.list_tokens(s, username, None, _page_token(request))
    response = page(
        request,
        "admin_tokens.html",
        status_code=status_code,
        tokens=tokens,
        username=username or "",
        created=created,
        now=now_ms(),
        next_url=with_query(TOKENS, username=username, page_token=token) if token else None,
    )
    if created is not None:
        # The secret is in this answer only: no cache, no history copy.
        response.headers["Cache-Control"] = "no-store"
    return response


@get(TOKENS, opt=ADMIN_PAGE, include_in_schema=False)
async def tokens_page(request: Req) -> Response[Any]:
    return await _tokens_page(request)


def _expiry(fields: dict[str, str]) -> int | None:
    raw = _field(fields, "expires_days", "The lifetime in days", required=False)
    if not raw:
        return None
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_TOKEN_DAYS:
        raise InvalidParameter(
            f"The lifetime is a whole number of days from 1 to {MAX_TOKEN_DAYS}."
        )
    return now_ms() + int(raw) * 86_400_000


@post(f"{TOKENS}/create", opt=ADMIN_FORM, include_in_schema=False, status_code=200)
async def create_token(request: Req) -> Response[Any]:
    fields = await _fields(request)
    principal = current_principal(request)
    try:
        username = _field(fields, "username", "The user")
        name = _field(fields, "name", "The token name")
        expires_at = _expiry(fields)
        if principal is not None:
            service.require_password_session(principal, "Creating a token")
        async with database(request).write() as s:
            created = await service.create_token(
                s, username, name, expires_at=expires_at, actor=actor_name(request)
            )
    except MlflowError as exc:
        return _refused(request, TOKENS, exc)
    return await _tokens_page(request, created=created)


@post(f"{TOKENS}/{{token_id:str}}/revoke", opt=ADMIN_FORM, include_in_schema=False, status_code=303)
async def revoke_token(request: Req, token_id: str) -> Response[Any]:
    try:
        async with database(request).write() as s:
            revoked = await service.revoke_token(s, token_id, actor=actor_name(request))
    except MlflowError as exc:
        return _refused(request, TOKENS, exc)
    return redirect_with_flash(
        request,
        TOKENS,
        "notice",
        f"Revoked token {revoked.name} ({revoked.prefix}…) of {revoked.username}.",
    )


# --- grants ------------------------------------------------------------------------------------


@get(GRANTS, opt=ADMIN_PAGE, include_in_schema=False)
async def grants_page(request: Req) -> Response[Any]:
    username = request.query_params.get("username") or None
    async with database(request).read() as s:
        grants, token = await service.list_grants(s, username, None, _page_token(request))
    return page(
        request,
        "admin_grants.html",
        grants=grants,
        username=username or "",
        roles=ROLES,
        resource_types=RESOURCE_TYPES,
        next_url=with_query(GRANTS, username=username, page_token=token) if token else None,
    )


def _targets(raw: str) -> list[str] | None:
    """Comma- or space-separated stages and @aliases; empty means every target."""
    found = [part for part in raw.replace(",", " ").split() if part]
    return found or None


@post(f"{GRANTS}/create", opt=ADMIN_FORM, include_in_schema=False, status_code=303)
async def create_grant(request: Req) -> Response[Any]:
    fields = await _fields(request)
    try:
        username = _field(fields, "username", "The user")
        async with database(request).write() as s:
            grant = await service.create_grant(
                s,
                username,
                fields.get("resource_type"),
                _field(fields, "pattern", "The pattern"),
                fields.get("role"),
                _targets(_field(fields, "targets", "The targets", required=False)),
                actor=actor_name(request),
            )
    except MlflowError as exc:
        return _refused(request, GRANTS, exc)
    scope = f" on targets {', '.join(grant.targets)}" if grant.targets else ""
    return redirect_with_flash(
        request,
        GRANTS,
        "notice",
        f"Granted {grant.role} on {grant.resource_type} {grant.pattern}{scope} "
        f"to {grant.username}.",
    )


@post(f"{GRANTS}/{{grant_id:str}}/delete", opt=ADMIN_FORM, include_in_schema=False, status_code=303)
async def delete_grant(request: Req, grant_id: str) -> Response[Any]:
    try:
        async with database(request).write() as s:
            await service.delete_grant(s, grant_id, actor=actor_name(request))
    except MlflowError as exc:
        return _refused(request, GRANTS, exc)
    return redirect_with_flash(request, GRANTS, "notice", f"Deleted grant {grant_id}.")


ROUTE_HANDLERS = [
    users_page,
    create_user,
    disable_user,
    enable_user,
    reset_password,
    tokens_page,
    create_token,
    revoke_token,
    grants_page,
    create_grant,
    delete_grant,
]
