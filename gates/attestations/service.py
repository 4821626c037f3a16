"""Attest gated moves (sign an in-toto statement in the move's transaction) and answer the
admission oracle from the live pointer.

What is signed: an in-toto Statement v1 whose subjects are the version's frozen files with
their sha256, and whose predicate (``https://mlgate.dev/promotion/v1``) records the target,
the model and version with its manifest digest, the gate and its policy version, every check
(observed value, threshold), the authenticated requester and approvers, the decision and the
time. Only a gate's own moves are attested (a passing decision, a final approval); an
administrator's override or a break-glass move is not, so the oracle answers no for it.
"""

from __future__ import annotations

import hashlib
import math
import secrets
from datetime import UTC, datetime
from typing import Any

import msgspec
from sqlalchemy.ext.asyncio import AsyncSession

from gates.attestations import store
from gates.attestations.dsse import ALGORITHM, PREDICATE_TYPE, STATEMENT_TYPE
from gates.attestations.keys import AttestationKeyring
from gates.attestations.models import GateAttestation
from gates.attestations.schemas import (
    AttestationOut,
    PublishedKey,
    PublishedKeys,
)
from gates.policies import ports
from gates.policies import store as policy_store
from gates.policies.schemas import CheckResult, DecisionOut
from registry import service as registry
from registry.validation import parse_version, validate_model_name
from tracking.core.auth import ResourceScope, glob_matches
from tracking.core.clock import now_ms
from tracking.core.errors import InvalidParameter

DIGEST_PREFIX = "sha256:"
_HEX = frozenset("0123456789abcdef")


def _rfc3339(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


def _json_safe(value: Any) -> Any:
    # A metric may be NaN or infinite; JSON has no such numbers, so they are written as text.
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _check(c: CheckResult) -> dict[str, Any]:
    out = {
        "name": c.name,
        "verdict": c.verdict,
        "observed": _json_safe(c.observed),
        "threshold": _json_safe(c.threshold),
    }
    if c.expected is not None:
        out["expected"] = c.expected
    if c.detail is not None:
        out["detail"] = c.detail
    return out


def build_statement(
    decision: DecisionOut,
    recorded: registry.RecordedFingerprint,
    *,
    requester: str,
    auth_method: str,
    approvers: list[str],
    moved_at: int,
) -> dict[str, Any]:
    """The in-toto statement of one gated move (see the module docstring)."""
    claim = decision.requested_by if decision.requested_by not in (None, requester) else None
    predicate: dict[str, Any] = {
        "target": decision.target,
        "model": {
            "name": recorded.name,
            "version": str(recorded.version),
            "manifest_digest": f"{DIGEST_PREFIX}{recorded.digest}" if recorded.digest else None,
        },
        "gate": {
            "name": decision.policy_name,
            "policy_id": decision.policy_id,
            "policy_version": decision.policy_version,
        },
        "checks": [_check(c) for c in decision.checks],
        "requester": {"principal": requester, "auth_method": auth_method, "claim": claim},
        "approvers": list(approvers),
        "decision": {
            "id": decision.decision_id,
            "trigger": decision.trigger,
            "run_id": decision.run_id,
            "decided_at": _rfc3339(decision.created_at),
        },
        "moved_at": _rfc3339(moved_at),
    }
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": f.path, "digest": {"sha256": f.sha256}} for f in recorded.files],
        "predicateType": PREDICATE_TYPE,
        "predicate": predicate,
    }


def render(row: GateAttestation) -> AttestationOut:
    return AttestationOut(
        attestation_id=row.id,
        decision_id=row.decision_id,
        model=row.model_name,
        version=str(row.version),
        target=row.target,
        digest=f"{DIGEST_PREFIX}{row.manifest_digest}" if row.manifest_digest else None,
        key_id=row.key_id,
        payload_sha256=row.payload_sha256,
        created_at=row.created_at,
        envelope=msgspec.Raw(row.envelope.encode("utf-8")),
    )


