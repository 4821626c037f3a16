"""Identity operations: users, API tokens, grants, authentication and login throttling.

Takes a session. Password hashing runs on a worker thread (argon2id is deliberately slow).
Authentication spans transactions on purpose: a failed login is counted in its own committed
transaction even though the request fails, so the shell orchestrates the calls below.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from gates.audit import service as audit
from gates.identity import store
from gates.identity.errors import (
    GrantAlreadyExists,
    GrantNotFound,
    LastAdministrator,
    LoginThrottled,
    NoAdministrator,
    NotAllowed,
    TokenNotFound,
    UserAlreadyExists,
    UserNotFound,
)
from gates.identity.policy import (
    RESOURCE_TYPES,
    ROLES,
    GrantRule,
    allows,
    is_id_pattern,
    normalise_targets,
)
from gates.identity.schemas import GrantOut, TokenCreated, TokenOut, UserOut
from tracking.core.auth import (
    Principal,
    constant_time_equals,
    generate_token,
    hash_password,
    hash_token,
    token_prefix,
    verify_password,
)
from tracking.core.clock import now_ms
from tracking.core.errors import InvalidParameter
from tracking.core.wire import decode_page_token, encode_page_token

MIN_PASSWORD_LEN = 12
MAX_PASSWORD_LEN = 1024
USERNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+\-]{0,255}$")
DEFAULT_PAGE = 100
MAX_PAGE = 1000
_INT64_MAX = 2**63 - 1

# --- validation ----------------------------------------------------------------------------------


def validate_username(username: str | None) -> str:
    if not username or not USERNAME_RE.match(username):
        raise InvalidParameter(
            f"Invalid user name {username!r}: 1 to 256 letters, digits and . _ @ + -, "
            "starting with a letter or digit."
        )
    return username


def validate_password(password: str | None) -> str:
    if password is None or not MIN_PASSWORD_LEN <= len(password) <= MAX_PASSWORD_LEN:
        raise InvalidParameter(
            f"A password needs {MIN_PASSWORD_LEN} to {MAX_PASSWORD_LEN} characters."
        )
    return password


def _limit(max_results: int | None) -> int:
    if max_results is None:
        return DEFAULT_PAGE
    if not 1 <= max_results <= MAX_PAGE:
        raise InvalidParameter(f"max_results must be between 1 and {MAX_PAGE}.")
    return max_results


def _parse_id(value: str | int | None, what: str) -> int:
    text = str(value or "").strip()
    if not re.fullmatch(r"[0-9]{1,18}", text):
        raise InvalidParameter(f"Invalid {what} {value!r}.")
    return int(text)


def _page(
    rows: list[Any], offset: int, limit: int, fingerprint: str
) -> tuple[list[Any], str | None]:
    token = encode_page_token(offset + limit, fingerprint) if len(rows) > limit else None
    return rows[:limit], token


# --- rendering -----------------------------------------------------------------------------------


def user_out(row: Any) -> UserOut:
    return UserOut(
        username=row.username,
        is_admin=bool(row.is_admin),
        disabled=bool(row.disabled),
        has_password=row.password_hash is not None,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def token_out(row: Any) -> TokenOut:
    return TokenOut(
        token_id=str(row.id),
        name=row.name,
        username=row.username,
        prefix=row.prefix,
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
    )


def _targets(raw: str | None) -> tuple[str, ...] | None:
    return None if raw is None else tuple(json.loads(raw))


def grant_out(row: Any) -> GrantOut:
    targets = _targets(row.targets)
    return GrantOut(
        grant_id=str(row.id),
        username=row.username,
        resource_type=row.resource_type,
        pattern=row.pattern,
        role=row.role,
        created_at=row.created_at,
        created_by=row.created_by,
        targets=None if targets is None else list(targets),
    )


def grant_rule(row: Any) -> GrantRule:
    return GrantRule(row.resource_type, row.pattern, row.role, _targets(row.targets))


# --- users ---------------------------------------------------------------------------------------


async def _user(s: AsyncSession, username: str | None) -> Any:
    checked = validate_username(username)
    row = await store.get_user(s, checked)
    if row is None:
        raise UserNotFound(checked)
    return row


# Who identity changes are recorded as when no person made them (start-up bootstrap, tests).
SYSTEM_ACTOR = "system"


async def _audit(
    s: AsyncSession, kind: str, username: str, payload: dict[str, Any], actor: str
) -> None:
    """Every change to who may do what lands in the audit trail, in the change's transaction."""
    await audit.append(s, kind, f"user:{username}", payload, actor)


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
    await _audit(
        s,
        "user.created",
        name,
        {"username": name, "is_admin": is_admin, "password": password is not None},
        actor,
    )
    return user_out(await store.get_user(s, name))


