"""Browser session records: the user behind a session cookie's secret, and its CSRF secret.

The cookie holds 256 random bits; the database keeps only their sha256 (a stolen backup does
not sign anyone in). Each session has its own CSRF secret, echoed by every form the UI posts.
A disabled user's sessions stop working at the next request, like their tokens.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from gates.identity import store
from gates.identity.credentials import hash_token
from gates.identity.service.authentication import session_principal
from tracking.core.auth import Principal
from tracking.core.clock import now_ms

SESSION_SECRET_RE = re.compile(r"^[A-Za-z0-9_-]{43}$")


@dataclass(frozen=True, slots=True)
class WebSession:
    principal: Principal
    csrf_secret: str


@dataclass(frozen=True, slots=True)
class NewWebSession:
    secret: str  # goes into the cookie, never stored
    csrf_secret: str


async def start_session(s: AsyncSession, user_id: int, ttl_seconds: int) -> NewWebSession:
    """Open a session for a user who has just proved their password."""
    secret = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    now = now_ms()
    await store.purge_web_sessions(s, now)
    await store.insert_web_session(
        s,
        id_hash=hash_token(secret),
        user_id=user_id,
        csrf_secret=csrf,
        created_at=now,
        expires_at=now + ttl_seconds * 1000,
    )
    return NewWebSession(secret=secret, csrf_secret=csrf)


async def resolve_session(s: AsyncSession, secret: str) -> WebSession | None:
    """The signed-in user behind a cookie secret, or None (malformed, unknown, expired, or
    the user disabled). The lookup is by hash, so timing reveals nothing of the secret."""
    if not SESSION_SECRET_RE.match(secret):
        return None
    row = await store.web_session_with_user(s, hash_token(secret))
    if row is None or row.disabled or row.expires_at <= now_ms():
        return None
    principal = await session_principal(s, int(row.user_id), row.username, bool(row.is_admin))
    return WebSession(principal=principal, csrf_secret=row.csrf_secret)


async def end_session(s: AsyncSession, secret: str) -> None:
    if SESSION_SECRET_RE.match(secret):
        await store.delete_web_session(s, hash_token(secret))
