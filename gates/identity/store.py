"""Every SQL statement of the identity domain. No HTTP and no business rules here."""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Sequence
from typing import Any

from sqlalchemy import and_, bindparam, case, delete, false, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from gates.identity.models import ApiToken, Grant, LoginFailure, User, WebSession
from tracking.core.db import dialect_insert
from tracking.core.driver import DriverRows, Prebuilt

_USER = User.__table__
_TOKEN = ApiToken.__table__
_GRANT = Grant.__table__


def _rowcount(result: Any) -> int:
    return int(result.rowcount or 0)


# --- users ---------------------------------------------------------------------------------------


async def insert_user(
    s: AsyncSession, *, username: str, password_hash: str | None, is_admin: bool, now: int
) -> int | None:
    """Insert a user; None when the name is taken (race-free: ON CONFLICT DO NOTHING)."""
    result = await s.execute(
        dialect_insert(s)(User)
        .values(
            username=username,
            password_hash=password_hash,
            is_admin=is_admin,
            disabled=False,
            created_at=now,
            updated_at=now,
        )
        .on_conflict_do_nothing(index_elements=[User.username])
        .returning(User.id)
    )
    found = result.scalar_one_or_none()
    return None if found is None else int(found)


async def get_user(s: AsyncSession, username: str) -> Any:
    return (await s.execute(select(_USER).where(User.username == username))).first()


async def get_user_by_id(s: AsyncSession, user_id: int) -> Any:
    return (await s.execute(select(_USER).where(User.id == user_id))).first()


async def list_users(s: AsyncSession, *, offset: int, limit: int) -> list[Any]:
    stmt = select(_USER).order_by(User.username).offset(offset).limit(limit)
    return list((await s.execute(stmt)).all())


async def update_user(s: AsyncSession, user_id: int, **values: Any) -> None:
    await s.execute(update(User).where(User.id == user_id).values(**values))


async def delete_user(s: AsyncSession, user_id: int) -> None:
    # Tokens and grants go with it (ON DELETE CASCADE; also deleted explicitly for SQLite
    # connections that run without foreign-key enforcement).
    await s.execute(delete(ApiToken).where(ApiToken.user_id == user_id))
    await s.execute(delete(Grant).where(Grant.user_id == user_id))
    await s.execute(delete(User).where(User.id == user_id))


async def any_active_admin(s: AsyncSession) -> bool:
    stmt = select(User.id).where(User.is_admin.is_(True), User.disabled.is_(False)).limit(1)
    return (await s.execute(stmt)).first() is not None


async def count_active_admins(s: AsyncSession) -> int:
    stmt = select(func.count()).where(User.is_admin.is_(True), User.disabled.is_(False))
    return int((await s.execute(stmt)).scalar_one())


# --- tokens --------------------------------------------------------------------------------------


async def insert_token(s: AsyncSession, **values: Any) -> int:
    result = await s.execute(insert(ApiToken).values(**values).returning(ApiToken.id))
    return int(result.scalar_one())


async def prefix_taken(s: AsyncSession, prefix: str) -> bool:
    stmt = select(ApiToken.id).where(ApiToken.prefix == prefix)
    return (await s.execute(stmt)).first() is not None


# Everything a bearer token authenticates to, in one statement and one round trip: the token,
# its user and (for a non-administrator) the user's grants, one row per grant. Built once, with
# a bound parameter, so every request reuses the compiled statement.
_TOKEN_PRINCIPAL = (
    select(
        _TOKEN.c.id.label("token_id"),
        _TOKEN.c.name.label("token_name"),
        _TOKEN.c.secret_hash,
        _TOKEN.c.expires_at,
        _TOKEN.c.revoked_at,
        _USER.c.id.label("user_id"),
        _USER.c.username,
        _USER.c.is_admin,
        _USER.c.disabled,
        _GRANT.c.id.label("grant_id"),
        _GRANT.c.resource_type,
        _GRANT.c.pattern,
        _GRANT.c.role,
        _GRANT.c.targets,
    )
    .select_from(
        _TOKEN.join(_USER, _USER.c.id == _TOKEN.c.user_id).outerjoin(
            _GRANT, and_(_GRANT.c.user_id == _USER.c.id, _USER.c.is_admin == false())
        )
    )
    .where(_TOKEN.c.prefix == bindparam("prefix"))
    .order_by(_GRANT.c.id)
)


async def token_principal_rows(s: AsyncSession, prefix: str) -> list[Any]:
    """The token with this lookup prefix, its user and the user's grants (one row per grant;
    one row with NULL grant columns for none or an administrator); empty when unknown."""
    conn = await s.connection()
    return list((await conn.execute(_TOKEN_PRINCIPAL, {"prefix": prefix})).all())


# The same statement on a pooled connection's driver (tracking.core.driver): authentication
# runs on every request, and a session around its one read cost more than the read itself.
# Every column is a plain type, so the driver's values are the session's (SQLite's booleans
# come back as 0/1, which the caller only tests for truth).
TokenPrincipalRow = namedtuple(  # type: ignore[misc]
    "TokenPrincipalRow", [str(c.key) for c in _TOKEN_PRINCIPAL.selected_columns]
)
TOKEN_PRINCIPAL = Prebuilt(lambda _dialect: _TOKEN_PRINCIPAL)


async def token_principal_rows_at_once(r: DriverRows, prefix: str) -> list[Any]:
    """:func:`token_principal_rows` on the driver: no session, one statement."""
    return [
        TokenPrincipalRow._make(row) for row in await r.all(TOKEN_PRINCIPAL, {"prefix": prefix})
    ]


