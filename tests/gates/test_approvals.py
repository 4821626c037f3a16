"""Release approvals: N sign-offs from approvers, separation of duties, expiry, re-evaluation."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from gates.approvals import service as approvals
from gates.approvals.errors import (
    AlreadyApproved,
    ApprovalClosed,
    NotAnApprover,
    SeparationOfDuties,
)
from gates.policies import promotion
from gates.policies.ports import Actor
from gates.policies.schemas import DecisionOut, PromoteRequest
from registry import service as registry
from registry.artifacts.storage import LocalStorage
from tests.conftest import give_app_hooks
from tests.gates.factories import make_gate, make_run
from tracking import service as tracking
from tracking.core.errors import PermissionDenied

CI = Actor("ci-bot", is_admin=True, authenticated=True)


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "artifacts")


@pytest.fixture(autouse=True)
def _app_hooks_on_the_session(request: pytest.FixtureRequest) -> None:
    """Service tests here run with the app's registry hooks (the sweep test, which opens
    its own sessions, gives them the same hooks with give_app_hooks)."""
    if "session" in request.fixturenames:
        request.getfixturevalue("app_hooks")


async def _request(
    session: AsyncSession,
    storage: LocalStorage,
    unique: str,
    *,
    approvals_needed: int = 2,
    author: str = "alice",
    ttl_hours: int = 72,
) -> tuple[str, DecisionOut, str]:
    model = f"fraud-{unique}"
    await make_gate(session, model, "Production", required_approvals=approvals_needed)
    run_id = await make_run(session, user=author, storage=storage)
    result = await promotion.promote(
        session,
        PromoteRequest(
            model=model,
            target="Production",
            run_id=run_id,
            idempotency_key=uuid.uuid4().hex,
            requested_by="carol",
        ),
        raw_body=b"",
        signed=None,
        bearer=CI,
        storage=storage,
        approval_ttl_hours=ttl_hours,
    )
    return model, result.decision, run_id


async def _approve(session: AsyncSession, request_id: str, user: str, storage: LocalStorage, **kw):  # type: ignore[no-untyped-def]
    return await approvals.approve(
        session, request_id, approver=user, storage=storage, check_role=False, **kw
    )


async def test_production_needs_two_approvals_then_moves(
    session: AsyncSession, storage: LocalStorage, unique: str
) -> None:
    model, decision, _ = await _request(session, storage, unique)
    assert decision.outcome == "pending_approval"
    assert decision.version == "1" and decision.approval_request_id
    approvals_check = next(c for c in decision.checks if c.name == "approvals")
    assert (approvals_check.verdict, approvals_check.observed, approvals_check.threshold) == (
        "pending",
        0,
        2,
    )
    # Registered, but not moved yet.
    assert (await registry.get_model_version(session, model, "1")).current_stage == "None"
    request_id = decision.approval_request_id
    first = await _approve(session, request_id, "dave", storage)
    assert first.decision is None and first.approval_request.approvals == 1
    with pytest.raises(AlreadyApproved):
        await _approve(session, request_id, "dave", storage)
    final = await _approve(session, request_id, "erin", storage, comment="lgtm")
    assert final.decision is not None and final.decision.outcome == "passed"
    assert final.decision.trigger == "approval"
    assert final.approval_request.status == "approved"
    assert final.approval_request.approved_by == ["dave", "erin"]
    assert (await registry.get_model_version(session, model, "1")).current_stage == "Production"
    with pytest.raises(ApprovalClosed):
        await _approve(session, request_id, "frank", storage)


async def test_requester_and_run_author_cannot_approve(
    session: AsyncSession, storage: LocalStorage, unique: str
) -> None:
    _, decision, _ = await _request(session, storage, unique, author="alice")
    request_id = decision.approval_request_id
    assert request_id
    with pytest.raises(SeparationOfDuties, match="requested"):
        await _approve(session, request_id, "ci-bot", storage)
    with pytest.raises(SeparationOfDuties, match="authored"):
        await _approve(session, request_id, "alice", storage)
    got = await approvals.get_request(session, request_id)
    assert got.approvals == 0 and got.status == "pending"


async def test_requests_expire(session: AsyncSession, storage: LocalStorage, unique: str) -> None:
    _, decision, _ = await _request(session, storage, unique, ttl_hours=1)
    request_id = decision.approval_request_id
    assert request_id
    got = await approvals.get_request(session, request_id)
    later = got.expires_at + 1
    with pytest.raises(ApprovalClosed, match="expired"):
        await _approve(session, request_id, "dave", storage, now=later)
    pending, _ = await approvals.list_requests(session, "pending", f"fraud-{unique}")
    assert [r.request_id for r in pending] == [request_id]


async def test_final_approval_refuses_when_the_bytes_changed(
    session: AsyncSession, storage: LocalStorage, unique: str
) -> None:
    model, decision, run_id = await _request(session, storage, unique, approvals_needed=1)
    run = await tracking.get_run(session, run_id)
    root = Path(storage.root) / run.info.artifact_uri.removeprefix("mlflow-artifacts:/")
    (root / "model" / "MLmodel").write_bytes(b"tampered\n")
    request_id = decision.approval_request_id
    assert request_id
    result = await _approve(session, request_id, "dave", storage)
    assert result.decision is not None and result.decision.outcome == "failed"
    unchanged = next(c for c in result.decision.checks if c.name == "digest_unchanged")
    assert unchanged.verdict == "fail" and "MLmodel" in (unchanged.detail or "")
    assert result.approval_request.status == "failed"
    assert (await registry.get_model_version(session, model, "1")).current_stage == "None"


async def test_reject_cancel_and_comment(
    session: AsyncSession, storage: LocalStorage, unique: str
) -> None:
    _, decision, _ = await _request(session, storage, unique)
    request_id = decision.approval_request_id
    assert request_id
    # Commenting needs the approver role (tests/security: test_commenting_needs_approver_rights…).
    with pytest.raises(NotAnApprover):
        await approvals.add_comment(
            session, request_id, actor=Actor("dave", False, True), comment="why 0.93?"
        )
    commented = await approvals.add_comment(
        session, request_id, actor=Actor("dave", False, True), comment="why 0.93?", check_role=False
    )
    assert [a.kind for a in commented.approval_request.actions] == ["comment"]
    with pytest.raises(PermissionDenied, match="requester or an admin"):
        await approvals.cancel(session, request_id, actor=Actor("dave", False, True))
    rejected = await approvals.reject(
        session, request_id, actor=Actor("dave", False, True), comment="no", check_role=False
    )
    assert rejected.approval_request.status == "rejected"
    listed, _ = await approvals.list_requests(session, "rejected", f"fraud-{unique}")
    assert [r.request_id for r in listed] == [request_id]


async def test_only_approver_role_holders_may_approve(
    session: AsyncSession, storage: LocalStorage, unique: str
) -> None:
    from gates.identity import service as identity

    model, decision, _ = await _request(session, storage, unique, approvals_needed=1)
    request_id = decision.approval_request_id
    assert request_id
    await identity.create_user(session, f"ed-{unique}", None)
    await identity.create_grant(
        session, f"ed-{unique}", "registered_model", model, "editor", actor="admin"
    )
    await identity.create_user(session, f"ap-{unique}", None)
    await identity.create_grant(
        session,
        f"ap-{unique}",
        "registered_model",
        model,
        "approver",
        ["Production"],
        actor="admin",
    )
    with pytest.raises(NotAnApprover):
        await approvals.approve(session, request_id, approver=f"ed-{unique}", storage=storage)
    with pytest.raises(NotAnApprover):
        await approvals.approve(session, request_id, approver="nobody", storage=storage)
    done = await approvals.approve(session, request_id, approver=f"ap-{unique}", storage=storage)
    assert done.decision is not None and done.decision.outcome == "passed"


async def test_the_expiry_sweep_closes_a_due_request_once_with_event_and_audit(
    session: AsyncSession, storage: LocalStorage, unique: str
) -> None:
    from sqlalchemy import select

    from gates.audit import service as audit
    from gates.events.models import OutboxEvent

    _, decision, _ = await _request(session, storage, unique, ttl_hours=1)
    request_id = decision.approval_request_id
    assert request_id
    got = await approvals.get_request(session, request_id)
    # Not due yet: the sweep leaves it alone.
    await approvals.expire_due(session, now=got.expires_at - 1)
    assert (await approvals.get_request(session, request_id)).status == "pending"

    later = got.expires_at + 1
    assert await approvals.expire_due(session, now=later) >= 1
    closed = await approvals.get_request(session, request_id)
    assert closed.status == "expired"
    assert closed.resolved_by == "system"
    # A second sweep (another replica, the next round) finds nothing left to close.
    assert await approvals.expire_due(session, now=later) == 0
    entries, _ = await audit.search(
        session,
        kind="approval.expired",
        subject=f"approval:{request_id}",
        max_results=10,
        page_token=None,
    )
    assert len(entries) == 1
    events = (
        await session.execute(
            select(OutboxEvent.payload).where(OutboxEvent.type == "approval.expired")
        )
    ).scalars()
    assert sum(request_id in str(p) for p in events) == 1
    # Stored as expired, it is listed as expired and no longer as pending.
    expired, _ = await approvals.list_requests(session, "expired", f"fraud-{unique}")
    assert [r.request_id for r in expired] == [request_id]
    pending, _ = await approvals.list_requests(session, "pending", f"fraud-{unique}")
    assert pending == []
    with pytest.raises(ApprovalClosed, match="expired"):
        await _approve(session, request_id, "dave", storage, now=later)


async def test_the_sweep_task_closes_expired_requests_through_the_database(
    database: object, storage: LocalStorage, unique: str
) -> None:
    from gates.approvals.expiry import ApprovalExpirySweep
    from tracking.core.db import Database

    assert isinstance(database, Database)
    async with database.write() as s:
        give_app_hooks(s)
        _, decision, _ = await _request(s, storage, unique, ttl_hours=0)
    request_id = decision.approval_request_id
    assert request_id
    sweep = ApprovalExpirySweep(database, 0.05)
    assert await sweep.run_once() >= 1
    async with database.read() as s:
        assert (await approvals.get_request(s, request_id)).status == "expired"
        assert not await approvals.any_due_for_expiry(s)
    assert await sweep.run_once() == 0
