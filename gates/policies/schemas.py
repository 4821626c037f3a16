"""Wire structs for gates: policy specs, decisions, webhook requests and secrets (snake_case)."""

from __future__ import annotations

from typing import Any

import msgspec

Version = str | int
Observed = float | int | str | bool | None


# --- policy rules --------------------------------------------------------------------------------


class MetricThreshold(msgspec.Struct, frozen=True):
    """``metric op value``: the run's latest value of ``metric`` must satisfy it."""

    metric: str
    op: str
    value: float


class ChampionComparison(msgspec.Struct, frozen=True, omit_defaults=True):
    """Compare with the version holding the target now (its run's ``metric``).

    ``min_improvement``: the candidate must beat the champion by at least this much;
    ``max_regression``: it may be worse by at most this much. ``relative`` reads both as a
    fraction of the champion's value (0.01 = 1%).
    """

    metric: str
    higher_is_better: bool = True
    min_improvement: float | None = None
    max_regression: float | None = None
    relative: bool = False


class PolicyRules(msgspec.Struct, frozen=True, omit_defaults=True, forbid_unknown_fields=True):
    """Every check a policy can make. The canonical JSON of this struct is what is versioned."""

    metrics: list[MetricThreshold] = []
    champion: ChampionComparison | None = None
    required_tags: list[str] = []
    tags: dict[str, str] = {}
    required_params: list[str] = []
    params: dict[str, str] = {}
    # Tags of the version itself (a prompt version has no run: its tags are its provenance).
    required_version_tags: list[str] = []
    version_tags: dict[str, str] = {}
    require_finished: bool = True
    require_digest: bool = True
    required_approvals: int = 0
    prior_targets: list[str] = []
    archive_existing_versions: bool = True


class PolicySpec(msgspec.Struct, forbid_unknown_fields=True):
    """A policy as written by a user (API body or one entry of gates.yaml).

    ``metrics`` entries may be written as ``"val_auc >= 0.90"`` or as objects.
    """

    name: str | None = None
    model: str | None = None
    target: str | None = None
    description: str | None = None
    enabled: bool | None = None
    metrics: list[str | MetricThreshold] = []
    champion: ChampionComparison | None = None
    required_tags: list[str] = []
    tags: dict[str, str] = {}
    required_params: list[str] = []
    params: dict[str, str] = {}
    # Tags of the version itself (a prompt version has no run: its tags are its provenance).
    required_version_tags: list[str] = []
    version_tags: dict[str, str] = {}
    require_finished: bool = True
    require_digest: bool = True
    required_approvals: int = 0
    prior_targets: list[str] = []
    archive_existing_versions: bool = True


class GatesFile(msgspec.Struct, forbid_unknown_fields=True):
    gates: list[PolicySpec] = []


# --- policy responses ----------------------------------------------------------------------------


class PolicyVersionOut(msgspec.Struct):
    version: str
    policy_version_id: str
    model: str
    target: str
    rules: PolicyRules
    created_at: int
    created_by: str


class PolicyOut(msgspec.Struct):
    policy_id: str
    name: str
    model: str
    target: str
    enabled: bool
    version: str
    rules: PolicyRules
    created_at: int
    updated_at: int
    created_by: str


class ApplyResult(msgspec.Struct):
    name: str
    action: str  # created | updated | unchanged
    version: str


# --- policy requests -----------------------------------------------------------------------------


class PolicyRef(msgspec.Struct):
    name: str | None = None


class ListPolicies(msgspec.Struct):
    max_results: int | None = None
    page_token: str | None = None
    include_disabled: bool = False


class ListPolicyVersions(msgspec.Struct):
    name: str | None = None
    max_results: int | None = None
    page_token: str | None = None


# --- secrets -------------------------------------------------------------------------------------


class SecretRequest(msgspec.Struct):
    gate: str | None = None
    # rotate: how long the previous secret stays valid beside the new one.
    grace_seconds: int | None = None


class RevokeSecret(msgspec.Struct):
    gate: str | None = None
    secret_id: str | None = None


class SecretOut(msgspec.Struct, omit_defaults=True):
    secret_id: str
    gate: str
    created_at: int
    created_by: str
    active: bool
    expires_at: int | None = None
    revoked_at: int | None = None
    # Only in the answer to add/rotate: the secret is shown once.
    secret: str | None = None


# --- OIDC trusts ---------------------------------------------------------------------------------


class OidcTrustSpec(msgspec.Struct, forbid_unknown_fields=True):
    gate: str | None = None
    # The issuer URL exactly as its tokens' ``iss`` (https://token.actions.githubusercontent.com).
    issuer: str | None = None
    # The ``aud`` CI must request for this server (GitHub: core.getIDToken(audience)).
    audience: str | None = None
    # ``{claim: [glob, ...]}``: each claim must be a string matching one of its globs.
    claims: dict[str, Any] | None = None


class OidcTrustRef(msgspec.Struct):
    gate: str | None = None
    trust_id: str | None = None


class OidcTrustOut(msgspec.Struct, omit_defaults=True):
    trust_id: str
    gate: str
    issuer: str
    audience: str
    claims: dict[str, list[str]]
    created_at: int
    created_by: str
    active: bool
    revoked_at: int | None = None


# --- promotion and decisions ---------------------------------------------------------------------


class PromoteRequest(msgspec.Struct, forbid_unknown_fields=True):
    model: str | None = None
    target: str | None = None
    run_id: str | None = None
    version: Version | None = None
    idempotency_key: str | None = None
    dry_run: bool = False
    artifact_path: str = "model"
    # Who in CI says it asked (e.g. the GitHub actor): recorded and shown as an unverified
    # claim; separation of duties uses the authenticated principal instead.
    requested_by: str | None = None
    # Replaying a key whose approval request is closed (expired, rejected, cancelled, failed)
    # reports that state; with ``reopen`` the promotion is decided again instead (a new
    # decision that supersedes the stored one). Not part of what the key promises.
    reopen: bool = False


class CheckResult(msgspec.Struct, omit_defaults=True):
    name: str
    verdict: str  # pass | fail | pending | skip
    observed: Observed = None
    threshold: Observed = None
    expected: str | None = None
    detail: str | None = None


class DecisionOut(msgspec.Struct, omit_defaults=True):
    decision_id: str
    outcome: str
    checks: list[CheckResult]
    policy_id: str
    policy_name: str
    policy_version: str
    model: str
    target: str
    actor: str
    created_at: int
    dry_run: bool = False
    trigger: str = "webhook"
    run_id: str | None = None
    version: str | None = None
    digest: str | None = None
    requested_by: str | None = None
    idempotency_key: str | None = None
    approval_request_id: str | None = None
    # The current status of ``approval_request_id`` (pending, approved, rejected, cancelled,
    # expired, failed): a stored pending_approval decision is not a pending request forever.
    approval_status: str | None = None
    supersedes: str | None = None
    superseded_by: str | None = None
    # An OIDC caller's verified token: iss, sub, the trust that accepted it, mapped claims.
    verified_identity: dict[str, str] | None = None


class DecisionRef(msgspec.Struct):
    decision_id: str | None = None


class ListDecisions(msgspec.Struct):
    model: str | None = None
    target: str | None = None
    max_results: int | None = None
    page_token: str | None = None
