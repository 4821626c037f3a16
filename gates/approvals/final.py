"""The approval that completes the count: re-evaluate the gate, then move or fail; and the
break-glass move. Both move the version through the gate's own authorised move."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from gates.approvals import store
from gates.policies import ports
from gates.policies import service as policies
from gates.policies import store as policy_store
from gates.policies.evaluation import FAIL, PASS, Candidate, evaluate, load_run, outcome_of
from gates.policies.moves import execute_move
from gates.policies.rules import decode_rules
from gates.policies.schemas import CheckResult, DecisionOut
from registry import service as registry
from registry.artifacts.storage import ArtifactStorage
from tracking.core.errors import ResourceNotFound


async def execute_or_fail(
    s: AsyncSession, row: Any, policy_version: Any, decision: DecisionOut, approver: str, at: int
) -> None:
    """After the final approval: move the version when the re-evaluation passed, else close
    the request as failed naming the checks that refused."""
    if decision.outcome == "passed":
        await execute_move(
            s,
            model=row.model_name,
            version=row.version,
            target=row.target,
            rules=decode_rules(policy_version.spec),
            actor=approver,
            decision_id=decision.decision_id,
            gate=decision.policy_name,
        )
        resolution = (
            f"version {row.version} moved to {row.target} (decision {decision.decision_id})"
        )
        status = "approved"
    else:
        failed = [c.name for c in decision.checks if c.verdict == FAIL]
        resolution = (
            f"re-evaluation failed: {', '.join(failed)} "
            f"(decision {decision.decision_id}); nothing moved"
        )
        status = "failed"
    await store.update_request(
        s, row.id, status=status, resolved_at=at, resolved_by=approver, resolution=resolution
    )


async def _approval_candidate(
    s: AsyncSession, row: Any, storage: ArtifactStorage | None
) -> tuple[Candidate, CheckResult]:
    """What the final approval re-evaluates (the version as it is now), and the check that its
    bytes are still the ones the request was opened for."""
    run = None
    if row.run_id:
        try:
            run = await load_run(s, row.run_id)
        except ResourceNotFound:
            run = None
    version_tags: dict[str, str] = {}
    try:
        mv = await registry.get_model_version(s, row.model_name, str(row.version))
        version_tags = {t.key: t.value for t in mv.tags}
        digest, problems = await ports.reverify_version(s, storage, row.model_name, row.version)
        exists = True
    except ResourceNotFound:
        digest, problems, exists = None, ["the version was deleted"], False
    candidate = Candidate(
        model=row.model_name,
        target=row.target,
        run=run,
        version=row.version,
        digest=digest,
        digest_checked=True,
        version_tags=version_tags,
    )
    unchanged = exists and not problems and digest == row.digest
    detail = None
    if not unchanged:
        detail = "; ".join(problems) if problems else "the artifact bytes changed since the request"
    verdict = PASS if unchanged else FAIL
    return candidate, CheckResult(
        "digest_unchanged", verdict, digest, None, f"== {row.digest}", detail
    )


async def reevaluate(
    s: AsyncSession,
    row: Any,
    policy_version: Any,
    approvals: int,
    approver: str,
    storage: ArtifactStorage | None,
) -> DecisionOut:
    """Decide again with ``approvals`` counted, recorded and announced as a new decision."""
    candidate, digest_check = await _approval_candidate(s, row, storage)
    checks = await evaluate(s, decode_rules(policy_version.spec), candidate, approvals=approvals)
    checks.append(digest_check)
    decision = await policies.record_decision(
        s,
        policy_id=row.policy_id,
        policy_version_id=row.policy_version_id,
        policy_version=policy_version.version,
        model_name=row.model_name,
        target=row.target,
        run_id=row.run_id,
        version=row.version,
        digest=candidate.digest,
        outcome=outcome_of(checks),
        checks=policies.encode_checks(checks),
        actor=approver,
        auth_method="approval",
        requested_by=row.requested_by,
        trigger="approval",
        dry_run=False,
        approval_request_id=row.id,
    )
    await policies.announce_decision(s, decision)
    return decision


async def break_glass_move(s: AsyncSession, row: Any, actor: str) -> None:
    """Move the request's version without the missing approvals, under its decision."""
    policy_version = await policy_store.get_policy_version_by_id(s, row.policy_version_id)
    assert policy_version is not None
    names = await policy_store.policy_names(s, {row.policy_id})
    await execute_move(
        s,
        model=row.model_name,
        version=row.version,
        target=row.target,
        rules=decode_rules(policy_version.spec),
        actor=actor,
        decision_id=row.decision_id,
        gate=f"{names.get(row.policy_id, '')} (break-glass)",
    )
