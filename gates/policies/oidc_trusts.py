"""The OIDC issuers a gate trusts: add, list and remove (audited), and checking a CI token.

Verification is split around the database: :func:`trusts_for` reads the trusts of the gate
guarding a target, :func:`verify_token` checks the token against them (fetching the issuer's
keys over the network, outside any transaction), and the deciding transaction then confirms,
with :func:`still_trusted`, that the trust that accepted the token is still active on the gate
that decides.
"""

from __future__ import annotations

import secrets as random_ids
import time
from dataclasses import dataclass

import msgspec
from sqlalchemy.ext.asyncio import AsyncSession

from gates.policies import oidc, ports, service, store
from gates.policies.errors import (
    OidcClaimsRefused,
    OidcTokenRefused,
    OidcTrustNotFound,
    TooManyOidcTrusts,
)
from gates.policies.jwks import IssuerKeys
from gates.policies.models import GateOidcTrust
from gates.policies.schemas import OidcTrustOut, OidcTrustSpec
from tracking.core.clock import now_ms
from tracking.core.errors import InvalidParameter

MAX_ACTIVE_TRUSTS = 8


def trust_out(t: GateOidcTrust, gate: str) -> OidcTrustOut:
    return OidcTrustOut(
        trust_id=t.trust_id,
        gate=gate,
        issuer=t.issuer,
        audience=t.audience,
        claims=msgspec.json.decode(t.claims, type=dict[str, list[str]]),
        created_at=t.created_at,
        created_by=t.created_by,
        active=t.revoked_at is None,
        revoked_at=t.revoked_at,
    )


async def add_trust(
    s: AsyncSession, spec: OidcTrustSpec, *, actor: str, allow_http_loopback: bool
) -> OidcTrustOut:
    """Trust ``spec.issuer``'s tokens for ``spec.audience`` whose claims match ``spec.claims``."""
    issuer = oidc.canonical_issuer(spec.issuer, allow_http_loopback=allow_http_loopback)
    audience = oidc.check_audience(spec.audience)
    rules = oidc.canonical_rules(spec.claims)
    policy = await service.find_policy(s, spec.gate, lock=True)
    if len(await store.oidc_trusts(s, policy.id, active_only=True)) >= MAX_ACTIVE_TRUSTS:
        raise TooManyOidcTrusts(policy.name, MAX_ACTIVE_TRUSTS)
    trust_id = "got_" + random_ids.token_hex(12)
    await store.insert_oidc_trust(
        s,
        policy_id=policy.id,
        trust_id=trust_id,
        issuer=issuer,
        audience=audience,
        claims=msgspec.json.encode(rules).decode(),
        created_at=now_ms(),
        created_by=actor,
    )
    created = await store.get_oidc_trust(s, policy.id, trust_id)
    assert created is not None
    out = trust_out(created, policy.name)
    payload = {"trust_id": trust_id, "issuer": issuer, "audience": audience, "claims": rules}
    await ports.audit(s, "policy.oidc_trust_added", f"policy:{policy.name}", payload, actor)
    return out


async def remove_trust(
    s: AsyncSession, ref_gate: str | None, trust_id: str | None, *, actor: str
) -> OidcTrustOut:
    """Stop trusting an issuer: tokens it accepted are refused from now on (kept, revoked)."""
    policy = await service.find_policy(s, ref_gate, lock=True)
    if not trust_id:
        raise InvalidParameter("Missing value for required parameter 'trust_id'.")
    found = await store.get_oidc_trust(s, policy.id, trust_id)
    if found is None:
        raise OidcTrustNotFound(trust_id)
    if found.revoked_at is None:
        await store.revoke_oidc_trust(s, found.id, now_ms())
        await s.refresh(found)
        await ports.audit(
            s,
            "policy.oidc_trust_removed",
            f"policy:{policy.name}",
            {"trust_id": trust_id, "issuer": found.issuer},
            actor,
        )
    return trust_out(found, policy.name)


async def list_trusts(s: AsyncSession, gate: str | None) -> list[OidcTrustOut]:
    policy = await service.find_policy(s, gate)
    return [
        trust_out(t, policy.name) for t in await store.oidc_trusts(s, policy.id, active_only=False)
    ]


# --- checking a token ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OidcCaller:
    """A CI token that verified against one trust of the gate ``policy_id``."""

    policy_id: int
    trust_id: str
    actor: str
    identity: dict[str, str]


@dataclass(frozen=True, slots=True)
class Trust:
    policy_id: int
    trust_id: str
    issuer: str
    audience: str
    rules: dict[str, list[str]]


async def trusts_for(s: AsyncSession, model: str, target: str) -> list[Trust]:
    """The active trusts of the gate guarding ``target`` of ``model`` (none: no such gate)."""
    gate = await service.gate_for(s, model, target)
    if gate is None:
        return []
    return [
        Trust(
            gate.policy.id,
            t.trust_id,
            t.issuer,
            t.audience,
            msgspec.json.decode(t.claims, type=dict[str, list[str]]),
        )
        for t in await store.oidc_trusts(s, gate.policy.id, active_only=True)
    ]


async def verify_token(token: str, trusts: list[Trust], keys: IssuerKeys) -> OidcCaller:
    """The caller a token proves, against the trusts of the gate it asks (see oidc.py).

    A token no trust's issuer and audience accept is a 401 that names no gate, so a prober
    cannot learn which targets are gated; a verified token whose claims no trust allows is a
    403 (the caller is known; its pipeline is not the one the gate trusts).
    """
    peeked = oidc.peek(token)
    candidates = [t for t in trusts if t.issuer == peeked.issuer]
    if not candidates:
        raise OidcTokenRefused(
            "no gate guarding this target trusts the token's issuer (or the target has no gate)."
        )
    key = await keys.key(peeked.issuer, peeked.key_id)
    claims = oidc.verify_signature(peeked, key)
    now = time.time()
    audience_refusal: OidcTokenRefused | None = None
    claims_refusal: OidcClaimsRefused | None = None
    for trust in candidates:
        try:
            subject = oidc.check_registered_claims(
                claims, issuer=trust.issuer, audience=trust.audience, now=now
            )
        except OidcTokenRefused as exc:
            audience_refusal = audience_refusal or exc
            continue
        try:
            oidc.check_rules(claims, trust.rules)
        except OidcClaimsRefused as exc:  # another trust of the gate may allow them
            claims_refusal = claims_refusal or exc
            continue
        return OidcCaller(
            trust.policy_id,
            trust.trust_id,
            oidc.actor_name(trust.issuer, subject),
            oidc.recorded_identity(claims, trust.rules, trust.trust_id),
        )
    if claims_refusal is not None:
        raise claims_refusal
    assert audience_refusal is not None
    raise audience_refusal


async def still_trusted(s: AsyncSession, caller: OidcCaller, policy_id: int) -> bool:
    """Whether the trust that accepted the token is active on the gate deciding now."""
    if caller.policy_id != policy_id:
        return False
    found = await store.get_oidc_trust(s, policy_id, caller.trust_id)
    return found is not None and found.revoked_at is None
