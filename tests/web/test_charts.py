"""Chart data: min-max downsampling of long metric histories in SQL, and the shaping of
scatter and parallel-coordinate data for the experiment charts page."""

from __future__ import annotations

import math
import random
import uuid
from typing import Any

from gates.server.web import charts
from tracking import service
from tracking.schemas import CreateExperiment, CreateRun, LogBatch, MetricIn


async def make_run(s: Any) -> str:
    experiment_id = await service.create_experiment(
        s, CreateExperiment(name=f"charts-{uuid.uuid4().hex[:10]}")
    )
    run = await service.create_run(s, CreateRun(experiment_id=experiment_id, start_time=1))
    return run.info.run_id


async def log_history(s: Any, run_id: str, key: str, values: list[float], first_step: int = 0):
    """Log ``values`` at consecutive steps through the service, 1,000 points per batch."""
    for start in range(0, len(values), 1000):
        batch = [
            MetricIn(key=key, value=v, timestamp=1000 + first_step + start + i, step=start + i)
            for i, v in enumerate(values[start : start + 1000])
        ]
        for metric in batch:
            metric.step = (metric.step or 0) + first_step
        await service.log_batch(s, LogBatch(run_id=run_id, metrics=batch))


async def test_a_100k_point_history_comes_back_as_at_most_n_points_with_its_true_extremes(
    session: Any,
) -> None:
    rng = random.Random(6)
    values = [math.sin(i / 2000) + rng.random() * 0.01 for i in range(100_000)]
    # Single-step spikes in the middle of buckets: averaging or striding would lose them.
    values[31_337] = 57.5
    values[77_777] = -42.25
    run_id = await make_run(session)
    await log_history(session, run_id, "loss", values)

    for limit in (1000, 500):
        [series] = await service.metric_series(session, [run_id], ["loss"], max_points=limit)
        assert series.run_id == run_id and series.key == "loss"
        assert len(series.steps) == len(series.values) <= limit
        assert len(series.steps) > limit // 2  # the budget is used, not wasted
        assert series.total == 100_000
        assert series.downsampled
        assert max(series.values) == max(values) == 57.5
        assert min(series.values) == min(values) == -42.25
        assert series.steps[0] == 0 and series.steps[-1] == 99_999
        assert series.steps == sorted(series.steps)
        spike = series.values.index(57.5)
        assert series.steps[spike] in range(31_337 - 200, 31_337 + 200)

    counts = await service.count_metric_points(session, run_id)
    assert counts == {"loss": 100_000}


async def test_a_short_history_comes_back_point_for_point(session: Any) -> None:
    run_id = await make_run(session)
    values = [0.5, 0.25, 0.125, float("nan"), 0.0625]
    await log_history(session, run_id, "acc", values, first_step=10)
    await log_history(session, run_id, "other", [1.0, 2.0])

    found = await service.metric_series(session, [run_id], ["acc"], max_points=500)
    assert [(s.key, s.steps, s.values) for s in found] == [
        ("acc", [10, 11, 12, 14], [0.5, 0.25, 0.125, 0.0625])
    ]
    assert found[0].total == 4 and not found[0].downsampled
    every = await service.metric_series(session, [run_id], None, max_points=500)
    assert [s.key for s in every] == ["acc", "other"]


async def test_several_runs_are_downsampled_in_one_call_in_the_order_asked(
    session: Any,
) -> None:
    first = await make_run(session)
    second = await make_run(session)
    await log_history(session, first, "loss", [float(i % 97) for i in range(5000)])
    await log_history(session, second, "loss", [float(-i) for i in range(3000)])
    found = await service.metric_series(session, [second, first, "unknown"], ["loss"], 100)
    assert [s.run_id for s in found] == [second, first]
    assert all(len(s.steps) <= 100 for s in found)
    assert max(found[1].values) == 96.0 and min(found[1].values) == 0.0
    assert max(found[0].values) == 0.0 and min(found[0].values) == -2999.0
    # A falling curve is drawn falling inside each bucket (max first, then min).
    assert found[0].values == sorted(found[0].values, reverse=True)


# --- shaping for the page ----------------------------------------------------------------------


