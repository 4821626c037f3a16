"""A gate's CI signing secrets: add, rotate, revoke, list, and the values a signature may use."""

from __future__ import annotations

import secrets as random_ids

from sqlalchemy.ext.asyncio import AsyncSession

from gates.events.signing import SecretBox, SecretUnavailable
from gates.policies import ports, store
from gates.policies.errors import SecretNotFound, TooManySecrets
from gates.policies.models import GatePolicy, GateSecret
from gates.policies.schemas import SecretOut
from gates.policies.service.policies import find_policy
from gates.policies.service.records import (
    DEFAULT_ROTATION_GRACE_SECONDS,
    MAX_ACTIVE_SECRETS,
    MAX_ROTATION_GRACE_SECONDS,
    UNSEALED,
    log,
    secret_out,
)
from gates.policies.signatures import SECRET_PREFIX, new_secret
from tracking.core.clock import now_ms
from tracking.core.errors import InvalidParameter


async def add_secret(
    s: AsyncSession, gate: str | None, *, actor: str, box: SecretBox = UNSEALED
) -> SecretOut:
    """A new signing secret for ``gate``; the answer is the only time it is shown."""
    policy = await find_policy(s, gate, lock=True)
    now = now_ms()
    if len(await store.active_secrets(s, policy.id, now)) >= MAX_ACTIVE_SECRETS:
        raise TooManySecrets(policy.name)
    return await _insert_secret(s, policy, now, actor, box)


async def _insert_secret(
    s: AsyncSession, policy: GatePolicy, now: int, actor: str, box: SecretBox
) -> SecretOut:
    secret_id = "gs_" + random_ids.token_hex(12)
    plain = new_secret()
    await store.insert_secret(
        s,
        policy_id=policy.id,
        secret_id=secret_id,
        # Sealed with MLGATE_WEBHOOK_SECRET_KEY when it is set: a database dump alone cannot
        # sign promotions.
        secret=box.seal(plain),
        created_at=now,
        created_by=actor,
    )
    created = await store.get_secret(s, policy.id, secret_id)
    assert created is not None
    await ports.audit(
        s, "policy.secret_added", f"policy:{policy.name}", {"secret_id": secret_id}, actor
    )
    return secret_out(created, policy.name, now, revealed=plain)


async def rotate_secret(
    s: AsyncSession,
    gate: str | None,
    grace_seconds: int | None = None,
    *,
    actor: str,
    box: SecretBox = UNSEALED,
) -> SecretOut:
    """A new secret; the newest previous one stays valid for ``grace_seconds`` (default a
    day), and any older ones are revoked, so at most two are ever active."""
    grace = DEFAULT_ROTATION_GRACE_SECONDS if grace_seconds is None else grace_seconds
    if not 0 <= grace <= MAX_ROTATION_GRACE_SECONDS:
        raise InvalidParameter(f"grace_seconds must be between 0 and {MAX_ROTATION_GRACE_SECONDS}.")
    policy = await find_policy(s, gate, lock=True)
    now = now_ms()
    active = await store.active_secrets(s, policy.id, now)  # newest first
    for index, old in enumerate(active):
        if index == 0 and grace > 0:
            expires = now + grace * 1000
            if old.expires_at is None or old.expires_at > expires:
                await store.update_secret(s, old.id, expires_at=expires)
        else:
            await store.update_secret(s, old.id, revoked_at=now)
    return await _insert_secret(s, policy, now, actor, box)


async def revoke_secret(
    s: AsyncSession, gate: str | None, secret_id: str | None, *, actor: str
) -> SecretOut:
    policy = await find_policy(s, gate, lock=True)
    if not secret_id:
        raise InvalidParameter("Missing value for required parameter 'secret_id'.")
    found = await store.get_secret(s, policy.id, secret_id)
    if found is None:
        raise SecretNotFound(secret_id)
    now = now_ms()
    if found.revoked_at is None:
        await store.update_secret(s, found.id, revoked_at=now)
        found.revoked_at = now
        await ports.audit(
            s, "policy.secret_revoked", f"policy:{policy.name}", {"secret_id": secret_id}, actor
        )
    return secret_out(found, policy.name, now)


async def list_secrets(s: AsyncSession, gate: str | None) -> list[SecretOut]:
    policy = await find_policy(s, gate)
    now = now_ms()
    return [secret_out(x, policy.name, now) for x in await store.list_secrets(s, policy.id, 100)]


async def active_secret_values(
    s: AsyncSession, policy_id: int, box: SecretBox = UNSEALED
) -> list[tuple[str, str]]:
    """(secret id, secret) of the gate's active secrets that this server can open, newest first.

    A secret sealed under another key (or with the key unset) cannot verify anything: it is
    left out and logged, and a request signed with it fails as a bad signature.
    """
    return open_secrets(await store.active_secrets(s, policy_id, now_ms()), box)


def open_secrets(found: list[GateSecret], box: SecretBox = UNSEALED) -> list[tuple[str, str]]:
    """(secret id, secret) of the active secret rows ``found`` that this server can open (see
    :func:`active_secret_values`)."""
    opened: list[tuple[str, str]] = []
    for x in found:
        try:
            opened.append((x.secret_id, open_gate_secret(box, x.secret)))
        except SecretUnavailable as exc:
            log.warning("gate secret %s cannot be opened: %s", x.secret_id, exc)
    return opened


def open_gate_secret(box: SecretBox, stored: str) -> str:
    """The plaintext of a stored gate secret (rows written before sealing are plain)."""
    if stored.startswith(SECRET_PREFIX):
        return stored
    return box.open(stored)
