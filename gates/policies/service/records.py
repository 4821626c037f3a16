"""What the policies service shares: limits, ids, the unsealed box and the wire records."""

from __future__ import annotations

import logging
import secrets as random_ids

import msgspec

from gates.events.signing import SecretBox
from gates.policies import rules
from gates.policies.models import GateDecision, GatePolicy, GatePolicyVersion, GateSecret
from gates.policies.schemas import CheckResult, DecisionOut, PolicyOut, PolicyVersionOut, SecretOut
from tracking.core.errors import InvalidParameter

log = logging.getLogger("mlgate.gates")
# Without MLGATE_WEBHOOK_SECRET_KEY, secrets are stored marked as unsealed.
UNSEALED = SecretBox("")

MAX_PAGE = 1000
DEFAULT_PAGE = 100
MAX_ACTIVE_SECRETS = 2
DEFAULT_ROTATION_GRACE_SECONDS = 24 * 3600
MAX_ROTATION_GRACE_SECONDS = 30 * 24 * 3600


def page_limit(max_results: int | None) -> int:
    if max_results is None:
        return DEFAULT_PAGE
    if not 1 <= max_results <= MAX_PAGE:
        raise InvalidParameter(f"max_results must be between 1 and {MAX_PAGE}.")
    return max_results


def new_id() -> str:
    return random_ids.token_hex(16)


# --- rendering -----------------------------------------------------------------------------------


def policy_out(p: GatePolicy, v: GatePolicyVersion) -> PolicyOut:
    return PolicyOut(
        policy_id=str(p.id),
        name=p.name,
        model=p.model_pattern,
        target=p.target,
        enabled=p.enabled,
        version=str(v.version),
        rules=rules.decode_rules(v.spec),
        created_at=p.created_at,
        updated_at=p.updated_at,
        created_by=p.created_by,
    )


def policy_version_out(v: GatePolicyVersion) -> PolicyVersionOut:
    return PolicyVersionOut(
        version=str(v.version),
        policy_version_id=str(v.id),
        model=v.model_pattern,
        target=v.target,
        rules=rules.decode_rules(v.spec),
        created_at=v.created_at,
        created_by=v.created_by,
    )


_checks_type = list[CheckResult]


def encode_checks(checks: list[CheckResult]) -> str:
    return msgspec.json.encode(checks).decode()


def decision_out(
    d: GateDecision, policy_name: str, approval_status: str | None = None
) -> DecisionOut:
    return DecisionOut(
        decision_id=d.id,
        outcome=d.outcome,
        checks=msgspec.json.decode(d.checks, type=_checks_type),
        policy_id=str(d.policy_id),
        policy_name=policy_name,
        policy_version=str(d.policy_version),
        model=d.model_name,
        target=d.target,
        actor=d.actor,
        created_at=d.created_at,
        dry_run=d.dry_run,
        trigger=d.trigger,
        run_id=d.run_id,
        version=None if d.version is None else str(d.version),
        digest=d.digest,
        requested_by=d.requested_by,
        idempotency_key=d.idempotency_key,
        approval_request_id=d.approval_request_id,
        approval_status=approval_status,
        supersedes=d.supersedes,
        superseded_by=d.superseded_by,
        verified_identity=(
            msgspec.json.decode(d.verified_identity, type=dict[str, str])
            if d.verified_identity
            else None
        ),
    )


def secret_out(sec: GateSecret, gate: str, now: int, *, revealed: str | None = None) -> SecretOut:
    active = sec.revoked_at is None and (sec.expires_at is None or sec.expires_at > now)
    return SecretOut(
        secret_id=sec.secret_id,
        gate=gate,
        created_at=sec.created_at,
        created_by=sec.created_by,
        active=active,
        expires_at=sec.expires_at,
        revoked_at=sec.revoked_at,
        secret=revealed,
    )
