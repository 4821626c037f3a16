"""Litestar controllers for mlgate's identity API under ``/api/2.0/mlgate``: users, tokens,
grants and ``whoami``. Typed request and response structs feed the OpenAPI document."""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

import msgspec
from litestar import Request, delete, get, patch, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import Parameter

from gates.identity import service
from gates.identity.errors import NotAllowed
from gates.identity.schemas import (
    CreateGrant,
    CreateToken,
    CreateUser,
    Empty,
    ErrorOut,
    GrantList,
    GrantRef,
    GrantResponse,
    RevokeToken,
    TokenCreated,
    TokenList,
    TokenResponse,
    UpdateUser,
    UserList,
    UserRef,
    UserResponse,
    WhoAmI,
)
from tracking.core.auth import (
    ADMIN,
    AUTHENTICATED,
    Principal,
    actor_name,
    current_principal,
    permission_opt,
)
from tracking.core.errors import InvalidParameter
from tracking.core.http import database
from tracking.core.wire import refuse_beyond_int64, refuse_nul

Req = Request[Any, Any, Any]
T = TypeVar("T")

MaxResults = Annotated[
    int | None, Parameter(ge=1, le=service.MAX_PAGE, description="Page size (default 100).")
]
PageToken = Annotated[
    str | None, Parameter(max_length=1000, description="next_page_token of the previous page.")
]
UsernameQuery = Annotated[
    str,
    Parameter(min_length=1, max_length=256, pattern=r"^[A-Za-z0-9][A-Za-z0-9._@+\-]*$"),
]
OptionalUsernameQuery = Annotated[
    str | None,
    Parameter(min_length=1, max_length=256, pattern=r"^[A-Za-z0-9][A-Za-z0-9._@+\-]*$"),
]

_DESCRIPTIONS = {
    400: "Invalid request (INVALID_PARAMETER_VALUE, RESOURCE_ALREADY_EXISTS).",
    401: "No or invalid credentials (UNAUTHENTICATED).",
    403: "Not allowed (PERMISSION_DENIED).",
    404: "No such user, token or grant (RESOURCE_DOES_NOT_EXIST).",
    413: "Request body too large (REQUEST_LIMIT_EXCEEDED).",
    415: "Request body is not application/json.",
    429: "Too many failed logins (REQUEST_LIMIT_EXCEEDED); see Retry-After.",
}


def _errors(*extra: int) -> dict[int, ResponseSpec]:
    codes = sorted({400, 401, 403, 413, 415, 429, *extra})
    return {
        code: ResponseSpec(data_container=ErrorOut, description=_DESCRIPTIONS[code])
        for code in codes
    }


async def _strict(request: Req, type_: type[T]) -> T:
    """The body decoded strictly: Litestar's own decoding (which feeds the OpenAPI document)
    coerces, e.g. ``0`` into ``false``; the identity API takes exactly what its schema says."""
    body = await request.body()
    refuse_nul(body)
    try:
        decoded = msgspec.json.decode(body, type=type_)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise InvalidParameter(f"Invalid request: {exc}") from None
    refuse_beyond_int64(decoded)
    return decoded


def _is_admin(principal: Principal | None) -> bool:
    # With authentication off there is no principal and the local operator may do anything.
    return principal is None or principal.is_admin


def _check_self_or_admin(principal: Principal | None, username: str, what: str) -> None:
    if not _is_admin(principal) and (principal is None or principal.name != username):
        raise NotAllowed(f"Only an administrator may {what} another user.")


# --- whoami ------------------------------------------------------------------------------------


@get("/whoami", opt=permission_opt(AUTHENTICATED), responses=_errors(), summary="Who am I")
async def whoami(request: Req) -> WhoAmI:
    principal = current_principal(request)
    auth_enabled = bool(request.app.state["settings"].auth)
    if principal is None:
        return WhoAmI(
            username=actor_name(request),
            is_admin=not auth_enabled,
            auth_enabled=auth_enabled,
            authenticated_by="none",
            grants=[],
        )
    async with database(request).read() as s:
        grants = await service.grants_of(s, principal.user_id)
    return WhoAmI(
        username=principal.name,
        is_admin=principal.is_admin,
        auth_enabled=auth_enabled,
        authenticated_by="token" if principal.kind == "token" else "basic",
        grants=grants,
        token_id=None if principal.token_id is None else str(principal.token_id),
        token_name=principal.token_name,
    )


# --- users -------------------------------------------------------------------------------------


@post("/users/create", status_code=200, opt=permission_opt(ADMIN), responses=_errors())
async def create_user(request: Req, data: CreateUser) -> UserResponse:
    data = await _strict(request, CreateUser)
    async with database(request).write() as s:
        user = await service.create_user(
            s, data.username, data.password, is_admin=data.is_admin, actor=actor_name(request)
        )
    return UserResponse(user=user)


@get("/users/get", opt=permission_opt(ADMIN), responses=_errors(404))
async def get_user(request: Req, username: UsernameQuery) -> UserResponse:
    async with database(request).read() as s:
        return UserResponse(user=await service.get_user(s, username))


@get("/users/list", opt=permission_opt(ADMIN), responses=_errors())
async def list_users(
    request: Req, max_results: MaxResults = None, page_token: PageToken = None
) -> UserList:
    async with database(request).read() as s:
        users, token = await service.list_users(s, max_results, page_token)
    return UserList(users=users, next_page_token=token)


