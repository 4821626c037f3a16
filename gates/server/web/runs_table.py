"""The runs table's model: rows, columns, sorting links and the state one table URL encodes."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from gates.server.web import charts
from gates.server.web.render import with_query
from tracking.schemas import RunOut

RUNS_PAGE = 50
# Run attributes the runs table shows, with the search grammar's name (None: not sortable).
ATTRIBUTE_COLUMNS: tuple[tuple[str, str | None], ...] = (
    ("Run", "run_name"),
    ("Created", "start_time"),
    ("Duration", None),
    ("User", "user_id"),
    ("Status", "status"),
)
_ORDER_BY = re.compile(
    r"^\s*(attributes|metrics|params|tags)\.(?:`([^`]+)`|([\w.\-/:]+))\s*(?:\s(asc|desc))?\s*$",
    re.IGNORECASE,
)
_KIND_PREFIX = {"attribute": "attributes", "metric": "metrics", "param": "params", "tag": "tags"}
_PREFIX_KIND = {prefix: kind for kind, prefix in _KIND_PREFIX.items()}


def duration_text(start: int | None, end: int | None) -> str:
    if start is None or end is None or end < start:
        return ""
    seconds = (end - start) / 1000
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h {minutes}m"
    return f"{hours // 24}d {hours % 24}h"


@dataclass(slots=True)
class RunRow:
    run_id: str
    name: str
    experiment_id: str
    status: str
    lifecycle: str
    start_time: int
    end_time: int | None
    duration: str
    user: str
    metrics: dict[str, float | str]
    params: dict[str, str]
    tags: dict[str, str]


def run_row(run: RunOut) -> RunRow:
    info = run.info
    return RunRow(
        run_id=info.run_id,
        name=info.run_name or info.run_id[:8],
        experiment_id=info.experiment_id,
        status=info.status,
        lifecycle=info.lifecycle_stage,
        start_time=info.start_time,
        end_time=info.end_time,
        duration=duration_text(info.start_time, info.end_time),
        user=info.user_id,
        metrics={m.key: m.value for m in run.data.metrics},
        params={p.key: p.value for p in run.data.params},
        tags={t.key: t.value for t in run.data.tags},
    )


def keys_of(rows: Iterable[RunRow], kind: str) -> list[str]:
    found: set[str] = set()
    for row in rows:
        found.update(getattr(row, kind))
    return sorted(found)


def run_points(rows: Sequence[RunRow]) -> list[charts.RunPoint]:
    return [charts.RunPoint(r.run_id, r.name, r.params, r.metrics) for r in rows]


# --- the runs table's columns and sorting ---------------------------------------------------------


def parse_order(order_by: str) -> tuple[str, str, bool] | None:
    """``(kind, key, ascending)`` of an order_by this page writes; None for anything else."""
    found = _ORDER_BY.match(order_by)
    if not found:
        return None
    kind = _PREFIX_KIND[found.group(1).lower()]
    key = found.group(2) if found.group(2) is not None else found.group(3)
    return kind, key, (found.group(4) or "asc").lower() == "asc"


def order_clause(kind: str, key: str, ascending: bool) -> str:
    name = key if kind == "attribute" else f"`{key}`"
    return f"{_KIND_PREFIX[kind]}.{name} {'ASC' if ascending else 'DESC'}"


@dataclass(frozen=True, slots=True)
class Column:
    kind: str  # attribute | metric | param | tag
    key: str  # the attribute's search name, or the metric/param/tag key
    label: str
    href: str | None  # the sort link
    direction: str | None  # "asc" / "desc" when the table is sorted by this column


class RunsTableView:
    """The state one runs-table URL encodes, and the links that keep it while changing one part."""

    def __init__(
        self,
        experiment_id: str,
        filter_text: str,
        order_by: str,
        view: str,
        max_results: int,
        metrics: list[str],
        params: list[str],
        tags: list[str],
    ) -> None:
        self.path = f"/experiments/{experiment_id}"
        self.filter_text = filter_text
        self.order_by = order_by
        self.view = view
        self.max_results = max_results
        self.metrics = metrics
        self.params = params
        self.tags = tags
        self.sorted_by = parse_order(order_by) if order_by else ("attribute", "start_time", False)

    def link(self, **changes: Any) -> str:
        state: dict[str, Any] = {
            "filter": self.filter_text,
            "order_by": self.order_by,
            "view": None if self.view == "ACTIVE_ONLY" else self.view,
            "max_results": None if self.max_results == RUNS_PAGE else self.max_results,
            "cols": 1,
            "metrics": self.metrics,
            "params": self.params,
            "tags": self.tags,
        }
        state.update(changes)
        return with_query(self.path, **state)

    def column(self, kind: str, key: str, label: str, sortable: bool = True) -> Column:
        if not sortable:
            return Column(kind, key, label, None, None)
        direction = None
        if self.sorted_by is not None and self.sorted_by[:2] == (kind, key):
            ascending = self.sorted_by[2]
            direction = "asc" if ascending else "desc"
            next_ascending = not ascending
        else:
            # Bigger is usually better for metrics, and newest first for times.
            next_ascending = not (kind == "metric" or key in ("start_time", "end_time"))
        href = self.link(order_by=order_clause(kind, key, next_ascending), page_token=None)
        return Column(kind, key, label, href, direction)

    def columns(self) -> list[Column]:
        out = [
            self.column("attribute", key or label, label, sortable=key is not None)
            for label, key in ATTRIBUTE_COLUMNS
        ]
        out += [self.column("metric", k, k) for k in self.metrics]
        out += [self.column("param", k, k) for k in self.params]
        out += [self.column("tag", k, k) for k in self.tags]
        return out
