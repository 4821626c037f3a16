"""Who is promoting: the request's checks, the gate it addresses, and its caller's proof.

Everything here only reads, except :func:`record_receipt` (a webhook's replay receipt), which is
written in the decision's own transaction. So the reads can run before that transaction
begins: under READ COMMITTED none of them took a lock, and a read before BEGIN sees what the
same read as the transaction's first statement would (another snapshot, as each statement's is).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import msgspec
from sqlalchemy.ext.asyncio import AsyncSession

from gates.events.signing import SecretBox
from gates.policies import oidc_trusts, ports, service, store
from gates.policies.errors import (
    BadSignature,
    NoGateForTarget,
    OidcTokenRefused,
    PromotionNotAllowed,
)
from gates.policies.models import GateSecret
from gates.policies.ports import Actor
from gates.policies.rules import canonical_target
from gates.policies.schemas import PromoteRequest
from gates.policies.signatures import (
    TOLERANCE_SECONDS,
    SignedRequest,
    check_timestamp,
    matching_secret,
)
from registry.artifacts.paths import parse_artifact_path
from registry.validation import parse_version, validate_model_name
from tracking.core.clock import now_ms
from tracking.core.errors import InvalidParameter

MAX_IDEMPOTENCY_KEY = 256


@dataclass(frozen=True, slots=True)
class Caller:
    """``actor``: the authenticated principal; ``requested_by``: what is recorded as the
    requester claim (the caller's ``requested_by``, else the principal); ``claim``: the
    ``requested_by`` the caller stated, if any."""

    actor: str
    auth_method: str
    requested_by: str
    claim: str | None
    # An OIDC caller's verified token (iss, sub, trust, mapped claims), as stored JSON.
    identity: str | None = None
    # A signed webhook's id, whose receipt the decision's transaction records (replays fail).
    webhook_id: str | None = None


def request_fingerprint(req: PromoteRequest, model: str, target: str) -> str:
    """What an idempotency key promises: the same model, target, run or version and path."""
    parts = (model, target, req.run_id or "", str(req.version or ""), req.artifact_path)
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def validate_request(req: PromoteRequest) -> tuple[str, str]:
    model = validate_model_name(req.model, "model")
    target = canonical_target(req.target)
    if (req.run_id is None) == (req.version is None):
        raise InvalidParameter("Give exactly one of 'run_id' and 'version'.")
    if req.version is not None:
        parse_version(req.version)
    if not req.dry_run:
        if not req.idempotency_key:
            raise InvalidParameter("Missing value for required parameter 'idempotency_key'.")
        if len(req.idempotency_key) > MAX_IDEMPOTENCY_KEY:
            raise InvalidParameter(
                f"idempotency_key may be at most {MAX_IDEMPOTENCY_KEY} characters."
            )
    parse_artifact_path(req.artifact_path)
    return model, target


def _unverified(model: str, target: str) -> str:
    # Names no gate: the caller has not proved it holds any gate's secret yet.
    return (
        f"The signature does not match an active secret of a gate guarding "
        f"model '{model}' -> {target}."
    )


async def authenticate(
    s: AsyncSession,
    gate: service.ResolvedGate,
    req: PromoteRequest,
    *,
    signed: SignedRequest | None,
    raw_body: bytes,
    bearer: Actor | None,
    oidc: oidc_trusts.OidcCaller | None,
    model: str,
    target: str,
    secret_box: SecretBox,
    secrets: list[GateSecret] | None = None,
) -> Caller:
    """The caller, proved (reads only); a signed webhook's receipt is still to be recorded.
    ``secrets``: the gate's active secret rows when they were read with it (``signed_gate``)."""
    now = now_ms()
    if oidc is not None:
        # The token was verified before this transaction (the issuer's keys come over the
        # network); what it was verified against must still hold for the gate deciding now.
        if not await oidc_trusts.still_trusted(s, oidc, gate.policy.id):
            raise OidcTokenRefused(
                "the trust that accepted the token was removed, or another gate decides now."
            )
        claim = req.requested_by[:256] if req.requested_by else None
        identity = msgspec.json.encode(oidc.identity).decode()
        return Caller(oidc.actor, "oidc", claim or oidc.actor, claim, identity)
    if signed is not None:
        check_timestamp(signed, now // 1000)
        if secrets is None:
            opened = await service.active_secret_values(s, gate.policy.id, secret_box)
        else:
            opened = service.open_secrets(secrets, secret_box)
        index = matching_secret(signed, [value for _, value in opened], raw_body)
        if index is None:
            raise BadSignature(_unverified(model, target))
        actor = f"gate:{gate.policy.name}/{opened[index][0]}"
        claim = req.requested_by[:256] if req.requested_by else None
        return Caller(actor, "hmac", claim or actor, claim, webhook_id=signed.webhook_id)
    assert bearer is not None
    if not await ports.can_promote(s, bearer, model, target):
        raise PromotionNotAllowed(f"'{bearer.name}' may not promote model '{model}' to {target}.")
    # A token's user is an authenticated principal: a requested_by beside it is ignored.
    return Caller(bearer.name, bearer.auth_method, bearer.name, bearer.name)


async def claim_with_receipt(s: AsyncSession, caller: Caller, **decision: Any) -> bool:
    """Claim a decision row (``store.claim_decision``), recording first, in the same statement
    where the database allows, a signed webhook's id: a replay is refused and claims nothing."""
    if caller.webhook_id is None:
        return await store.claim_decision(s, **decision)
    now = now_ms()
    await _forget_old_receipts(s, now)
    recorded, claimed = await store.claim_decision_after_receipt(
        s, caller.webhook_id, now, **decision
    )
    if not recorded:
        raise BadSignature(f"webhook-id '{caller.webhook_id}' was already received (replay).")
    return claimed


# When this process next drops old webhook receipts (epoch ms).
_next_prune = {"at": 0}


async def _forget_old_receipts(s: AsyncSession, now: int) -> None:
    """Receipts older than twice the window can never be replayed (the timestamp check
    refuses them first), so they are dropped as new ones arrive: at most once a window per
    process, not on every call (a receipt then lives up to three windows, harmlessly)."""
    if now < _next_prune["at"]:
        return
    _next_prune["at"] = now + TOLERANCE_SECONDS * 1000
    await store.forget_receipts(s, now - 2 * TOLERANCE_SECONDS * 1000)


async def signed_gate(
    s: AsyncSession, model: str, target: str
) -> tuple[service.ResolvedGate, list[GateSecret]]:
    """What ``gate_for_caller`` finds for a signed caller, with the gate's active secrets
    read in the same query (the signature is checked against them next)."""
    found = await service.gate_with_secrets_for(s, model, target)
    if found is None:
        # As gate_for_caller answers a signed caller: nothing tells gated targets apart.
        raise BadSignature(_unverified(model, target))
    return found


async def gate_for_caller(
    s: AsyncSession,
    model: str,
    target: str,
    signed: SignedRequest | None,
    bearer: Actor | None,
    oidc: oidc_trusts.OidcCaller | None,
) -> service.ResolvedGate:
    """The gate guarding ``target``; who may learn that there is none depends on the caller."""
    if (
        signed is None
        and bearer is not None
        and not await ports.can_promote(s, bearer, model, target)
    ):
        # Before the gate lookup: a token without rights must not learn whether a gate exists.
        raise PromotionNotAllowed(f"'{bearer.name}' may not promote model '{model}' to {target}.")
    gate = await service.gate_for(s, model, target)
    if gate is None:
        if oidc is not None:
            raise OidcTokenRefused("no gate guarding this target trusts the token's issuer.")
        if signed is not None:
            # Until a signature verifies, the caller is nobody: answer exactly as for a wrong
            # secret, so an unauthenticated prober cannot map which targets are gated.
            raise BadSignature(_unverified(model, target))
        raise NoGateForTarget(model, target)
    return gate


async def identify(
    s: AsyncSession,
    req: PromoteRequest,
    *,
    signed: SignedRequest | None,
    raw_body: bytes,
    bearer: Actor | None,
    oidc: oidc_trusts.OidcCaller | None,
    secret_box: SecretBox,
) -> tuple[str, str, service.ResolvedGate, Caller]:
    """The request's model and target, the gate guarding them and the caller proved against it
    (reads only; a signed caller's gate and secrets are one query)."""
    model, target = validate_request(req)
    secrets = None
    if signed is not None and oidc is None:
        gate, secrets = await signed_gate(s, model, target)
    else:
        gate = await gate_for_caller(s, model, target, signed, bearer, oidc)
    caller = await authenticate(
        s,
        gate,
        req,
        signed=signed,
        raw_body=raw_body,
        bearer=bearer,
        oidc=oidc,
        model=model,
        target=target,
        secret_box=secret_box,
        secrets=secrets,
    )
    return model, target, gate, caller
