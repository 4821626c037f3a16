"""Every SQL statement of the deployments domain."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from gates.deployments.models import Deployment, DeploymentReplica
from tracking.core.db import dialect_insert

_D = Deployment.__table__
_R = DeploymentReplica.__table__
# Deployments answered per model (a model has a handful; the cap keeps the answer bounded).
MAX_LISTED = 200


async def get_by_name(s: AsyncSession, name: str) -> Any:
    return (await s.execute(select(_D).where(Deployment.name == name))).first()


async def get_by_id(s: AsyncSession, deployment_id: int) -> Any:
    return (await s.execute(select(_D).where(Deployment.id == deployment_id))).first()


async def insert_if_absent(
    s: AsyncSession, *, name: str, model_id: int, target_kind: str, target: str, now: int
) -> None:
    """Create the deployment unless one of that name exists (two first reports may race)."""
    stmt = (
        dialect_insert(s)(Deployment)
        .values(
            name=name,
            model_id=model_id,
            target_kind=target_kind,
            target=target,
            created_at=now,
            mismatch_since=None,
            drifted=False,
        )
        .on_conflict_do_nothing(index_elements=["name"])
    )
    await s.execute(stmt)


async def upsert_replica(
    s: AsyncSession,
    *,
    deployment_id: int,
    replica_id: str,
    version: int | None,
    digest: str | None,
    now: int,
    actor: str,
) -> None:
    values = {"version": version, "digest": digest, "reported_at": now, "reported_by": actor}
    stmt = dialect_insert(s)(DeploymentReplica).values(
        deployment_id=deployment_id, replica_id=replica_id, **values
    )
    stmt = stmt.on_conflict_do_update(index_elements=["deployment_id", "replica_id"], set_=values)
    await s.execute(stmt)


async def of_model(s: AsyncSession, model_id: int, name: str | None = None) -> list[Any]:
    stmt = (
        select(_D)
        .where(Deployment.model_id == model_id)
        .order_by(Deployment.name)
        .limit(MAX_LISTED)
    )
    if name is not None:
        stmt = stmt.where(Deployment.name == name)
    return list((await s.execute(stmt)).all())


async def page_after(s: AsyncSession, after_id: int, limit: int) -> list[Any]:
    """Deployments in id order after ``after_id`` (the drift sweep's walk)."""
    stmt = select(_D).where(Deployment.id > after_id).order_by(Deployment.id).limit(limit)
    return list((await s.execute(stmt)).all())


async def replicas_of(s: AsyncSession, deployment_ids: Sequence[int]) -> dict[int, list[Any]]:
    """Each deployment's replica reports, in replica id order: one statement for all."""
    out: dict[int, list[Any]] = {i: [] for i in deployment_ids}
    if not deployment_ids:
        return out
    stmt = (
        select(_R)
        .where(DeploymentReplica.deployment_id.in_(list(deployment_ids)))
        .order_by(DeploymentReplica.deployment_id, DeploymentReplica.replica_id)
    )
    for row in await s.execute(stmt):
        out[int(row.deployment_id)].append(row)
    return out


# --- the drift state: compare-and-set updates, so concurrent sweeps agree on one transition ----


async def start_mismatch(s: AsyncSession, deployment_id: int, now: int) -> None:
    await s.execute(
        update(Deployment)
        .where(Deployment.id == deployment_id, Deployment.mismatch_since.is_(None))
        .values(mismatch_since=now)
    )


async def clear_mismatch(s: AsyncSession, deployment_id: int) -> None:
    await s.execute(
        update(Deployment)
        .where(Deployment.id == deployment_id, Deployment.mismatch_since.is_not(None))
        .values(mismatch_since=None)
    )


async def set_drifted(s: AsyncSession, deployment_id: int, drifted: bool) -> bool:
    """Flip ``drifted``; True only for the one transaction whose UPDATE changed the row.

    On PostgreSQL a concurrent sweep blocks on the row lock and then re-checks the WHERE
    against the committed row, finding nothing to change; SQLite serialises writers.
    """
    result: Any = await s.execute(
        update(Deployment)
        .where(Deployment.id == deployment_id, Deployment.drifted == (not drifted))
        .values(drifted=drifted)
    )
    return int(result.rowcount or 0) == 1
