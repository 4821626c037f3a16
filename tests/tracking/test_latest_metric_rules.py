"""A run's metrics show each key's latest point: the maximum (step, timestamp, value).

MLflow's rule (mlflow-rest-contract.md section 2.2), whatever order points arrive in and
whether they come one by one (PostgreSQL's one-statement path) or in a batch. NaN is kept as
MLflow keeps it (0 plus a NaN flag) and shown as "NaN"; infinities go out as "Infinity".
"""

from __future__ import annotations

import math

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from tests.tracking.helpers import latest, make_experiment, make_run
from tracking import service
from tracking.errors import InactiveRun, LoggedModelNotFound, RunNotFound
from tracking.schemas import LogBatch, MetricIn


@pytest.fixture
async def run_id(session: AsyncSession, unique: str) -> str:
    return await make_run(session, await make_experiment(session, f"latest-{unique}"))


async def _log(s: AsyncSession, run_id: str, *points: tuple[float, int, int]) -> None:
    """Log ``(value, timestamp, step)`` points of metric "m" one request each."""
    for value, ts, step in points:
        await service.log_metric(s, run_id, MetricIn("m", value, ts, step))


async def _latest_m(s: AsyncSession, run_id: str) -> float | str:
    return latest(await service.get_run(s, run_id))["m"]


async def test_a_higher_step_wins_even_with_an_older_timestamp(
    session: AsyncSession, run_id: str
) -> None:
    await _log(session, run_id, (1.0, 500, 1), (2.0, 100, 2))
    assert await _latest_m(session, run_id) == 2.0


async def test_a_point_logged_later_for_an_earlier_step_does_not_replace_the_latest(
    session: AsyncSession, run_id: str
) -> None:
    await _log(session, run_id, (5.0, 100, 3), (9.0, 900, 2))
    assert await _latest_m(session, run_id) == 5.0


async def test_on_the_same_step_the_later_timestamp_wins(
    session: AsyncSession, run_id: str
) -> None:
    await _log(session, run_id, (7.0, 200, 1), (3.0, 100, 1))
    assert await _latest_m(session, run_id) == 7.0


async def test_on_the_same_step_and_timestamp_the_larger_value_wins(
    session: AsyncSession, run_id: str
) -> None:
    await _log(session, run_id, (4.0, 100, 1), (-2.0, 100, 1), (3.0, 100, 1))
    assert await _latest_m(session, run_id) == 4.0


async def test_a_batch_keeps_its_maximum_point_per_key(session: AsyncSession, run_id: str) -> None:
    points = [MetricIn("m", 1.0, 10, 5), MetricIn("m", 8.0, 5, 5), MetricIn("m", 2.0, 99, 4),
              MetricIn("n", 0.5, 1, 0)]  # fmt: skip
    await service.log_batch(session, LogBatch(run_id=run_id, metrics=points))
    assert latest(await service.get_run(session, run_id)) == {"m": 1.0, "n": 0.5}
    # A later batch with an older point changes nothing; a newer one moves the latest on.
    await service.log_batch(session, LogBatch(run_id=run_id, metrics=[MetricIn("m", 6.0, 1, 1)]))
    assert await _latest_m(session, run_id) == 1.0
    await service.log_batch(session, LogBatch(run_id=run_id, metrics=[MetricIn("m", 6.0, 1, 6)]))
    assert await _latest_m(session, run_id) == 6.0


async def test_nan_is_shown_as_nan_and_counts_as_zero_between_points(
    session: AsyncSession, run_id: str
) -> None:
    await _log(session, run_id, (float("nan"), 100, 1))
    assert await _latest_m(session, run_id) == "NaN"
    # Same step and timestamp: NaN is stored as 0, so a positive value beats it...
    await _log(session, run_id, (0.25, 100, 1))
    assert await _latest_m(session, run_id) == 0.25
    # ...and a later NaN point is the latest like any other.
    await _log(session, run_id, (float("nan"), 100, 2))
    assert await _latest_m(session, run_id) == "NaN"


async def test_infinities_are_kept_and_shown_as_mlflow_spells_them(
    session: AsyncSession, run_id: str
) -> None:
    await service.log_batch(
        session,
        LogBatch(run_id=run_id, metrics=[MetricIn("up", math.inf, 0, 0),
                                         MetricIn("down", -math.inf, 0, 0)]),
    )  # fmt: skip
    assert latest(await service.get_run(session, run_id)) == {
        "up": "Infinity",
        "down": "-Infinity",
    }
    history, _ = await service.metric_history(session, run_id, "up", None, None)
    assert [p.value for p in history] == ["Infinity"]


async def test_history_keeps_every_distinct_point_in_step_then_time_order(
    session: AsyncSession, run_id: str
) -> None:
    await _log(session, run_id, (3.0, 30, 2), (1.0, 10, 1), (2.0, 20, 1), (1.0, 10, 1))
    history, token = await service.metric_history(session, run_id, "m", None, None)
    # The repeated point (1.0 at 10, step 1) is stored once, as in mlflow server.
    assert [(p.step, p.timestamp, p.value) for p in history] == [
        (1, 10, 1.0),
        (1, 20, 2.0),
        (2, 30, 3.0),
    ]
    assert token is None


async def test_history_pages_chain_with_tokens(session: AsyncSession, run_id: str) -> None:
    await _log(session, run_id, *[(float(i), i, i) for i in range(5)])
    steps: list[int] = []
    token: str | None = None
    while True:
        page, token = await service.metric_history(session, run_id, "m", 2, token)
        steps += [p.step for p in page]
        if token is None:
            break
    assert steps == [0, 1, 2, 3, 4]


async def test_metrics_for_a_missing_or_deleted_run_are_refused(
    session: AsyncSession, run_id: str
) -> None:
    point = MetricIn("m", 1.0, 0, 0)
    with pytest.raises(RunNotFound):
        await service.log_metric(session, "0" * 32, point)
    with pytest.raises(RunNotFound):
        await service.log_batch(session, LogBatch(run_id="0" * 32, metrics=[point]))
    await service.delete_run(session, run_id)
    with pytest.raises(InactiveRun):
        await service.log_metric(session, run_id, point)
    with pytest.raises(InactiveRun):
        await service.log_batch(session, LogBatch(run_id=run_id, metrics=[point]))


async def test_a_metric_naming_an_unknown_logged_model_is_refused(
    session: AsyncSession, run_id: str
) -> None:
    with pytest.raises(LoggedModelNotFound):
        async with session.begin_nested():
            await service.log_metric(session, run_id, MetricIn("m", 1.0, 0, 0, model_id="m-nope"))
    history, _ = await service.metric_history(session, run_id, "m", None, None)
    assert history == []
