"""List endpoints load children with a fixed number of queries: an N+1 fails this test."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession

from tracking import service
from tracking.schemas import CreateExperiment, CreateRun, KeyValue, LogBatch, MetricIn, SearchRuns


@contextmanager
def count_queries(session: AsyncSession) -> Iterator[list[str]]:
    statements: list[str] = []
    engine = session.bind.sync_engine if hasattr(session.bind, "sync_engine") else session.bind

    def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", before)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", before)


async def make_experiment(session: AsyncSession, name: str) -> str:
    return await service.create_experiment(session, CreateExperiment(name=name))


async def make_run(
    session: AsyncSession,
    experiment_id: str,
    *,
    metrics: dict[str, float] | None = None,
    params: dict[str, str] | None = None,
    tags: dict[str, str] | None = None,
) -> str:
    run = await service.create_run(session, CreateRun(experiment_id=experiment_id, start_time=1))
    run_id = run.info.run_id
    await service.log_batch(
        session,
        LogBatch(
            run_id=run_id,
            metrics=[
                MetricIn(key=k, value=v, timestamp=1, step=0) for k, v in (metrics or {}).items()
            ],
            params=[KeyValue(k, v) for k, v in (params or {}).items()],
            tags=[KeyValue(k, v) for k, v in (tags or {}).items()],
        ),
    )
    return run_id


async def _search_query_count(session: AsyncSession, experiment_id: str) -> int:
    with count_queries(session) as statements:
        runs, _ = await service.search_runs(
            session,
            SearchRuns(
                experiment_ids=[experiment_id],
                filter="metrics.acc > 0 AND params.model = 'rf'",
                order_by=["metrics.acc DESC"],
            ),
        )
    assert runs
    return len(statements)


async def test_search_runs_query_count_is_independent_of_result_size(
    session: AsyncSession, unique: str
) -> None:
    small = await make_experiment(session, f"qc-small-{unique}")
    big = await make_experiment(session, f"qc-big-{unique}")
    await make_run(session, small, metrics={"acc": 0.5}, params={"model": "rf"}, tags={"t": "1"})
    for i in range(25):
        await make_run(
            session,
            big,
            metrics={"acc": 0.5 + i, "loss": 1.0},
            params={"model": "rf", "i": str(i)},
            tags={"t": "1"},
        )
    assert await _search_query_count(session, small) == await _search_query_count(session, big)


async def test_get_run_query_count_is_fixed(session: AsyncSession, unique: str) -> None:
    exp = await make_experiment(session, f"qc-get-{unique}")
    run_id = await make_run(
        session,
        exp,
        metrics={f"m{i}": float(i) for i in range(30)},
        params={f"p{i}": "v" for i in range(30)},
    )
    with count_queries(session) as statements:
        run = await service.get_run(session, run_id)
    assert len(run.data.metrics) == 30
    # handle lookup + run row + params + tags + latest metrics + dataset inputs + model links
    assert len(statements) <= 7
