"""Gate list endpoints run a fixed number of queries however long the page: no N+1."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from gates.approvals import service as approvals
from gates.policies import promotion
from gates.policies import service as policies
from gates.policies.ports import Actor
from gates.policies.schemas import PromoteRequest
from registry.artifacts.storage import LocalStorage
from tests.gates.factories import make_gate, make_run
from tests.registry.test_query_counts import count_queries
from tracking.core.auth import ResourceScope

CI = Actor("ci", is_admin=True, authenticated=True)


pytestmark = pytest.mark.usefixtures("app_hooks")


async def _populate(session: AsyncSession, storage: LocalStorage, model: str, n: int) -> None:
    await make_gate(session, model, "Production", required_approvals=1)
    for _ in range(n):
        run_id = await make_run(session, storage=storage)
        await promotion.promote(
            session,
            PromoteRequest(
                model=model, target="Production", run_id=run_id, idempotency_key=uuid.uuid4().hex
            ),
            raw_body=b"",
            signed=None,
            bearer=CI,
            storage=storage,
            approval_ttl_hours=1,
        )


async def _counts(session: AsyncSession, model: str) -> tuple[int, int, int]:
    with count_queries(session) as gates_q:
        found, _ = await policies.list_policies(session, 1000)
    assert found
    with count_queries(session) as decisions_q:
        decisions, _ = await policies.list_decisions(session, model)
    with count_queries(session) as approvals_q:
        requests, _ = await approvals.list_requests(session, "pending", model)
    assert decisions and requests
    return len(gates_q), len(decisions_q), len(approvals_q)


async def test_list_endpoints_do_not_grow_with_the_page(
    session: AsyncSession, tmp_path: Path, unique: str
) -> None:
    storage = LocalStorage(tmp_path / "artifacts")
    await _populate(session, storage, f"one-{unique}", 1)
    small = await _counts(session, f"one-{unique}")
    await _populate(session, storage, f"many-{unique}", 6)
    large = await _counts(session, f"many-{unique}")
    assert small == large, (small, large)


async def test_scoped_list_endpoints_do_not_grow_with_the_page_or_the_glob_gates(
    session: AsyncSession, tmp_path: Path, unique: str
) -> None:
    """A non-admin's lists (filtered by their grants' scope) stay a fixed number of queries
    however many glob gates must be checked against the models they may read."""
    storage = LocalStorage(tmp_path / "artifacts")
    scope = ResourceScope(patterns=(f"*-{unique}",))

    async def counts(model: str) -> tuple[int, int, int]:
        with count_queries(session) as gates_q:
            found, _ = await policies.list_policies(session, 1000, scope=scope)
        with count_queries(session) as decisions_q:
            decisions, _ = await policies.list_decisions(session, model, scope=scope)
        with count_queries(session) as approvals_q:
            requests, _ = await approvals.list_requests(session, "pending", model, scope=scope)
        assert found and decisions and requests
        return len(gates_q), len(decisions_q), len(approvals_q)

    await _populate(session, storage, f"one-{unique}", 1)
    await make_gate(session, f"one-{unique[:4]}*", "Staging")
    small = await counts(f"one-{unique}")
    await _populate(session, storage, f"many-{unique}", 6)
    for index in range(5):
        # Overlapping globs on one target are refused, so each guards its own alias.
        await make_gate(session, f"many-{unique[:4]}*-{index}*", f"@slot{index}")
    large = await counts(f"many-{unique}")
    assert small == large, (small, large)
