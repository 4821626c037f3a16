"""Grants: who may do what on which experiments and models, and asking whether a user may."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from gates.identity import store
from gates.identity.errors import GrantAlreadyExists, GrantNotFound
from gates.identity.policy import (
    RESOURCE_TYPES,
    ROLES,
    GrantRule,
    allows,
    is_id_pattern,
    normalise_targets,
)
from gates.identity.schemas import GrantOut
from gates.identity.service.records import (
    SYSTEM_ACTOR,
    audit_change,
    grant_out,
    grant_rule,
    page_limit,
    page_of,
    parse_id,
    user_row,
)
from tracking.core.clock import now_ms
from tracking.core.errors import InvalidParameter
from tracking.core.wire import decode_page_token

_INT64_MAX = 2**63 - 1


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
    user = await user_row(s, username)
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
    await audit_change(s, "grant.created", user.username, _grant_audit(out), actor)
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
    limit = page_limit(max_results)
    user_id = (await user_row(s, username)).id if username is not None else None
    fingerprint = f"grants:{user_id}"
    offset = decode_page_token(page_token, fingerprint)
    rows = await store.list_grants(s, user_id=user_id, offset=offset, limit=limit + 1)
    page, token = page_of(rows, offset, limit, fingerprint)
    return [grant_out(r) for r in page], token


async def grants_of(s: AsyncSession, user_id: int) -> list[GrantOut]:
    return [grant_out(r) for r in await store.grants_of_user(s, user_id)]


async def delete_grant(
    s: AsyncSession, grant_id: str | int | None, *, actor: str = SYSTEM_ACTOR
) -> None:
    ident = parse_id(grant_id, "grant_id")
    found = await store.get_grant(s, ident)
    if found is None or not await store.delete_grant(s, ident):
        raise GrantNotFound(grant_id)
    out = grant_out(found)
    await audit_change(s, "grant.deleted", out.username, _grant_audit(out), actor)


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