async def get_user(s: AsyncSession, username: str | None) -> UserOut:
    return user_out(await _user(s, username))


async def list_users(
    s: AsyncSession, max_results: int | None = None, page_token: str | None = None
) -> tuple[list[UserOut], str | None]:
    limit = _limit(max_results)
    offset = decode_page_token(page_token, "users")
    rows, token = _page(
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
    row = await _user(s, username)
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
        await _audit(s, "user.updated", row.username, {"username": row.username, **changed}, actor)
    return user_out(await store.get_user_by_id(s, row.id))


async def delete_user(s: AsyncSession, username: str | None, *, actor: str = SYSTEM_ACTOR) -> None:
    """Delete a user with its tokens and grants. Their recorded actions keep the name."""
    row = await _user(s, username)
    await _keep_an_admin(s, row)
    await store.delete_user(s, row.id)
    await _audit(s, "user.deleted", row.username, {"username": row.username}, actor)


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
        await _audit(s, "user.created", name, payload, SYSTEM_ACTOR)
    return True


# --- tokens --------------------------------------------------------------------------------------


async def create_token(
    s: AsyncSession,
    username: str | None,
    name: str | None,
    *,
    expires_at: int | None = None,
    actor: str = SYSTEM_ACTOR,
) -> TokenCreated:
    """A new API token for ``username``; the secret is returned once and stored hashed."""
    user = await _user(s, username)
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
    await _audit(s, "token.created", user.username, {**payload, "expires_at": expires_at}, actor)
    return TokenCreated(token=token_out(await store.get_token(s, token_id)), secret=new.secret)


async def list_tokens(
    s: AsyncSession,
    username: str | None = None,
    max_results: int | None = None,
    page_token: str | None = None,
) -> tuple[list[TokenOut], str | None]:
    """Tokens of one user (or of everyone when ``username`` is None), newest first."""
    limit = _limit(max_results)
    user_id = (await _user(s, username)).id if username is not None else None
    fingerprint = f"tokens:{user_id}"
    offset = decode_page_token(page_token, fingerprint)
    rows = await store.list_tokens(s, user_id=user_id, offset=offset, limit=limit + 1)
    page, token = _page(rows, offset, limit, fingerprint)
    return [token_out(r) for r in page], token


async def token_owner(s: AsyncSession, token_id: str | int | None) -> str:
    row = await store.get_token(s, _parse_id(token_id, "token_id"))
    if row is None:
        raise TokenNotFound(token_id)
    return str(row.username)


async def revoke_token(
    s: AsyncSession, token_id: str | int | None, *, actor: str = SYSTEM_ACTOR
) -> TokenOut:
    """Revoke a token (at once, for every replica); revoking twice is a no-op."""
    ident = _parse_id(token_id, "token_id")
    if await store.get_token(s, ident) is None:
        raise TokenNotFound(token_id)
    if await store.revoke_token(s, ident, now_ms()):
        row = await store.get_token(s, ident)
        payload = {"username": row.username, "token_id": str(ident), "name": row.name}
        await _audit(s, "token.revoked", row.username, payload, actor)
    return token_out(await store.get_token(s, ident))


# --- grants --------------------------------------------------------------------------------------


def _validate_pattern(resource_type: str, pattern: str | None) -> str:
    if not pattern or len(pattern) > 500 or pattern != pattern.strip():
        raise InvalidParameter("A grant pattern needs 1 to 500 characters, without outer spaces.")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in pattern):
        raise InvalidParameter("A grant pattern cannot contain control characters.")
    if is_id_pattern(resource_type, pattern) and int(pattern) > _INT64_MAX:
        raise InvalidParameter(f"Experiment id pattern {pattern!r} is out of range.")
    return pattern


