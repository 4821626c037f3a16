"""Deciding a promotion in one transaction: claim the decision, evaluate, act, record.

See the package docstring for idempotency and reopening.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec
from sqlalchemy.ext.asyncio import AsyncSession

from gates.approvals import service as approvals
from gates.attestations import service as attestation_service
from gates.attestations.keys import AttestationKeyring
from gates.events.signing import SecretBox
from gates.policies import oidc_trusts, ports, service, store
from gates.policies.errors import IdempotencyKeyReused
from gates.policies.evaluation import SKIP, Candidate, digest_check, evaluate, outcome_of
from gates.policies.models import GateDecision
from gates.policies.moves import execute_move
from gates.policies.ports import Actor
from gates.policies.promotion.callers import (
    Caller,
    claim_with_receipt,
    identify,
    request_fingerprint,
)
from gates.policies.promotion.candidates import load_candidate, register_candidate
from gates.policies.promotion.prepare import Prepared
from gates.policies.schemas import CheckResult, DecisionOut, PromoteRequest
from gates.policies.signatures import SignedRequest
from registry.artifacts.storage import ArtifactStorage
from registry.service import VersionFingerprint
from tracking.core.clock import now_ms

# A replay follows at most this many reopen links (past them, the key cannot be reopened).
MAX_REOPENS = 100
CLOSED_STATUSES = ("expired", "rejected", "cancelled", "failed")


@dataclass(frozen=True, slots=True)
class Promotion:
    """A decision and whether it is a stored one returned again (an idempotent retry)."""

    decision: DecisionOut
    replayed: bool = False

    @property
    def closed(self) -> bool:
        """Whether the decision's approval request was closed without moving anything."""
        return self.decision.approval_status in CLOSED_STATUSES


def _same_requester(found: GateDecision, caller: Caller) -> bool:
    recorded = found.requested_by or ""
    if caller.claim is None:  # no claim now: the stored one must have been the default too
        return recorded == found.actor
    return recorded == caller.claim


async def _existing(
    s: AsyncSession, model: str, target: str, key: str, fingerprint: str, caller: Caller
) -> Promotion | None:
    """The newest decision of a key (following reopen links), or None for a new key.

    The same key with another request, or another requester, is a 400 (not a replay)."""
    found = await store.decision_by_key(s, model, target, key)
    if found is None:
        return None
    if found.request_hash != fingerprint or not _same_requester(found, caller):
        raise IdempotencyKeyReused(key)
    for _ in range(MAX_REOPENS):
        if not found.superseded_by:
            break
        newer = await store.get_decision(s, found.superseded_by)
        if newer is None:
            break
        found = newer
    return Promotion(await service.render_decision(s, found), replayed=True)


async def promote(
    s: AsyncSession,
    req: PromoteRequest,
    *,
    raw_body: bytes,
    signed: SignedRequest | None,
    bearer: Actor | None,
    storage: ArtifactStorage | None,
    approval_ttl_hours: int,
    oidc: oidc_trusts.OidcCaller | None = None,
    fingerprint: VersionFingerprint | None = None,
    secret_box: SecretBox = service.UNSEALED,
    trigger: str = "webhook",
    attestations: AttestationKeyring | None = None,
    prepared: Prepared | None = None,
) -> Promotion:
    """Decide on a promotion request and act on the decision (see the package docstring).

    ``trigger`` is what the decision records as its origin: ``webhook`` (the HTTP endpoint)
    or ``ui`` (the web UI's promotion form, acting as the signed-in user). With
    ``attestations`` (the server's keyring), a move is attested in this transaction.
    ``prepared``: what :func:`~gates.policies.promotion.prepare.prepare` read for this same
    request before this transaction (its gate, caller, candidate and fingerprint are used
    instead of being read here)."""
    if prepared is None:
        model, target, gate, caller = await identify(
            s,
            req,
            signed=signed,
            raw_body=raw_body,
            bearer=bearer,
            oidc=oidc,
            secret_box=secret_box,
        )
        candidate = None
    else:
        model, target, gate, caller = (
            prepared.model,
            prepared.target,
            prepared.gate,
            prepared.caller,
        )
        candidate, fingerprint = prepared.candidate, prepared.fingerprint
    decision_id = service.new_id()
    stored = await _claim_decision(s, req, gate, caller, model, target, decision_id, trigger)
    if stored is not None:
        return stored
    # The events of the registration, the move and the decision are written together at the
    # end (one statement on PostgreSQL), still in this transaction.
    async with ports.events_batched(s):
        return await _decide(
            s, req, gate, caller, model, target, decision_id, storage, fingerprint, candidate,
            approval_ttl_hours, attestations,
        )  # fmt: skip


async def _decide(
    s: AsyncSession,
    req: PromoteRequest,
    gate: service.ResolvedGate,
    caller: Caller,
    model: str,
    target: str,
    decision_id: str,
    storage: ArtifactStorage | None,
    fingerprint: VersionFingerprint | None,
    candidate: Candidate | None,
    approval_ttl_hours: int,
    attestations: AttestationKeyring | None,
) -> Promotion:
    """Evaluate the claimed decision, act on it, record and announce it."""
    candidate, checks = await _evaluate(
        s, req, gate, caller, model, target, storage, fingerprint, candidate
    )
    outcome = outcome_of(checks)
    approval_request_id = None
    if not req.dry_run and candidate.version is not None:
        approval_request_id = await _act(
            s, gate, caller, candidate, outcome, decision_id, approval_ttl_hours
        )
    out = await _record_outcome(
        s, req, gate, decision_id, outcome, checks, candidate, approval_request_id
    )
    if attestations is not None and outcome == "passed" and not req.dry_run and out.version:
        await _attest(s, attestations, out, caller)
    if not req.dry_run:
        await service.announce_decision(s, out)
    return Promotion(out)


