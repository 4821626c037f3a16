"""Authentication: passwords (with throttling and a verify cache), API tokens, sessions."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from gates.identity import store
from gates.identity.credentials import (
    constant_time_equals,
    hash_token,
    token_prefix,
    verify_password,
)
from gates.identity.errors import LoginThrottled, NotAllowed
from gates.identity.service.grants import grant_rules
from gates.identity.service.records import USERNAME_RE, grant_rule
from tracking.core.auth import Principal
from tracking.core.clock import now_ms
from tracking.core.driver import DriverRows


@dataclass(frozen=True, slots=True)
class ThrottlePolicy:
    max_failures: int
    window_seconds: int


def login_key(username: str, client: str) -> str:
    return hashlib.sha256(f"{username.lower()}\0{client}".encode()).hexdigest()


async def check_login_allowed(
    s: AsyncSession, username: str, client: str, policy: ThrottlePolicy
) -> bool:
    """Raise 429 while the (user name, client) pair is over its failure budget; otherwise
    say whether any failure is on record."""
    row = await store.login_failures(s, login_key(username, client))
    if row is None:
        return False
    now = now_ms()
    window_end = row.window_start + policy.window_seconds * 1000
    if row.failures >= policy.max_failures and now < window_end:
        raise LoginThrottled(-(-(window_end - now) // 1000))
    return True


async def record_login_failure(
    s: AsyncSession, username: str, client: str, policy: ThrottlePolicy
) -> int | None:
    """Count a failed login. Returns the seconds to wait when this failure used up the budget
    (the caller answers 429 after committing: raising here would roll the count back)."""
    now = now_ms()
    window_ms = policy.window_seconds * 1000
    await store.purge_login_failures(s, now - 2 * window_ms)
    failures, window_start = await store.record_login_failure(
        s, login_key(username, client), now=now, window_ms=window_ms
    )
    if failures >= policy.max_failures:
        return int(-(-(window_start + window_ms - now) // 1000))
    return None


async def clear_login_failures(s: AsyncSession, username: str, client: str) -> None:
    await store.clear_login_failures(s, [login_key(username, client)])


class _VerifiedPasswords:
    """Recently verified (user, password, client) triples, so argon2 runs once, not per request.

    The MLflow client sends Basic credentials with every call; an argon2id verify per call
    would cost tens of milliseconds of CPU each. Entries are keyed by an HMAC under a
    per-process random key (the cache never holds a password or a plain hash of one) and
    remember the password hash they were checked against: a password change, a disabled
    account or a deleted user invalidates them at the next request, which re-reads the user.
    """

    def __init__(self, size: int = 4096, ttl_seconds: float = 900.0) -> None:
        self._key = secrets.token_bytes(32)
        self._size = size
        self._ttl = ttl_seconds
        self._entries: OrderedDict[bytes, tuple[int, str, float]] = OrderedDict()

    def _digest(self, username: str, password: str, client: str) -> bytes:
        message = f"{username}\0{password}\0{client}".encode("utf-8", "surrogatepass")
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def get(self, username: str, password: str, client: str) -> tuple[int, str] | None:
        key = self._digest(username, password, client)
        found = self._entries.get(key)
        if found is None:
            return None
        user_id, stored_hash, expires = found
        if expires < time.monotonic():
            self._entries.pop(key, None)
            return None
        return user_id, stored_hash

    def put(self, username: str, password: str, client: str, user_id: int, stored: str) -> None:
        key = self._digest(username, password, client)
        self._entries[key] = (user_id, stored, time.monotonic() + self._ttl)
        self._entries.move_to_end(key)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()


verified_passwords = _VerifiedPasswords()


async def _principal(
    s: AsyncSession,
    user_id: int,
    username: str,
    is_admin: bool,
    token: tuple[int, str] | None = None,
) -> Principal:
    # Administrators bypass grants, so theirs are not even loaded.
    rules = () if is_admin else await grant_rules(s, user_id)
    return Principal(
        user_id=user_id,
        name=username,
        is_admin=is_admin,
        kind="user" if token is None else "token",
        token_id=None if token is None else token[0],
        token_name=None if token is None else token[1],
        grants=rules,
    )


async def session_principal(
    s: AsyncSession, user_id: int, username: str, is_admin: bool
) -> Principal:
    """The principal of a signed-in browser session (a password login, like Basic)."""
    return await _principal(s, user_id, username, is_admin)


@dataclass(frozen=True, slots=True)
class BasicOutcome:
    principal: Principal | None
    # Failures were on record for this (user name, client): clear them after a success.
    had_failures: bool = False


# The user name failed bearer-token attempts are counted under (per client).
BEARER_LOGIN = "(bearer token)"


async def authenticate_basic(
    s: AsyncSession, username: str, password: str, client: str, policy: ThrottlePolicy
) -> BasicOutcome:
    """Check a user name and password; 429 while the pair is over its failure budget.

    A recently verified (user, password, client) skips argon2 and the throttle lookup; a
    cache miss is throttled first, so a locked-out caller cannot keep guessing.
    """
    user = await store.get_user(s, username) if USERNAME_RE.match(username) else None
    cached = verified_passwords.get(username, password, client)
    if cached is not None and user is not None:
        user_id, stored = cached
        if user.id == user_id and user.password_hash == stored and not user.disabled:
            return BasicOutcome(await _principal(s, user.id, user.username, user.is_admin))
    had_failures = await check_login_allowed(s, username, client, policy)
    stored_hash = user.password_hash if user is not None else None
    ok = await asyncio.to_thread(verify_password, stored_hash, password)
    if not ok or user is None or user.disabled or stored_hash is None:
        return BasicOutcome(None, had_failures)
    verified_passwords.put(username, password, client, int(user.id), stored_hash)
    principal = await _principal(s, user.id, user.username, user.is_admin)
    return BasicOutcome(principal, had_failures)


async def verify_token(s: AsyncSession, secret: str) -> Principal | None:
    """The principal for a bearer token, or None (malformed, unknown, revoked, expired,
    or its user disabled). The stored hash is compared in constant time.

    One statement reads the token, its user and the user's grants: authentication runs on
    every request, so it costs one round trip."""
    prefix = token_prefix(secret)
    if prefix is None:
        return None
    return token_principal(await store.token_principal_rows(s, prefix), secret)


async def verify_token_at_once(r: DriverRows, secret: str) -> Principal | None:
    """:func:`verify_token` on a pooled connection's driver, without a session. Nothing is
    kept in memory: every request reads the token, its user and the grants again, so a
    revocation, an expiry, a disabled user or a changed grant applies to the next request
    (on every replica)."""
    prefix = token_prefix(secret)
    if prefix is None:
        return None
    return token_principal(await store.token_principal_rows_at_once(r, prefix), secret)


def token_principal(rows: Sequence[Any], secret: str) -> Principal | None:
    """The principal the rows of the token's statement describe, if ``secret`` is that token's
    and it is live."""
    if not rows:
        return None
    row = rows[0]
    if not constant_time_equals(hash_token(secret), row.secret_hash):
        return None
    if row.revoked_at is not None or row.disabled:
        return None
    if row.expires_at is not None and row.expires_at <= now_ms():
        return None
    is_admin = bool(row.is_admin)
    return Principal(
        user_id=int(row.user_id),
        name=row.username,
        is_admin=is_admin,
        kind="token",
        token_id=int(row.token_id),
        token_name=row.token_name,
        # Administrators bypass grants; the statement joins none for them.
        grants=() if is_admin else tuple(grant_rule(r) for r in rows if r.grant_id is not None),
    )


async def check_current_password(s: AsyncSession, username: str, password: str | None) -> None:
    """Refuse a change to your own password unless the current one is given."""
    row = await store.get_user(s, username)
    stored = row.password_hash if row is not None else None
    if stored is None:
        return  # a token-only account sets its first password through an administrator
    if not password or not await asyncio.to_thread(verify_password, stored, password):
        raise NotAllowed("current_password is missing or wrong.")


def require_password_session(principal: Principal, what: str) -> None:
    """Some changes need the password itself, not a token that may have leaked."""
    if principal.kind != "user" and not principal.is_admin:
        raise NotAllowed(f"{what} needs password authentication, not an API token.")
