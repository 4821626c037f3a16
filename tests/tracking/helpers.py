"""Small builders for tracking service tests: real rows through the real service."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from tracking import service
from tracking.schemas import CreateExperiment, CreateRun, KeyValue, LogBatch, MetricIn, RunOut


async def make_experiment(s: AsyncSession, name: str) -> str:
    return await service.create_experiment(s, CreateExperiment(name=name))


async def make_run(
    s: AsyncSession,
    experiment_id: str,
    *,
    name: str | None = None,
    start_time: int | None = None,
    metrics: dict[str, float] | None = None,
    params: dict[str, str] | None = None,
    tags: dict[str, str] | None = None,
) -> str:
    """A run with optional latest metrics (step 0, timestamp 0), params and tags; its id."""
    run = await service.create_run(
        s, CreateRun(experiment_id=experiment_id, run_name=name, start_time=start_time)
    )
    run_id = run.info.run_id
    batch = LogBatch(
        run_id=run_id,
        metrics=[MetricIn(k, v, 0, 0) for k, v in (metrics or {}).items()],
        params=[KeyValue(k, v) for k, v in (params or {}).items()],
        tags=[KeyValue(k, v) for k, v in (tags or {}).items()],
    )
    if batch.metrics or batch.params or batch.tags:
        await service.log_batch(s, batch)
    return run_id


def latest(run: RunOut) -> dict[str, float | str]:
    """The run's latest metric values by key, as the wire shows them."""
    return {m.key: m.value for m in run.data.metrics}


def tags_of(run: RunOut) -> dict[str, str]:
    return {t.key: t.value for t in run.data.tags}


def params_of(run: RunOut) -> dict[str, str]:
    return {p.key: p.value for p in run.data.params}