async def create_grant(
    s: AsyncSession,
    username: str | None,
    resource_type: str | None,
    pattern: str | None,
    role: str | None,
    targets: Sequence[str] | None = None,
    *,
    actor: str,
) -> GrantOut:
    user = await _user(s, username)
    if resource_type not in RESOURCE_TYPES:
        raise InvalidParameter(f"resource_type must be one of {', '.join(RESOURCE_TYPES)}.")
    if role not in ROLES:
        raise InvalidParameter(f"role must be one of {', '.join(ROLES)}.")
    checked = _validate_pattern(resource_type, pattern)
    normalised = normalise_targets(targets)
    if normalised is not None and resource_type != "registered_model":
        raise InvalidParameter("Promotion targets apply to registered_model grants only.")
    grant_id = await store.insert_grant(
        s,
        user_id=user.id,
        resource_type=resource_type,
        pattern=checked,
        role=role,
        targets=None if normalised is None else json.dumps(list(normalised)),
        created_at=now_ms(),
        created_by=actor,
    )
    if grant_id is None:
        raise GrantAlreadyExists(user.username, resource_type, checked)
    out = grant_out(await store.get_grant(s, grant_id))
    await _audit(s, "grant.created", user.username, _grant_audit(out), actor)
    return out


def _grant_audit(grant: GrantOut) -> dict[str, Any]:
    return {
        "grant_id": grant.grant_id,
        "username": grant.username,
        "resource_type": grant.resource_type,
        "pattern": grant.pattern,
        "role": grant.role,
        "targets": grant.targets,
    }


async def list_grants(
    s: AsyncSession,
    username: str | None = None,
    max_results: int | None = None,
    page_token: str | None = None,
) -> tuple[list[GrantOut], str | None]:
    limit = _limit(max_results)
    user_id = (await _user(s, username)).id if username is not None else None
    fingerprint = f"grants:{user_id}"
    offset = decode_page_token(page_token, fingerprint)
    rows = await store.list_grants(s, user_id=user_id, offset=offset, limit=limit + 1)
    page, token = _page(rows, offset, limit, fingerprint)
    return [grant_out(r) for r in page], token


async def grants_of(s: AsyncSession, user_id: int) -> list[GrantOut]:
    return [grant_out(r) for r in await store.grants_of_user(s, user_id)]


async def delete_grant(
    s: AsyncSession, grant_id: str | int | None, *, actor: str = SYSTEM_ACTOR
) -> None:
    ident = _parse_id(grant_id, "grant_id")
    found = await store.get_grant(s, ident)
    if found is None or not await store.delete_grant(s, ident):
        raise GrantNotFound(grant_id)
    out = grant_out(found)
    await _audit(s, "grant.deleted", out.username, _grant_audit(out), actor)


async def grant_rules(s: AsyncSession, user_id: int) -> tuple[GrantRule, ...]:
    return tuple(grant_rule(r) for r in await store.grants_of_user(s, user_id))


async def user_allows(
    s: AsyncSession,
    username: str,
    resource_type: str,
    name: str,
    action: str,
    target: str | None = None,
) -> bool:
    """Whether ``username`` (an active user) may do ``action`` on the named object.

    For callers outside a request (gates' approvals: "is this approver allowed on
    Production?"). Administrators may do everything; unknown or disabled users nothing.
    """
    row = await store.get_user(s, username)
    if row is None or row.disabled:
        return False
    if row.is_admin:
        return True
    rules = await grant_rules(s, row.id)
    return allows(rules, resource_type, name, None, action, target)


# --- authentication ------------------------------------------------------------------------------


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
    rows = await store.token_principal_rows(s, prefix)
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
