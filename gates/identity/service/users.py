"""Users: create, read, change, delete, and the first administrator from settings."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from gates.identity import store
from gates.identity.credentials import hash_password
from gates.identity.errors import (
    LastAdministrator,
    NoAdministrator,
    NotAllowed,
    UserAlreadyExists,
)
from gates.identity.schemas import UserOut
from gates.identity.service.records import (
    SYSTEM_ACTOR,
    audit_change,
    page_limit,
    page_of,
    user_out,
    user_row,
    validate_password,
    validate_username,
)
from tracking.core.clock import now_ms
from tracking.core.errors import InvalidParameter
from tracking.core.wire import decode_page_token


async def create_user(
    s: AsyncSession,
    username: str | None,
    password: str | None,
    *,
    is_admin: bool = False,
    actor: str = SYSTEM_ACTOR,
) -> UserOut:
    """A new user; without a password it can only authenticate with API tokens."""
    name = validate_username(username)
    digest = None
    if password is not None:
        digest = await asyncio.to_thread(hash_password, validate_password(password))
    if (
        await store.insert_user(
            s, username=name, password_hash=digest, is_admin=is_admin, now=now_ms()
        )
        is None
    ):
        raise UserAlreadyExists(name)
    await audit_change(
        s,
        "user.created",
        name,
        {"username": name, "is_admin": is_admin, "password": password is not None},
        actor,
    )
    return user_out(await store.get_user(s, name))


async def get_user(s: AsyncSession, username: str | None) -> UserOut:
    return user_out(await user_row(s, username))


async def list_users(
    s: AsyncSession, max_results: int | None = None, page_token: str | None = None
) -> tuple[list[UserOut], str | None]:
    limit = page_limit(max_results)
    offset = decode_page_token(page_token, "users")
    rows, token = page_of(
        await store.list_users(s, offset=offset, limit=limit + 1), offset, limit, "users"
    )
    return [user_out(r) for r in rows], token


async def _keep_an_admin(s: AsyncSession, row: Any) -> None:
    if row.is_admin and not row.disabled and await store.count_active_admins(s) <= 1:
        raise LastAdministrator()


async def update_user(
    s: AsyncSession,
    username: str | None,
    *,
    password: str | None = None,
    is_admin: bool | None = None,
    disabled: bool | None = None,
    actor: str = SYSTEM_ACTOR,
) -> UserOut:
    """Change a password, the admin flag or the disabled flag (never the last admin away)."""
    row = await user_row(s, username)
    values: dict[str, Any] = {}
    if password is not None:
        values["password_hash"] = await asyncio.to_thread(
            hash_password, validate_password(password)
        )
    if is_admin is not None and is_admin != row.is_admin:
        if not is_admin:
            await _keep_an_admin(s, row)
        values["is_admin"] = is_admin
    if disabled is not None and disabled != row.disabled:
        if disabled:
            await _keep_an_admin(s, row)
        values["disabled"] = disabled
    if values:
        values["updated_at"] = now_ms()
        await store.update_user(s, row.id, **values)
    revoked_tokens = 0
    if password is not None or "disabled" in values:
        # A new password signs every browser out: a session opened with the old one (perhaps
        # by whoever learnt it) must not outlive it. Disabling ends sessions and revokes tokens
        # for good; re-enabling ends them again (a login that raced the disable may have left
        # one), so nothing issued before the re-enable ever works again (issue 12, case 8).
        await store.delete_web_sessions_of_user(s, row.id)
    if "disabled" in values:
        revoked_tokens = await store.revoke_tokens_of_user(s, row.id, now_ms())
    if values:
        changed: dict[str, Any] = {k: v for k, v in values.items() if k in ("is_admin", "disabled")}
        if revoked_tokens:
            changed["tokens_revoked"] = revoked_tokens
        if "password_hash" in values:
            changed["password_changed"] = True
        await audit_change(
            s, "user.updated", row.username, {"username": row.username, **changed}, actor
        )
    return user_out(await store.get_user_by_id(s, row.id))


def refuse_self_lockout(
    actor: str | None, username: str, *, is_admin: bool | None, disabled: bool | None
) -> None:
    """An administrator cannot demote or disable themselves (another one can): shared by the
    API and the web UI so both refuse the same way."""
    if actor is not None and actor == username and (is_admin is False or disabled):
        raise NotAllowed("You cannot demote or disable yourself; another administrator can.")


async def delete_user(s: AsyncSession, username: str | None, *, actor: str = SYSTEM_ACTOR) -> None:
    """Delete a user with its tokens and grants. Their recorded actions keep the name."""
    row = await user_row(s, username)
    await _keep_an_admin(s, row)
    await store.delete_user(s, row.id)
    await audit_change(s, "user.deleted", row.username, {"username": row.username}, actor)


async def ensure_admin(s: AsyncSession, username: str, password: str) -> bool:
    """Create the first administrator from settings when no active one exists.

    Returns True when one was created. Raises :class:`NoAdministrator` when none exists and
    none is configured: there is no default password to fall back on.
    """
    if await store.any_active_admin(s):
        return False
    if not username or not password:
        raise NoAdministrator(
            "authentication is on (MLGATE_AUTH=true) but no administrator exists: set "
            "MLGATE_ADMIN_USERNAME and MLGATE_ADMIN_PASSWORD for the first start, or create "
            "one with `mlgate users create <name> --admin`."
        )
    name = validate_username(username)
    try:
        validate_password(password)
    except InvalidParameter as exc:
        raise NoAdministrator(f"MLGATE_ADMIN_PASSWORD: {exc.message}") from None
    existing = await store.get_user(s, name)
    if existing is not None:
        raise NoAdministrator(
            f"MLGATE_ADMIN_USERNAME names the existing non-admin user '{name}'; promote it "
            f"with `mlgate users create`/the API, or choose another name."
        )
    digest = await asyncio.to_thread(hash_password, password)
    # Two replicas starting together: the unique name makes one insert a no-op.
    created = await store.insert_user(
        s, username=name, password_hash=digest, is_admin=True, now=now_ms()
    )
    if created is not None:
        payload = {"username": name, "is_admin": True, "password": True, "from": "settings"}
        await audit_change(s, "user.created", name, payload, SYSTEM_ACTOR)
    return True