async def _attest(
    s: AsyncSession, attestations: AttestationKeyring, out: DecisionOut, caller: Caller
) -> None:
    """Sign and store the move just made, in this same transaction."""
    await attestation_service.attest_move(
        s,
        attestations,
        out,
        requester=caller.actor,
        auth_method=caller.auth_method,
        approvers=[],
        actor=caller.actor,
    )


async def _record_outcome(
    s: AsyncSession,
    req: PromoteRequest,
    gate: service.ResolvedGate,
    decision_id: str,
    outcome: str,
    checks: list[CheckResult],
    candidate: Candidate,
    approval_request_id: str | None,
) -> DecisionOut:
    """Write the evaluated outcome onto the claimed decision row; the decision as answered."""
    found = await store.update_decision(
        s,
        decision_id,
        outcome=outcome,
        checks=service.encode_checks(checks),
        run_id=candidate.run.info.run_id if candidate.run else req.run_id,
        version=candidate.version,
        digest=candidate.digest,
        approval_request_id=approval_request_id,
    )
    return await service.render_decision(s, found, policy_name=gate.policy.name)


async def _claim_decision(
    s: AsyncSession,
    req: PromoteRequest,
    gate: service.ResolvedGate,
    caller: Caller,
    model: str,
    target: str,
    decision_id: str,
    trigger: str,
) -> Promotion | None:
    """Claim ``decision_id``'s row before anything is created; a stored decision to return
    instead (an idempotent replay, or the winner of a concurrent request) when there is one."""
    request_hash = request_fingerprint(req, model, target)
    base = {
        "policy_id": gate.policy.id,
        "policy_version_id": gate.version.id,
        "policy_version": gate.version.version,
        "model_name": model,
        "target": target,
        "actor": caller.actor,
        "auth_method": caller.auth_method,
        "requested_by": caller.requested_by,
        "verified_identity": caller.identity,
        "trigger": trigger,
        "dry_run": req.dry_run,
        "checks": "[]",
        "outcome": "evaluating",
        "id": decision_id,
    }
    if req.dry_run:
        await claim_with_receipt(s, caller, created_at=now_ms(), **base)
        return None
    assert req.idempotency_key is not None
    key = req.idempotency_key
    # Claim first: a new key (the usual case) is then one statement. A taken key inserts
    # nothing (on PostgreSQL a concurrent claim of it waits here until that request ends),
    # and the stored decision is read as before.
    claimed = await claim_with_receipt(
        s, caller, created_at=now_ms(), idempotency_key=key, request_hash=request_hash, **base
    )
    if claimed:
        return None
    stored = await _existing(s, model, target, key, request_hash, caller)
    if stored is not None and not (req.reopen and stored.closed):
        return stored
    if stored is not None:
        previous = stored.decision.decision_id
        # Link first: of two concurrent reopens only one sets the link (the other waits on the
        # row lock, then finds it set and replays the winner's decision).
        if await store.link_superseding(s, previous, decision_id):
            await store.claim_decision(
                s, created_at=now_ms(), request_hash=request_hash, supersedes=previous, **base
            )
            return None
    winner = await _existing(s, model, target, key, request_hash, caller)
    assert winner is not None
    return winner


async def _evaluate(
    s: AsyncSession,
    req: PromoteRequest,
    gate: service.ResolvedGate,
    caller: Caller,
    model: str,
    target: str,
    storage: ArtifactStorage | None,
    fingerprint: VersionFingerprint | None,
    candidate: Candidate | None,
) -> tuple[Candidate, list[CheckResult]]:
    """Run the gate's checks; a run that passes (or awaits approval) gets its version
    registered, kept only when its digest check passes too. ``candidate``: read already
    (before this transaction), else read here."""
    if candidate is None:
        candidate = await load_candidate(s, req, model, target)
    checks = await evaluate(s, gate.rules, candidate)
    created = None
    if outcome_of(checks) != "failed" and not req.dry_run and candidate.version is None:
        created = await register_candidate(
            s, req, model, candidate, storage, caller.actor, fingerprint
        )
        checks = [digest_check(candidate) if c.name == "artifact_digest" else c for c in checks]
    if req.dry_run and candidate.version is None:
        checks = [_dry_digest(c) for c in checks]
    if outcome_of(checks) == "failed" and created is not None:
        await created.rollback()
        candidate.version = None
    elif created is not None:
        await created.commit()
    return candidate, checks


async def _act(
    s: AsyncSession,
    gate: service.ResolvedGate,
    caller: Caller,
    candidate: Candidate,
    outcome: str,
    decision_id: str,
    approval_ttl_hours: int,
) -> str | None:
    """Move the version (passed) or open an approval request (pending); the request's id."""
    assert candidate.version is not None
    if outcome == "passed":
        await execute_move(
            s,
            model=candidate.model,
            version=candidate.version,
            target=candidate.target,
            rules=gate.rules,
            actor=caller.actor,
            decision_id=decision_id,
            gate=gate.policy.name,
        )
    elif outcome == "pending_approval":
        return await approvals.open_request(
            s,
            decision_id=decision_id,
            gate=gate,
            model=candidate.model,
            version=candidate.version,
            target=candidate.target,
            run_id=candidate.run.info.run_id if candidate.run else None,
            digest=candidate.digest,
            requested_by=caller.requested_by,
            requester=caller.actor,
            run_author=candidate.author,
            ttl_hours=approval_ttl_hours,
        )
    return None


def _dry_digest(c: CheckResult) -> CheckResult:
    if c.name != "artifact_digest" or c.verdict != SKIP:
        return c
    return msgspec.structs.replace(c, detail="dry run: computed when the version is registered")
