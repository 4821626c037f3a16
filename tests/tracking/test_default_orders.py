"""search_experiments orders ties as `mlflow server` 3.17 does (its sqlalchemy store's rule).

Without order_by: creation_time DESC, then experiment_id ASC. With an order_by that does not
name experiment_id, ties are broken by experiment_id DESC (and by nothing else).
"""

from __future__ import annotations

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from tracking import service as tracking
from tracking.models import Experiment
from tracking.schemas import CreateExperiment
from tracking.search import experiment_search_select


async def _ids(session: AsyncSession, prefix: str, order: list[str]) -> list[int]:
    rows = await session.execute(experiment_search_select(f"name LIKE '{prefix}%'", order, ""))
    return [int(r.experiment_id) for r in rows]


async def test_experiment_ties_are_broken_like_mlflow(session: AsyncSession, unique: str) -> None:
    ids = []
    # (creation_time, last_update_time): the first two tie on both.
    for i, (created, updated) in enumerate([(500, 900), (500, 900), (100, 900), (700, 100)]):
        eid = await tracking.create_experiment(session, CreateExperiment(name=f"{unique}-{i}"))
        await session.execute(
            update(Experiment)
            .where(Experiment.experiment_id == int(eid))
            .values(creation_time=created, last_update_time=updated)
        )
        ids.append(int(eid))
    a, b, c, d = ids
    assert await _ids(session, unique, []) == [d, a, b, c]
    # Three tie on last_update_time: experiment_id DESC decides, not creation_time.
    assert await _ids(session, unique, ["last_update_time DESC"]) == [c, b, a, d]
    assert await _ids(session, unique, ["creation_time ASC"]) == [c, b, a, d]
    assert await _ids(session, unique, ["creation_time DESC", "experiment_id ASC"]) == [d, a, b, c]
