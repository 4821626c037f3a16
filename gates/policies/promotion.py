"""The CI promotion webhook: authenticate, decide, and act on the decision in one transaction.

A passing decision registers the run's version and moves the target (or opens an approval
request); a failing one is stored and answered with 422, and nothing is created or moved.
Idempotency rests on the unique (model, target, idempotency_key) of ``gate_decisions``: the
decision row is claimed *before* anything is created, so a concurrent duplicate waits on it and
then returns the stored decision. Dry runs evaluate without acting; their decisions are stored
(``dry_run: true``) for explanation but are never bound to an idempotency key.

Closed means closed: a replay answers with the newest decision of the key and the *current*
status of its approval request. With ``reopen``, a replay whose request is closed (expired,
rejected, cancelled or failed) is decided again; the new decision ``supersedes`` the stored one,
which is linked forward to it, so later replays of the key follow the links to it. A reopen is
never implicit: otherwise a CI retry would silently re-ask after a rejection.
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass

import msgspec
from sqlalchemy.ext.asyncio import AsyncSession

from gates.approvals import service as approvals
from gates.attestations import service as attestation_service
from gates.attestations.keys import AttestationKeyring
from gates.events.signing import SecretBox
from gates.policies import oidc_trusts, ports, service, store
from gates.policies.errors import (
    BadSignature,
    IdempotencyKeyReused,
    NoGateForTarget,
    OidcTokenRefused,
    PromotionNotAllowed,
)
from gates.policies.evaluation import (
    SKIP,
    Candidate,
    digest_check,
    evaluate,
    load_run,
    outcome_of,
)
from gates.policies.models import GateDecision
from gates.policies.moves import execute_move
from gates.policies.ports import Actor
from gates.policies.rules import canonical_target
from gates.policies.schemas import CheckResult, DecisionOut, PromoteRequest
from gates.policies.signatures import (
    TOLERANCE_SECONDS,
    SignedRequest,
    check_timestamp,
    matching_secret,
)
from registry import service as registry
from registry.artifacts.paths import parse_artifact_path
from registry.artifacts.storage import ArtifactStorage
from registry.errors import RegisteredModelAlreadyExists
from registry.schemas import CreateModelVersion, CreateRegisteredModel
from registry.service import VersionFingerprint
from registry.validation import parse_version, validate_model_name
from tracking.core.auth import ANONYMOUS
from tracking.core.clock import now_ms
from tracking.core.errors import InvalidParameter, MlflowError, ResourceNotFound

MAX_IDEMPOTENCY_KEY = 256
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


async def _authenticate(
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
) -> Caller:
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
        secrets = await service.active_secret_values(s, gate.policy.id, secret_box)
        index = matching_secret(signed, [value for _, value in secrets], raw_body)
        if index is None:
            raise BadSignature(_unverified(model, target))
        await _forget_old_receipts(s, now)
        if not await store.record_receipt(s, signed.webhook_id, now):
            raise BadSignature(f"webhook-id '{signed.webhook_id}' was already received (replay).")
        actor = f"gate:{gate.policy.name}/{secrets[index][0]}"
        claim = req.requested_by[:256] if req.requested_by else None
        return Caller(actor, "hmac", claim or actor, claim)
    assert bearer is not None
    if not await ports.can_promote(s, bearer, model, target):
        raise PromotionNotAllowed(f"'{bearer.name}' may not promote model '{model}' to {target}.")
    # A token's user is an authenticated principal: a requested_by beside it is ignored.
    return Caller(bearer.name, bearer.auth_method, bearer.name, bearer.name)


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
) -> Promotion:
    """Decide on a promotion request and act on the decision (see the module docstring).

    ``trigger`` is what the decision records as its origin: ``webhook`` (the HTTP endpoint)
    or ``ui`` (the web UI's promotion form, acting as the signed-in user). With
    ``attestations`` (the server's keyring), a move is attested in this transaction."""
    model, target = validate_request(req)
    gate = await _gate_for_caller(s, model, target, signed, bearer, oidc)
    caller = await _authenticate(
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
    )
    decision_id = service.new_id()
    stored = await _claim_decision(s, req, gate, caller, model, target, decision_id, trigger)
    if stored is not None:
        return stored
    candidate, checks = await _evaluate(s, req, gate, caller, model, target, storage, fingerprint)
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


async def _gate_for_caller(
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
        await store.claim_decision(s, created_at=now_ms(), **base)
        return None
    assert req.idempotency_key is not None
    key = req.idempotency_key
    # Claim first: a new key (the usual case) is then one statement. A taken key inserts
    # nothing (on PostgreSQL a concurrent claim of it waits here until that request ends),
    # and the stored decision is read as before.
    claimed = await store.claim_decision(
        s, created_at=now_ms(), idempotency_key=key, request_hash=request_hash, **base
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
) -> tuple[Candidate, list[CheckResult]]:
    """Run the gate's checks; a run that passes (or awaits approval) gets its version
    registered, kept only when its digest check passes too."""
    candidate = await _candidate(s, req, model, target, storage)
    checks = await evaluate(s, gate.rules, candidate)
    created = None
    if outcome_of(checks) != "failed" and not req.dry_run and candidate.version is None:
        created = await _register_version(
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


async def _candidate(
    s: AsyncSession,
    req: PromoteRequest,
    model: str,
    target: str,
    storage: ArtifactStorage | None,
) -> Candidate:
    if req.version is not None:
        mv = await registry.get_model_version(s, model, req.version)
        run = None
        if mv.run_id:
            try:
                run = await load_run(s, mv.run_id)
            except ResourceNotFound:
                run = None
        number = int(mv.version)
        digest = await ports.version_digest(s, model, number)
        return Candidate(
            model,
            target,
            run,
            number,
            digest,
            digest_checked=True,
            version_tags={t.key: t.value for t in mv.tags},
            # With auth off every version is the anonymous actor's: that names nobody.
            version_author=mv.user_id if mv.user_id and mv.user_id != ANONYMOUS else None,
        )
    assert req.run_id is not None
    run = await load_run(s, req.run_id)
    candidate = Candidate(model, target, run)
    candidate.model_row, versions = await registry.run_versions(s, model, run.info.run_id)
    candidate.model_exists = candidate.model_row is not None
    candidate.related_versions = [int(v.version) for v in versions]
    source = f"runs:/{run.info.run_id}/{parse_artifact_path(req.artifact_path).posix}"
    same = [v for v in versions if v.source == source]
    if same:
        # Promoting a run again (Staging, then Production) moves the version it already has,
        # so what reaches Production is the version that passed Staging, not a copy of it.
        candidate.version = int(same[0].version)
        candidate.version_tags = {t.key: t.value for t in same[0].tags}
        candidate.digest = await ports.version_digest(s, model, candidate.version)
        candidate.digest_checked = True
    return candidate


class _Savepoint:
    """The savepoint a registration ran in, or None when it needed none (see below)."""

    def __init__(self, tx: object | None) -> None:
        self._tx = tx

    async def commit(self) -> None:
        if self._tx is not None:
            await self._tx.commit()  # type: ignore[attr-defined]

    async def rollback(self) -> None:
        assert self._tx is not None, "a registration without a savepoint cannot fail its digest"
        await self._tx.rollback()  # type: ignore[attr-defined]


async def _register_version(
    s: AsyncSession,
    req: PromoteRequest,
    model: str,
    candidate: Candidate,
    storage: ArtifactStorage | None,
    actor: str,
    fingerprint: VersionFingerprint | None,
) -> _Savepoint:
    """Register the run's version inside a savepoint, so a missing digest can undo it.

    Only the digest check can change after registering (every other check has passed), so
    with a fingerprint taken before the transaction, of an existing model and with a digest,
    nothing can undo the registration: it then runs without a savepoint (two statements)."""
    assert candidate.run is not None
    certain = candidate.model_exists and fingerprint is not None and bool(fingerprint.digest)
    tx = None if certain else await s.begin_nested()
    if not candidate.model_exists:
        with contextlib.suppress(RegisteredModelAlreadyExists):
            await registry.create_registered_model(
                s, CreateRegisteredModel(name=model), actor=actor
            )
        fingerprint = None  # taken before the model existed: the location was not checked
    create = create_request(req, model, candidate.run.info.run_id)
    # The model's row and the run (with its model outputs) were read in this transaction:
    # the source check resolves against them instead of reading them again.
    known = registry.KnownSource(model=candidate.model_row, run=candidate.run)
    if fingerprint is None:
        fingerprint = await ports.fingerprint_for(s, storage, create, known=known)
    # create_model_version refuses a fingerprint of another location than the source's.
    _, candidate.version = await registry.register_version(
        s, create, actor=actor, fingerprint=fingerprint, known=known
    )
    candidate.digest = fingerprint.digest if fingerprint is not None else None
    candidate.digest_checked = True
    return _Savepoint(tx)


def create_request(req: PromoteRequest, model: str, run_id: str) -> CreateModelVersion:
    source = f"runs:/{run_id}/{parse_artifact_path(req.artifact_path).posix}"
    return CreateModelVersion(name=model, source=source, run_id=run_id)


async def fingerprint_run(
    s: AsyncSession, storage: ArtifactStorage | None, req: PromoteRequest
) -> VersionFingerprint | None:
    """Hash the files a promotion of ``req.run_id`` would register, before the write
    transaction (so hashing a large model holds no lock); None when it cannot tell yet."""
    if req.dry_run or not req.run_id or not req.model:
        return None
    if req.idempotency_key and req.target:
        with contextlib.suppress(MlflowError):
            target = canonical_target(req.target)
            if await store.decision_by_key(s, req.model, target, req.idempotency_key):
                return None  # a retry: the stored decision is returned, nothing is hashed
    try:
        return await ports.fingerprint_for(s, storage, create_request(req, req.model, req.run_id))
    except MlflowError:
        return None
