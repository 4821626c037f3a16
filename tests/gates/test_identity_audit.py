"""Every change to who may do what lands in the audit trail, with who made it; secrets never."""

from __future__ import annotations

import json
import uuid

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from gates.audit import service as audit
from gates.identity import service
from gates.identity.errors import UserAlreadyExists

PASSWORD = "a-long-enough-password"


async def _kinds(s: AsyncSession, username: str) -> list[tuple[str, str, dict]]:  # type: ignore[type-arg]
    entries, _ = await audit.search(
        s, kind=None, subject=f"user:{username}", max_results=100, page_token=None
    )
    return [(e.kind, e.actor, e.payload) for e in reversed(entries)]


async def test_user_token_and_grant_changes_are_audited_with_their_actor(
    session: AsyncSession,
) -> None:
    name = f"audited-{uuid.uuid4().hex[:8]}"
    await service.create_user(session, name, PASSWORD, actor="alice")
    token = await service.create_token(session, name, "ci", actor="alice")
    grant = await service.create_grant(
        session, name, "registered_model", "fraud-*", "approver", ["Staging"], actor="bob"
    )
    await service.update_user(session, name, password="another-long-password", actor="alice")
    await service.revoke_token(session, token.token.token_id, actor="carol")
    await service.revoke_token(session, token.token.token_id, actor="carol")  # no-op: no entry
    second = await service.create_token(session, name, "ci-2", actor="alice")
    # Disabling revokes the user's live tokens too, and says so in the same entry.
    await service.update_user(session, name, disabled=True, actor="bob")
    await service.delete_grant(session, grant.grant_id, actor="bob")

    entries = await _kinds(session, name)
    assert [(kind, actor) for kind, actor, _ in entries] == [
        ("user.created", "alice"),
        ("token.created", "alice"),
        ("grant.created", "bob"),
        ("user.updated", "alice"),
        ("token.revoked", "carol"),
        ("token.created", "alice"),
        ("user.updated", "bob"),
        ("grant.deleted", "bob"),
    ]
    payloads = {kind: payload for kind, _, payload in entries}
    assert payloads["grant.created"]["pattern"] == "fraud-*"
    assert payloads["grant.created"]["role"] == "approver"
    assert payloads["grant.created"]["targets"] == ["Staging"]
    assert payloads["grant.deleted"]["grant_id"] == grant.grant_id
    assert entries[3][2] == {"username": name, "password_changed": True}
    assert entries[6][2] == {"username": name, "disabled": True, "tokens_revoked": 1}
    # No password, hash or token secret ever reaches the trail.
    text = json.dumps([payload for _, _, payload in entries])
    for secret in (PASSWORD, "another-long-password", token.secret, second.secret, "argon2"):
        assert secret not in text


async def test_deleting_a_user_is_audited(session: AsyncSession) -> None:
    name = f"leaver-{uuid.uuid4().hex[:8]}"
    await service.create_user(session, name, PASSWORD, actor="alice")
    await service.delete_user(session, name, actor="root")
    assert [(k, a) for k, a, _ in await _kinds(session, name)] == [
        ("user.created", "alice"),
        ("user.deleted", "root"),
    ]


async def test_a_refused_change_leaves_no_entry(session: AsyncSession) -> None:
    name = f"dup-{uuid.uuid4().hex[:8]}"
    await service.create_user(session, name, PASSWORD, actor="alice")
    with pytest.raises(UserAlreadyExists):
        await service.create_user(session, name, PASSWORD, actor="mallory")
    assert [(k, a) for k, a, _ in await _kinds(session, name)] == [("user.created", "alice")]
