"""Chart data for the experiment and run pages: point budgets, series, scatter and parallel axes.

The database does the downsampling (``tracking.service.metric_series``); this module decides
how many points each series may have so a page's embedded JSON stays small (a few hundred KB
at most, whatever the histories' length), and shapes runs into what ``static/charts.js`` draws.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from markupsafe import Markup

from tracking.service import MetricSeries

# Points per page across every series, and per series: 8,000 points are ~150 KB of JSON.
PAGE_POINT_BUDGET = 8000
MAX_POINTS_PER_SERIES = 1000
MIN_POINTS_PER_SERIES = 24
# A string param becomes a categorical axis when it has at most this many distinct values;
# beyond that it is skipped (a hundred stacked labels on one axis say nothing).
MAX_CATEGORIES = 20
SIGNIFICANT_DIGITS = 7


def series_budget(series_count: int, per_series: int = MAX_POINTS_PER_SERIES) -> int:
    """Points each of ``series_count`` series may have on one page."""
    if series_count <= 0:
        return per_series
    return max(MIN_POINTS_PER_SERIES, min(per_series, PAGE_POINT_BUDGET // series_count))


def chart_number(value: Any) -> float | int | None:
    """A value JSON can carry and a chart can place: finite numbers, rounded; else None."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if not isinstance(value, float) or not math.isfinite(value):
        return None
    if value == 0:
        return 0.0
    return float(f"{value:.{SIGNIFICANT_DIGITS}g}")


def to_json(data: Any) -> Markup:
    """Compact JSON that is safe inside ``<script type="application/json">``."""
    text = json.dumps(data, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
    for raw, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("'", "\\u0027")):
        text = text.replace(raw, escaped)
    return Markup(text)  # noqa: S704 - escaped above for the script-data context


def metric_charts(
    series: Sequence[MetricSeries],
    labels: dict[str, str],
    starts: dict[str, int] | None = None,
) -> list[dict[str, Any]]:
    """One chart per metric key (sorted), each overlaying its runs' series in the given order.

    Each series carries its steps (``x``), values (``y``), the wall-clock time of each point
    (``t0 + t``, in ms) and its run's start time (``start``, else its first point's time), so the
    page
    can switch the x axis between step, wall time and time since the run started without
    asking the server again. A chart whose every series holds one point is ``single``: the
    page shows its values rather than one-point lines.
    """
    starts = starts or {}
    by_key: dict[str, list[dict[str, Any]]] = {}
    for item in series:
        t0 = min(item.timestamps) if item.timestamps else 0
        by_key.setdefault(item.key, []).append(
            {
                "run_id": item.run_id,
                "label": labels.get(item.run_id, item.run_id),
                "x": item.steps,
                # Times as ms after ``t0`` (short numbers keep the page's JSON small).
                "t0": t0,
                "t": [t - t0 for t in item.timestamps],
                "start": starts.get(item.run_id) or t0,
                "y": [chart_number(v) for v in item.values],
                "total": item.total,
                "downsampled": item.downsampled,
            }
        )
    return [
        {
            "key": key,
            "series": by_key[key],
            "single": all(len(s["x"]) <= 1 for s in by_key[key]),
        }
        for key in sorted(by_key)
    ]


@dataclass(frozen=True, slots=True)
class RunPoint:
    """A run as the scatter and parallel charts see it: its params and latest metrics."""

    run_id: str
    label: str
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)

    def value(self, kind: str, key: str) -> Any:
        return (self.params if kind == "param" else self.metrics).get(key)


def is_numeric_param(values: Iterable[str]) -> bool:
    present = [v for v in values if v is not None]
    return bool(present) and all(chart_number(v) is not None for v in present)


def _numeric_axis(name: str, kind: str, numbers: list[float | int | None]) -> dict[str, Any]:
    found = [n for n in numbers if n is not None]
    return {
        "name": name,
        "kind": kind,
        "type": "numeric",
        "min": min(found) if found else None,
        "max": max(found) if found else None,
    }


def parallel_data(
    runs: Sequence[RunPoint], param_keys: Sequence[str], metric_keys: Sequence[str]
) -> dict[str, Any]:
    """Axes (params, then metrics) and one line of values per run.

    Numeric params are numeric axes; other params are categorical axes when they have at most
    ``MAX_CATEGORIES`` distinct values, and are skipped (listed in ``skipped``) otherwise.
    NaN, infinite and missing values are None: the line has a gap at that axis.
    """
    axes: list[dict[str, Any]] = []
    columns: list[list[Any]] = []
    skipped: list[str] = []
    for key in param_keys:
        raw = [run.params.get(key) for run in runs]
        if is_numeric_param(v for v in raw if v is not None):
            numbers = [chart_number(v) for v in raw]
            axes.append(_numeric_axis(key, "param", numbers))
            columns.append(numbers)
            continue
        categories = sorted({v for v in raw if v is not None})
        if not categories or len(categories) > MAX_CATEGORIES:
            skipped.append(key)
            continue
        axes.append({"name": key, "kind": "param", "type": "category", "categories": categories})
        columns.append(raw)
    for key in metric_keys:
        numbers = [chart_number(run.metrics.get(key)) for run in runs]
        axes.append(_numeric_axis(key, "metric", numbers))
        columns.append(numbers)
    lines = [
        {
            "run_id": run.run_id,
            "label": run.label,
            "values": [column[index] for column in columns],
        }
        for index, run in enumerate(runs)
    ]
    return {"axes": axes, "runs": lines, "skipped": skipped}


def scatter_data(
    runs: Sequence[RunPoint], x: tuple[str, str], y: tuple[str, str]
) -> dict[str, Any]:
    """One point per run with a number for both axes; ``missing`` counts the runs left out."""
    points = []
    for run in runs:
        px = chart_number(run.value(*x))
        py = chart_number(run.value(*y))
        if px is None or py is None:
            continue
        points.append({"run_id": run.run_id, "label": run.label, "x": px, "y": py})
    return {
        "x": {"kind": x[0], "key": x[1]},
        "y": {"kind": y[0], "key": y[1]},
        "points": points,
        "missing": len(runs) - len(points),
    }


class ServerTiming:
    """``Server-Timing: app;dur=<ms>`` from handler entry to the rendered body."""

    def __init__(self) -> None:
        self.started = time.perf_counter()

    def header(self) -> str:
        return f"app;dur={(time.perf_counter() - self.started) * 1000:.1f}"