def _token_select() -> Any:
    return select(
        ApiToken.id,
        ApiToken.name,
        ApiToken.prefix,
        ApiToken.created_at,
        ApiToken.expires_at,
        ApiToken.revoked_at,
        User.username,
    ).join(User, User.id == ApiToken.user_id)


async def get_token(s: AsyncSession, token_id: int) -> Any:
    stmt = _token_select().add_columns(ApiToken.user_id).where(ApiToken.id == token_id)
    return (await s.execute(stmt)).first()


async def list_tokens(
    s: AsyncSession, *, user_id: int | None, offset: int, limit: int
) -> list[Any]:
    stmt = _token_select()
    if user_id is not None:
        stmt = stmt.where(ApiToken.user_id == user_id)
    stmt = stmt.order_by(ApiToken.created_at.desc(), ApiToken.id.desc())
    return list((await s.execute(stmt.offset(offset).limit(limit))).all())


async def revoke_token(s: AsyncSession, token_id: int, now: int) -> int:
    result = await s.execute(
        update(ApiToken)
        .where(ApiToken.id == token_id, ApiToken.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    return _rowcount(result)


async def revoke_tokens_of_user(s: AsyncSession, user_id: int, now: int) -> int:
    result = await s.execute(
        update(ApiToken)
        .where(ApiToken.user_id == user_id, ApiToken.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    return _rowcount(result)


# --- grants --------------------------------------------------------------------------------------


async def insert_grant(s: AsyncSession, **values: Any) -> int | None:
    """Insert a grant; None when the user already has one on that (type, pattern)."""
    result = await s.execute(
        dialect_insert(s)(Grant)
        .values(**values)
        .on_conflict_do_nothing(index_elements=[Grant.user_id, Grant.resource_type, Grant.pattern])
        .returning(Grant.id)
    )
    found = result.scalar_one_or_none()
    return None if found is None else int(found)


def _grant_select() -> Any:
    return select(
        Grant.id,
        Grant.user_id,
        Grant.resource_type,
        Grant.pattern,
        Grant.role,
        Grant.targets,
        Grant.created_at,
        Grant.created_by,
        User.username,
    ).join(User, User.id == Grant.user_id)


async def grants_of_user(s: AsyncSession, user_id: int) -> list[Any]:
    stmt = _grant_select().where(Grant.user_id == user_id).order_by(Grant.id)
    return list((await s.execute(stmt)).all())


async def get_grant(s: AsyncSession, grant_id: int) -> Any:
    return (await s.execute(_grant_select().where(Grant.id == grant_id))).first()


async def list_grants(
    s: AsyncSession, *, user_id: int | None, offset: int, limit: int
) -> list[Any]:
    stmt = _grant_select()
    if user_id is not None:
        stmt = stmt.where(Grant.user_id == user_id)
    stmt = stmt.order_by(User.username, Grant.resource_type, Grant.pattern, Grant.id)
    return list((await s.execute(stmt.offset(offset).limit(limit))).all())


async def delete_grant(s: AsyncSession, grant_id: int) -> int:
    return _rowcount(await s.execute(delete(Grant).where(Grant.id == grant_id)))


# --- login throttling --------------------------------------------------------------------------


async def login_failures(s: AsyncSession, key: str) -> Any:
    stmt = select(LoginFailure.failures, LoginFailure.window_start).where(LoginFailure.key == key)
    return (await s.execute(stmt)).first()


async def record_login_failure(s: AsyncSession, key: str, *, now: int, window_ms: int) -> Any:
    """Count one failure in the key's window (a new window once the old one ended), atomically.

    Returns (failures, window_start) after the update.
    """
    ins = dialect_insert(s)(LoginFailure).values(key=key, failures=1, window_start=now)
    expired = LoginFailure.window_start <= now - window_ms
    stmt = ins.on_conflict_do_update(
        index_elements=[LoginFailure.key],
        set_={
            "failures": case((expired, 1), else_=LoginFailure.failures + 1),
            "window_start": case((expired, now), else_=LoginFailure.window_start),
        },
    ).returning(LoginFailure.failures, LoginFailure.window_start)
    return (await s.execute(stmt)).first()


async def clear_login_failures(s: AsyncSession, keys: Sequence[str]) -> None:
    await s.execute(delete(LoginFailure).where(LoginFailure.key.in_(list(keys))))


async def purge_login_failures(s: AsyncSession, before: int) -> None:
    """Drop windows that ended before ``before`` (ms), keeping the table small."""
    await s.execute(delete(LoginFailure).where(LoginFailure.window_start < before))


# --- web sessions ------------------------------------------------------------------------------


async def insert_web_session(s: AsyncSession, **values: Any) -> None:
    await s.execute(insert(WebSession).values(**values))


async def web_session_with_user(s: AsyncSession, id_hash: str) -> Any:
    """The session with this secret hash joined with its user's row, or None."""
    stmt = (
        select(
            WebSession.csrf_secret,
            WebSession.expires_at,
            User.id.label("user_id"),
            User.username,
            User.is_admin,
            User.disabled,
        )
        .join(User, User.id == WebSession.user_id)
        .where(WebSession.id_hash == id_hash)
    )
    return (await s.execute(stmt)).first()


async def delete_web_session(s: AsyncSession, id_hash: str) -> None:
    await s.execute(delete(WebSession).where(WebSession.id_hash == id_hash))


async def delete_web_sessions_of_user(s: AsyncSession, user_id: int) -> None:
    await s.execute(delete(WebSession).where(WebSession.user_id == user_id))


async def purge_web_sessions(s: AsyncSession, before: int) -> None:
    await s.execute(delete(WebSession).where(WebSession.expires_at <= before))
