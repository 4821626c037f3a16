"""The deployments service inside one rolled-back transaction: the drift state machine at
chosen clock values, and the desired-versus-actual listing's fixed number of queries."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from gates.deployments import service, store
from gates.deployments.schemas import ReportBody
from gates.events.models import OutboxEvent
from registry import service as registry
from registry.schemas import CreateRegisteredModel
from tests.registry.test_query_counts import count_queries

DRIFT_AFTER_MS = 60_000


async def _model(session: AsyncSession) -> str:
    name = f"svc-{uuid.uuid4().hex[:10]}"
    await registry.create_registered_model(session, CreateRegisteredModel(name=name), actor="t")
    return name


async def _report(session: AsyncSession, name: str, deployment: str, **fields: object) -> int:
    body = ReportBody(deployment=deployment, name=name, alias="champion", **fields)
    out = await service.report(session, body, actor="ops", drift_after_ms=DRIFT_AFTER_MS)
    row = (await service.deployments_of(session, name, deployment))[0]
    assert out.name == row.name == deployment
    found = await store.get_by_name(session, deployment)
    return int(found.id)


async def _event_types(session: AsyncSession, name: str) -> list[str]:
    rows = await session.execute(
        select(OutboxEvent.type).where(OutboxEvent.model_name == name).order_by(OutboxEvent.id)
    )
    return [t for (t,) in rows if t.startswith("deployment.")]


async def test_drift_fires_once_at_the_drift_time_and_converges_once(
    session: AsyncSession,
) -> None:
    name = await _model(session)
    # The alias names nothing, so a replica running some digest differs from desired.
    deployment_id = await _report(session, name, "d", replica_id="r", digest="a" * 64)
    [shown] = await service.deployments_of(session, name)
    since = shown.mismatch_since
    assert since is not None and shown.in_sync is False and shown.drifted is False

    async def evaluate(at: int) -> int:
        return await service.evaluate(session, deployment_id, drift_after_ms=DRIFT_AFTER_MS, now=at)

    assert await evaluate(since + DRIFT_AFTER_MS - 1) == 0
    assert await _event_types(session, name) == []
    assert await evaluate(since + DRIFT_AFTER_MS) == 1
    assert await evaluate(since + DRIFT_AFTER_MS + 5_000) == 0
    assert await _event_types(session, name) == ["deployment.drift"]
    [shown] = await service.deployments_of(session, name)
    assert shown.drifted is True and shown.mismatch_since == since
    # The replica now runs what the pointer names (nothing): converged at once, by the report.
    await _report(session, name, "d", replica_id="r")
    assert await _event_types(session, name) == ["deployment.drift", "deployment.converged"]
    [shown] = await service.deployments_of(session, name)
    assert (shown.drifted, shown.mismatch_since, shown.in_sync) == (False, None, True)
    assert await evaluate(since + 10 * DRIFT_AFTER_MS) == 0


async def test_a_replica_silent_past_the_stale_window_is_left_out_of_drift(
    session: AsyncSession,
) -> None:
    name = await _model(session)
    deployment_id = await _report(session, name, "d", replica_id="gone", digest="b" * 64)
    [shown] = await service.deployments_of(session, name)
    later = int(shown.replicas[0].reported_at) + service.STALE_AFTER_MS + 1
    # No live replica: nothing is known, so nothing moves (no drift from a scaled-away pod).
    assert (
        await service.evaluate(session, deployment_id, drift_after_ms=DRIFT_AFTER_MS, now=later)
        == 0
    )
    assert await _event_types(session, name) == []


async def test_listing_deployments_takes_the_same_queries_for_two_or_twelve(
    session: AsyncSession,
) -> None:
    counts = []
    for n in (2, 12):
        name = await _model(session)
        for i in range(n):
            for replica in ("a", "b", "c"):
                await _report(session, name, f"{name}-{i}", replica_id=replica)
        with count_queries(session) as statements:
            found = await service.deployments_of(session, name)
        assert len(found) == n and all(len(d.replicas) == 3 for d in found)
        counts.append(len(statements))
    assert counts[0] == counts[1], counts