def test_numeric_and_categorical_params_become_axes_of_the_right_kind() -> None:
    runs = [
        charts.RunPoint("a", "run-a", {"lr": "0.1", "model": "rf", "note": "x1"}, {"acc": 0.9}),
        charts.RunPoint("b", "run-b", {"lr": "1e-3", "model": "gbm", "note": "x2"}, {"acc": 0.7}),
        charts.RunPoint("c", "run-c", {"lr": "0.5", "model": "rf"}, {"acc": "NaN"}),
    ]
    data = charts.parallel_data(runs, ["lr", "model", "note"], ["acc"])
    axes = {a["name"]: a for a in data["axes"]}
    assert axes["lr"]["type"] == "numeric" and axes["lr"]["min"] == 0.001
    assert axes["model"]["type"] == "category"
    assert axes["model"]["categories"] == ["gbm", "rf"]
    assert axes["acc"]["kind"] == "metric" and axes["acc"]["max"] == 0.9
    by_run = {r["run_id"]: r["values"] for r in data["runs"]}
    names = [a["name"] for a in data["axes"]]
    assert by_run["a"][names.index("lr")] == 0.1
    assert by_run["a"][names.index("model")] == "rf"
    assert by_run["c"][names.index("acc")] is None  # NaN is no position on an axis


def test_scatter_keeps_runs_with_both_values_and_says_how_many_were_left_out() -> None:
    runs = [
        charts.RunPoint("a", "run-a", {"lr": "0.1"}, {"acc": 0.9}),
        charts.RunPoint("b", "run-b", {"lr": "0.2"}, {}),
        charts.RunPoint("c", "run-c", {"lr": "oops"}, {"acc": 0.5}),
    ]
    data = charts.scatter_data(runs, ("param", "lr"), ("metric", "acc"))
    assert [(p["run_id"], p["x"], p["y"]) for p in data["points"]] == [("a", 0.1, 0.9)]
    assert data["missing"] == 2


def test_chart_series_json_stays_small_and_finite() -> None:
    from gates.server.web.charts import metric_charts, series_budget
    from tracking.service import MetricSeries

    per_series = series_budget(20 * 12)
    series = [
        MetricSeries(
            f"run{r}",
            f"key{k}",
            list(range(per_series)),
            [math.pi * i if i != 3 else math.inf for i in range(per_series)],
            100_000,
            True,
        )
        for r in range(20)
        for k in range(12)
    ]
    data = metric_charts(series, {f"run{r}": f"name-{r}" for r in range(20)})
    encoded = charts.to_json(data)
    assert len(encoded) < 200_000
    assert "Infinity" not in encoded and "NaN" not in encoded
    assert [c["key"] for c in data][:2] == ["key0", "key1"]
    assert data[0]["series"][0]["label"] == "name-0"
    assert data[0]["series"][0]["y"][3] is None


async def test_each_point_carries_its_wall_clock_time_also_when_downsampled(session: Any) -> None:
    """Time axes need a time per point: exact for a short history, and the bucket's earliest
    and latest time (in step order) for a downsampled one."""
    run_id = await make_run(session)
    await log_history(session, run_id, "short", [0.5, 0.25, 0.125])
    await log_history(session, run_id, "long", [float(i % 7) for i in range(5000)])
    short, long = sorted(
        await service.metric_series(session, [run_id], ["short", "long"], max_points=100),
        key=lambda s: s.key != "short",
    )
    # log_history stamps step i at 1000 + i ms.
    assert short.timestamps == [1000, 1001, 1002]
    assert long.downsampled and len(long.timestamps) == len(long.steps) <= 100
    assert long.timestamps == [1000 + step for step in long.steps]


def test_metric_charts_send_times_and_mark_single_value_metrics() -> None:
    from gates.server.web.charts import metric_charts
    from tracking.service import MetricSeries

    series = [
        MetricSeries("a", "loss", [0, 5, 9], [3.0, 2.0, 1.0], 3, False, [5000, 5600, 9000]),
        MetricSeries("b", "loss", [0], [4.0], 1, False, [7000]),
        MetricSeries("a", "auc", [0], [0.9], 1, False, [6000]),
        MetricSeries("b", "auc", [2], [0.8], 1, False, [8000]),
    ]
    data = {c["key"]: c for c in metric_charts(series, {"a": "A", "b": "B"}, {"a": 4000})}
    # One run with a history is enough for a chart; one point everywhere is a value.
    assert not data["loss"]["single"] and data["auc"]["single"]
    a = data["loss"]["series"][0]
    assert (a["t0"], a["t"], a["start"]) == (5000, [0, 600, 4000], 4000)
    b = data["loss"]["series"][1]
    assert (b["t0"], b["t"], b["start"]) == (7000, [0], 7000)  # no start time: its first point