async def attest_move(
    s: AsyncSession,
    keyring: AttestationKeyring,
    decision: DecisionOut,
    *,
    requester: str,
    auth_method: str,
    approvers: list[str],
    actor: str,
) -> AttestationOut:
    """Sign and store the attestation of the move ``decision`` just made, in its transaction,
    with an audit entry naming it (``gate.attested``)."""
    assert decision.version is not None
    model, version, target = decision.model, int(decision.version), decision.target
    recorded, live = await registry.moved_version(s, model, version, target)
    at = now_ms()
    statement = build_statement(
        decision,
        recorded,
        requester=requester,
        auth_method=auth_method,
        approvers=approvers,
        moved_at=at,
    )
    envelope, payload = keyring.signer.envelope(statement)
    row = GateAttestation(
        id=secrets.token_hex(16),
        decision_id=decision.decision_id,
        model_name=model,
        version=version,
        target=target,
        manifest_digest=recorded.digest,
        # The history row this move wrote (the model's row is locked until commit).
        pointer_event_id=live.event_id if live.version == version else None,
        key_id=keyring.signer.public.key_id,
        payload_sha256=hashlib.sha256(payload).hexdigest(),
        envelope=msgspec.json.encode(envelope).decode("utf-8"),
        created_at=at,
    )
    # Published no later than its first signature (start-up may have met a schema behind head).
    signer = keyring.signer.public
    await store.insert_attestation(s, row, algorithm=ALGORITHM, pem=signer.pem)
    out = render(row)
    await _audit_attestation(s, out, actor)
    return out


async def _audit_attestation(s: AsyncSession, out: AttestationOut, actor: str) -> None:
    """The ``gate.attested`` audit entry naming the attestation (its id, payload and key)."""
    await ports.audit(
        s,
        "gate.attested",
        f"model:{out.model}",
        {
            "attestation_id": out.attestation_id,
            "payload_sha256": out.payload_sha256,
            "key_id": out.key_id,
            "decision_id": out.decision_id,
            "model": out.model,
            "version": str(out.version),
            "target": out.target,
            "digest": out.digest,
        },
        actor,
    )


async def attest_approval(
    s: AsyncSession,
    keyring: AttestationKeyring,
    decision: DecisionOut,
    request: Any,
    approvers: list[str],
) -> AttestationOut:
    """Sign the move a final approval made: the request's requester principal and every
    approver (the last one is the actor)."""
    opened = await policy_store.get_decision(s, request.decision_id)
    return await attest_move(
        s,
        keyring,
        decision,
        requester=request.requester or (opened.actor if opened else ""),
        auth_method=opened.auth_method if opened else "unknown",
        approvers=approvers,
        actor=approvers[-1],
    )


def may_read(scope: ResourceScope | None, name: str) -> bool:
    """Whether a caller with ``scope`` may read registered model ``name`` (None: anyone)."""
    if scope is None or scope.everything:
        return True
    return name in scope.names or any(glob_matches(p, name) for p in scope.patterns)


async def list_attestations(
    s: AsyncSession, name: str | None, version: str | None
) -> list[AttestationOut]:
    """A model's attestations (one version's, with ``version``), newest first."""
    model = validate_model_name(name, "name")
    number = int(parse_version(version)) if version is not None else None
    await registry.get_registered_model(s, model)  # 404 for an unknown model
    return [render(r) for r in await store.attestations_of(s, model, number)]


def parse_digest(raw: str) -> str:
    """``sha256:<64 hex>`` (any case) -> the lowercase hex; anything else is a 400."""
    text = raw.strip().lower()
    hexpart = text[len(DIGEST_PREFIX) :] if text.startswith(DIGEST_PREFIX) else ""
    if len(hexpart) != 64 or not set(hexpart) <= _HEX:
        raise InvalidParameter(
            "Invalid value for 'digest': expected 'sha256:' and 64 hex digits (the version's "
            "manifest digest)."
        )
    return hexpart


async def published_keys(s: AsyncSession, keyring: AttestationKeyring | None) -> PublishedKeys:
    """Every key attestations were ever signed with, and the configured ones."""
    active = keyring.signer.public.key_id if keyring else None
    keys = [
        PublishedKey(k.key_id, k.algorithm, k.public_pem, k.key_id == active, k.first_seen)
        for k in await store.known_keys(s)
    ]
    return PublishedKeys(keys)


async def remember_keys(s: AsyncSession, keyring: AttestationKeyring) -> None:
    """Publish every key of the keyring for good (called at start-up)."""
    at = now_ms()
    for key in keyring.verifying_keys:
        await store.remember_key(s, key.key_id, ALGORITHM, key.pem, at)
