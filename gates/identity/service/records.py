"""What users, tokens and grants share: validation, paging, wire records and the audit entry."""

from __future__ import annotations

import json
import re
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from gates.audit import service as audit
from gates.identity import store
from gates.identity.errors import UserNotFound
from gates.identity.policy import GrantRule
from gates.identity.schemas import GrantOut, TokenOut, UserOut
from tracking.core.errors import InvalidParameter
from tracking.core.wire import encode_page_token

MIN_PASSWORD_LEN = 12
MAX_PASSWORD_LEN = 1024
USERNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+\-]{0,255}$")
DEFAULT_PAGE = 100
MAX_PAGE = 1000

# --- validation and paging -----------------------------------------------------------------------


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


def page_limit(max_results: int | None) -> int:
    if max_results is None:
        return DEFAULT_PAGE
    if not 1 <= max_results <= MAX_PAGE:
        raise InvalidParameter(f"max_results must be between 1 and {MAX_PAGE}.")
    return max_results


def parse_id(value: str | int | None, what: str) -> int:
    text = str(value or "").strip()
    if not re.fullmatch(r"[0-9]{1,18}", text):
        raise InvalidParameter(f"Invalid {what} {value!r}.")
    return int(text)


def page_of(
    rows: list[Any], offset: int, limit: int, fingerprint: str
) -> tuple[list[Any], str | None]:
    token = encode_page_token(offset + limit, fingerprint) if len(rows) > limit else None
    return rows[:limit], token


# --- wire records --------------------------------------------------------------------------------


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


def grant_targets(raw: str | None) -> tuple[str, ...] | None:
    return None if raw is None else tuple(json.loads(raw))


def grant_out(row: Any) -> GrantOut:
    targets = grant_targets(row.targets)
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
    return GrantRule(row.resource_type, row.pattern, row.role, grant_targets(row.targets))


# --- the user a change is about, and its audit entry ---------------------------------------------


async def user_row(s: AsyncSession, username: str | None) -> Any:
    checked = validate_username(username)
    row = await store.get_user(s, checked)
    if row is None:
        raise UserNotFound(checked)
    return row


# Who identity changes are recorded as when no person made them (start-up bootstrap, tests).
SYSTEM_ACTOR = "system"


async def audit_change(
    s: AsyncSession, kind: str, username: str, payload: dict[str, Any], actor: str
) -> None:
    """Every change to who may do what lands in the audit trail, in the change's transaction."""
    await audit.append(s, kind, f"user:{username}", payload, actor)