@patch(
    "/users/update",
    status_code=200,
    # Users may change their own password (with the password, not a token); the rest is admin.
    opt=permission_opt(AUTHENTICATED),
    responses=_errors(404),
)
async def update_user(request: Req, data: UpdateUser) -> UserResponse:
    data = await _strict(request, UpdateUser)
    principal = current_principal(request)
    is_self = principal is not None and data.username == principal.name
    if not _is_admin(principal) and (not is_self or data.is_admin is not None or data.disabled):
        raise NotAllowed("Only an administrator may change other users or admin rights.")
    async with database(request).write() as s:
        if is_self:
            assert principal is not None
            service.refuse_self_lockout(
                principal.name, data.username, is_admin=data.is_admin, disabled=data.disabled
            )
            if data.password is not None:
                service.require_password_session(principal, "Changing a password")
                await service.check_current_password(s, principal.name, data.current_password)
        user = await service.update_user(
            s,
            data.username,
            password=data.password,
            is_admin=data.is_admin,
            disabled=data.disabled,
            actor=actor_name(request),
        )
    return UserResponse(user=user)


@delete("/users/delete", status_code=200, opt=permission_opt(ADMIN), responses=_errors(404))
async def delete_user(request: Req, data: UserRef) -> Empty:
    data = await _strict(request, UserRef)
    principal = current_principal(request)
    if principal is not None and principal.name == data.username:
        raise NotAllowed("You cannot delete yourself; another administrator can.")
    async with database(request).write() as s:
        await service.delete_user(s, data.username, actor=actor_name(request))
    return Empty()


# --- tokens ------------------------------------------------------------------------------------


@post("/tokens/create", status_code=200, opt=permission_opt(AUTHENTICATED), responses=_errors(404))
async def create_token(request: Req, data: CreateToken) -> TokenCreated:
    """Create an API token; the response is the only time its secret is shown."""
    data = await _strict(request, CreateToken)
    principal = current_principal(request)
    username = data.username or (principal.name if principal is not None else None)
    if username is None:
        raise InvalidParameter("Missing value for required parameter 'username'.")
    _check_self_or_admin(principal, username, "create tokens for")
    if principal is not None:
        # A token must not mint further tokens: a leaked one could outlive its own revocation.
        service.require_password_session(principal, "Creating a token")
    async with database(request).write() as s:
        return await service.create_token(
            s, username, data.name, expires_at=data.expires_at, actor=actor_name(request)
        )


@get("/tokens/list", opt=permission_opt(AUTHENTICATED), responses=_errors(404))
async def list_tokens(
    request: Req,
    username: OptionalUsernameQuery = None,
    max_results: MaxResults = None,
    page_token: PageToken = None,
) -> TokenList:
    """Your tokens; administrators see everyone's (or one user's with ``username``)."""
    principal = current_principal(request)
    if not _is_admin(principal):
        assert principal is not None
        if username is not None and username != principal.name:
            raise NotAllowed("Only an administrator may list other users' tokens.")
        username = principal.name
    async with database(request).read() as s:
        tokens, token = await service.list_tokens(s, username, max_results, page_token)
    return TokenList(tokens=tokens, next_page_token=token)


@post("/tokens/revoke", status_code=200, opt=permission_opt(AUTHENTICATED), responses=_errors(404))
async def revoke_token(request: Req, data: RevokeToken) -> TokenResponse:
    data = await _strict(request, RevokeToken)
    principal = current_principal(request)
    async with database(request).write() as s:
        owner = await service.token_owner(s, data.token_id)
        _check_self_or_admin(principal, owner, "revoke tokens of")
        revoked = await service.revoke_token(s, data.token_id, actor=actor_name(request))
        return TokenResponse(token=revoked)


# --- grants ------------------------------------------------------------------------------------


@post("/grants/create", status_code=200, opt=permission_opt(ADMIN), responses=_errors(404))
async def create_grant(request: Req, data: CreateGrant) -> GrantResponse:
    data = await _strict(request, CreateGrant)
    async with database(request).write() as s:
        grant = await service.create_grant(
            s,
            data.username,
            data.resource_type,
            data.pattern,
            data.role,
            data.targets,
            actor=actor_name(request),
        )
    return GrantResponse(grant=grant)


@get("/grants/list", opt=permission_opt(ADMIN), responses=_errors(404))
async def list_grants(
    request: Req,
    username: OptionalUsernameQuery = None,
    max_results: MaxResults = None,
    page_token: PageToken = None,
) -> GrantList:
    async with database(request).read() as s:
        grants, token = await service.list_grants(s, username, max_results, page_token)
    return GrantList(grants=grants, next_page_token=token)


@delete("/grants/delete", status_code=200, opt=permission_opt(ADMIN), responses=_errors(404))
async def delete_grant(request: Req, data: GrantRef) -> Empty:
    data = await _strict(request, GrantRef)
    async with database(request).write() as s:
        await service.delete_grant(s, data.grant_id, actor=actor_name(request))
    return Empty()


# Mounted under /api/2.0/mlgate.
ROUTE_HANDLERS = [
    whoami,
    create_user,
    get_user,
    list_users,
    update_user,
    delete_user,
    create_token,
    list_tokens,
    revoke_token,
    create_grant,
    list_grants,
    delete_grant,
]
