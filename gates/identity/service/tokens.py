"""API tokens: issue (the secret shown once, stored hashed), list and revoke."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from gates.identity import store
from gates.identity.credentials import generate_token
from gates.identity.errors import TokenNotFound
from gates.identity.schemas import TokenCreated, TokenOut
from gates.identity.service.records import (
    SYSTEM_ACTOR,
    audit_change,
    page_limit,
    page_of,
    parse_id,
    token_out,
    user_row,
)
from tracking.core.clock import now_ms
from tracking.core.errors import InvalidParameter
from tracking.core.wire import decode_page_token


async def create_token(
    s: AsyncSession,
    username: str | None,
    name: str | None,
    *,
    expires_at: int | None = None,
    actor: str = SYSTEM_ACTOR,
) -> TokenCreated:
    """A new API token for ``username``; the secret is returned once and stored hashed."""
    user = await user_row(s, username)
    if not name or len(name) > 256:
        raise InvalidParameter("A token needs a name of 1 to 256 characters.")
    now = now_ms()
    if expires_at is not None and not now < expires_at <= 2**62:
        raise InvalidParameter("expires_at must be a future time in epoch milliseconds.")
    new = generate_token()
    while await store.prefix_taken(s, new.prefix):  # 48 random bits: practically never
        new = generate_token()
    token_id = await store.insert_token(
        s,
        user_id=user.id,
        name=name,
        prefix=new.prefix,
        secret_hash=new.digest,
        created_at=now,
        expires_at=expires_at,
        revoked_at=None,
    )
    payload = {"username": user.username, "token_id": str(token_id), "name": name}
    await audit_change(
        s, "token.created", user.username, {**payload, "expires_at": expires_at}, actor
    )
    return TokenCreated(token=token_out(await store.get_token(s, token_id)), secret=new.secret)


async def list_tokens(
    s: AsyncSession,
    username: str | None = None,
    max_results: int | None = None,
    page_token: str | None = None,
) -> tuple[list[TokenOut], str | None]:
    """Tokens of one user (or of everyone when ``username`` is None), newest first."""
    limit = page_limit(max_results)
    user_id = (await user_row(s, username)).id if username is not None else None
    fingerprint = f"tokens:{user_id}"
    offset = decode_page_token(page_token, fingerprint)
    rows = await store.list_tokens(s, user_id=user_id, offset=offset, limit=limit + 1)
    page, token = page_of(rows, offset, limit, fingerprint)
    return [token_out(r) for r in page], token


async def token_owner(s: AsyncSession, token_id: str | int | None) -> str:
    row = await store.get_token(s, parse_id(token_id, "token_id"))
    if row is None:
        raise TokenNotFound(token_id)
    return str(row.username)


async def revoke_token(
    s: AsyncSession, token_id: str | int | None, *, actor: str = SYSTEM_ACTOR
) -> TokenOut:
    """Revoke a token (at once, for every replica); revoking twice is a no-op."""
    ident = parse_id(token_id, "token_id")
    if await store.get_token(s, ident) is None:
        raise TokenNotFound(token_id)
    if await store.revoke_token(s, ident, now_ms()):
        row = await store.get_token(s, ident)
        payload = {"username": row.username, "token_id": str(ident), "name": row.name}
        await audit_change(s, "token.revoked", row.username, payload, actor)
    return token_out(await store.get_token(s, ident))
