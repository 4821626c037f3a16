"""Wire structs for release approvals (MLflow-style snake_case JSON)."""

from __future__ import annotations

import msgspec

from gates.policies.schemas import DecisionOut

STATUSES = ("pending", "approved", "rejected", "cancelled", "expired", "failed")


class ApprovalActionOut(msgspec.Struct, omit_defaults=True):
    kind: str
    actor: str
    created_at: int
    comment: str | None = None


class ApprovalOut(msgspec.Struct, omit_defaults=True):
    request_id: str
    decision_id: str
    status: str
    model: str
    version: str
    target: str
    policy_id: str
    required_approvals: int
    approvals: int
    approved_by: list[str]
    # ``requested_by`` is what the caller claimed (unverified); ``requester`` is the
    # authenticated principal that opened the request.
    requested_by: str
    created_at: int
    expires_at: int
    requester: str | None = None
    run_id: str | None = None
    digest: str | None = None
    run_author: str | None = None
    resolved_at: int | None = None
    resolved_by: str | None = None
    resolution: str | None = None
    actions: list[ApprovalActionOut] = []


class ApprovalResult(msgspec.Struct, omit_defaults=True):
    """The request after an action; ``decision`` is the re-evaluation of a final approval."""

    approval_request: ApprovalOut
    decision: DecisionOut | None = None


class ApprovalRef(msgspec.Struct):
    request_id: str | None = None


class ApprovalAct(msgspec.Struct):
    request_id: str | None = None
    comment: str | None = None


class ListApprovals(msgspec.Struct):
    status: str | None = None
    model: str | None = None
    max_results: int | None = None
    page_token: str | None = None
