"""Metric points: the history, each key's latest value, pages and chart downsampling."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import BigInteger, Integer, bindparam, false, func, literal, select, text, union_all
from sqlalchemy.ext.asyncio import AsyncSession

from tracking.core.db import dialect_name
from tracking.models import LatestMetric, Metric


@dataclass(frozen=True, slots=True)
class MetricPoint:
    key: str
    value: float
    timestamp: int
    step: int
    model_id: str | None = None
    dataset_name: str | None = None
    dataset_digest: str | None = None

    @property
    def is_nan(self) -> bool:
        return math.isnan(self.value)

    @property
    def stored_value(self) -> float:
        # SQLite stores a NaN REAL as NULL, so NaN is kept as 0 plus the is_nan flag.
        return 0.0 if math.isnan(self.value) else self.value


@dataclass(slots=True)
class MetricColumns:
    """A write's points as columns (the arrays a PostgreSQL write sends): built straight from
    the request, without a :class:`MetricPoint` per point. ``values`` are stored values (NaN
    as 0 with its ``nans`` flag set)."""

    keys: list[str] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)
    timestamps: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    nans: list[bool] = field(default_factory=list)
    model_ids: list[str | None] = field(default_factory=list)
    dataset_names: list[str | None] = field(default_factory=list)
    dataset_digests: list[str | None] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.keys)

    @classmethod
    def of(cls, points: Sequence[MetricPoint]) -> MetricColumns:
        return cls(
            [p.key for p in points],
            [p.step for p in points],
            [p.timestamp for p in points],
            [p.stored_value for p in points],
            [p.is_nan for p in points],
            [p.model_id for p in points],
            [p.dataset_name for p in points],
            [p.dataset_digest for p in points],
        )


SQLITE_METRIC_INSERT = (
    "INSERT INTO metrics (run_id, key, step, timestamp, value, is_nan, model_id, dataset_name, "
    "dataset_digest) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (run_id, key, step, timestamp, value, is_nan) DO NOTHING"
)
# Keep the maximum (step, timestamp, value): an older point never replaces a newer one.
SQLITE_LATEST_UPSERT = (
    "INSERT INTO latest_metrics (run_id, key, step, timestamp, value, is_nan) "
    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (run_id, key) DO UPDATE SET step = excluded.step, "
    "timestamp = excluded.timestamp, value = excluded.value, is_nan = excluded.is_nan "
    "WHERE (excluded.step, excluded.timestamp, excluded.value) "
    "> (latest_metrics.step, latest_metrics.timestamp, latest_metrics.value)"
)


# prepared statement) is the same for 1 point or 1,000. Data-modifying CTEs always run; the
# final SELECT names the run written to (no row: no active run of that id, nothing written).
_PG_METRICS_WRITE_TEMPLATE = """
    WITH run AS ({run}),
    history AS (
        INSERT INTO metrics (run_id, key, step, timestamp, value, is_nan,
                             model_id, dataset_name, dataset_digest)
        SELECT run.id, p.key, p.step, p.ts, p.value, p.is_nan,
               p.model_id, p.dataset_name, p.dataset_digest
        FROM run, unnest(CAST(:keys AS TEXT[]), CAST(:steps AS BIGINT[]), CAST(:tss AS BIGINT[]),
                         CAST(:values AS FLOAT8[]), CAST(:nans AS BOOLEAN[]),
                         CAST(:model_ids AS TEXT[]), CAST(:dataset_names AS TEXT[]),
                         CAST(:dataset_digests AS TEXT[]))
             AS p(key, step, ts, value, is_nan, model_id, dataset_name, dataset_digest)
        ON CONFLICT (run_id, key, step, timestamp, value, is_nan) DO NOTHING
    ),
    latest AS (
        INSERT INTO latest_metrics AS lm (run_id, key, step, timestamp, value, is_nan)
        SELECT run.id, l.key, l.step, l.ts, l.value, l.is_nan
        FROM run, unnest(CAST(:latest_keys AS TEXT[]), CAST(:latest_steps AS BIGINT[]),
                         CAST(:latest_tss AS BIGINT[]), CAST(:latest_values AS FLOAT8[]),
                         CAST(:latest_nans AS BOOLEAN[]))
             AS l(key, step, ts, value, is_nan)
        ON CONFLICT (run_id, key) DO UPDATE
        SET step = excluded.step, timestamp = excluded.timestamp, value = excluded.value,
            is_nan = excluded.is_nan
        WHERE (excluded.step, excluded.timestamp, excluded.value)
              > (lm.step, lm.timestamp, lm.value)
    )
    SELECT id FROM run
"""
_PG_METRICS_WRITE = text(
    _PG_METRICS_WRITE_TEMPLATE.format(run="SELECT CAST(:run_id AS BIGINT) AS id")
)
# The same, finding the run by its uuid: saves the separate run lookup of a metrics-only write.
PG_METRICS_WRITE_BY_UUID = text(
    _PG_METRICS_WRITE_TEMPLATE.format(
        run="SELECT id FROM runs WHERE run_uuid = :run_uuid AND lifecycle_stage = 'active'"
    )
)


def pg_metric_arrays(points: Sequence[MetricPoint]) -> dict[str, Any]:
    latest = _latest_points(points)
    return {
        "keys": [p.key for p in points],
        "steps": [p.step for p in points],
        "tss": [p.timestamp for p in points],
        "values": [p.stored_value for p in points],
        "nans": [p.is_nan for p in points],
        "model_ids": [p.model_id for p in points],
        "dataset_names": [p.dataset_name for p in points],
        "dataset_digests": [p.dataset_digest for p in points],
        "latest_keys": [p.key for p in latest],
        "latest_steps": [p.step for p in latest],
        "latest_tss": [p.timestamp for p in latest],
        "latest_values": [p.stored_value for p in latest],
        "latest_nans": [p.is_nan for p in latest],
    }


async def insert_metrics_by_run_uuid(
    s: AsyncSession, run_uuid: str, points: Sequence[MetricPoint]
) -> bool | None:
    """PostgreSQL only: write ``points`` to the ACTIVE run ``run_uuid`` in one statement.

    True when written; False when no active run has that id (nothing written: the caller looks
    the run up to say why); None on SQLite, where the caller takes the usual path.
    """
    if dialect_name(s) != "postgresql":
        return None
    conn = await s.connection()
    params = {"run_uuid": run_uuid, **pg_metric_arrays(points)}
    return (await conn.execute(PG_METRICS_WRITE_BY_UUID, params)).first() is not None


def _latest_points(points: Sequence[MetricPoint]) -> list[MetricPoint]:
    """One point per key, its maximum (step, timestamp, value): an upsert may not touch the
    same row twice in one statement."""
    latest: dict[str, MetricPoint] = {}
    for p in points:
        cur = latest.get(p.key)
        if cur is None or (p.step, p.timestamp, p.stored_value) > (
            cur.step,
            cur.timestamp,
            cur.stored_value,
        ):
            latest[p.key] = p
    return list(latest.values())


async def insert_metrics(s: AsyncSession, run_pk: int, points: Sequence[MetricPoint]) -> None:
    """Append to the history and move each key's latest value forward (one statement on
    PostgreSQL, two on SQLite, where a statement costs microseconds and no round trip)."""
    if not points:
        return
    conn = await s.connection()
    if dialect_name(s) == "postgresql":
        await conn.execute(_PG_METRICS_WRITE, {"run_id": run_pk, **pg_metric_arrays(points)})
        return
    # SQLite: the driver's executemany with plain tuples. A statement costs microseconds here,
    # so SQLAlchemy's per-row parameter processing was most of a 100-metric batch's CPU.
    await conn.exec_driver_sql(SQLITE_METRIC_INSERT, sqlite_history_rows(run_pk, points))
    await conn.exec_driver_sql(SQLITE_LATEST_UPSERT, sqlite_latest_rows(run_pk, points))


def sqlite_history_rows(run_pk: int, points: Sequence[MetricPoint]) -> list[tuple[Any, ...]]:
    """The rows of :data:`SQLITE_METRIC_INSERT`, one tuple per point."""
    return [
        (
            run_pk,
            p.key,
            p.step,
            p.timestamp,
            p.stored_value,
            p.is_nan,
            p.model_id,
            p.dataset_name,
            p.dataset_digest,
        )
        for p in points
    ]


def sqlite_latest_rows(run_pk: int, points: Sequence[MetricPoint]) -> list[tuple[Any, ...]]:
    """The rows of :data:`SQLITE_LATEST_UPSERT`: each key's latest point."""
    return [
        (run_pk, p.key, p.step, p.timestamp, p.stored_value, p.is_nan)
        for p in _latest_points(points)
    ]


_METRIC_HISTORY = (
    select(
        Metric.key,
        Metric.value,
        Metric.is_nan,
        Metric.timestamp,
        Metric.step,
        Metric.model_id,
        Metric.dataset_name,
        Metric.dataset_digest,
    )
    .where(Metric.run_id == bindparam("run_id"), Metric.key == bindparam("key"))
    .order_by(Metric.step, Metric.timestamp, Metric.value, Metric.is_nan)
    .offset(bindparam("offset"))
    .limit(bindparam("limit"))
)


async def metric_history(
    s: AsyncSession, run_pk: int, key: str, *, offset: int, limit: int
) -> list[Any]:
    """A page of one metric's points as rows (tuples), in the order of the SELECT's columns.

    Built once and run on the Core connection: a 1,000-point page through the ORM's row
    loading (and named attribute access per row) cost more CPU than the query itself.
    """
    conn = await s.connection()
    params = {"run_id": run_pk, "key": key, "offset": offset, "limit": limit}
    return list((await conn.execute(_METRIC_HISTORY, params)).all())


async def metric_step_ranges(
    s: AsyncSession, run_pks: Sequence[int], keys: Sequence[str] | None = None
) -> list[tuple[int, str, int, int]]:
    """``(run_pk, key, first step, last step)`` of each logged metric of these runs.

    The last step comes from ``latest_metrics`` (its row holds the maximum step) and the first
    from an index seek on the history, so no history row is scanned.
    """
    if not run_pks:
        return []
    first_step = (
        select(func.min(Metric.step))
        .where(Metric.run_id == LatestMetric.run_id, Metric.key == LatestMetric.key)
        .scalar_subquery()
    )
    stmt = select(LatestMetric.run_id, LatestMetric.key, first_step, LatestMetric.step).where(
        LatestMetric.run_id.in_(list(run_pks))
    )
    if keys is not None:
        stmt = stmt.where(LatestMetric.key.in_(list(keys)))
    rows = await s.execute(stmt.order_by(LatestMetric.run_id, LatestMetric.key))
    return [(int(r[0]), r[1], int(r[2]), int(r[3])) for r in rows if r[2] is not None]


@dataclass(frozen=True, slots=True)
class MetricBucket:
    """One step range of a history: its first and last step, lowest and highest value, size."""

    series: int
    bucket: int
    first_step: int
    last_step: int
    min_value: float
    max_value: float
    points: int
    # Earliest and latest wall-clock time (ms) of the bucket's points, for time-based x axes.
    first_timestamp: int = 0
    last_timestamp: int = 0


async def metric_history_buckets(
    s: AsyncSession, series: Sequence[tuple[int, str, int, int]]
) -> list[MetricBucket]:
    """Min-max downsampling of several histories in one statement.

    ``series`` holds ``(run_pk, key, origin, width)``: history points (NaN excluded) are grouped
    into buckets ``(step - origin) / width`` (integer division on SQLite and PostgreSQL alike),
    and each bucket keeps its extremes, so a one-step spike survives any zoom level. Results
    are ordered by series (the index in ``series``) then bucket.
    """

    if not series:
        return []
    parts = []
    for index, (run_pk, key, origin, width) in enumerate(series):
        bucket = ((Metric.step - literal(origin, BigInteger)) // literal(width, BigInteger)).label(
            "bucket"
        )
        parts.append(
            select(
                literal(index, Integer).label("series"),
                bucket,
                func.min(Metric.step),
                func.max(Metric.step),
                func.min(Metric.value),
                func.max(Metric.value),
                func.count(),
                func.min(Metric.timestamp),
                func.max(Metric.timestamp),
            )
            .where(Metric.run_id == run_pk, Metric.key == key, Metric.is_nan == false())
            .group_by(bucket)
        )
    if len(parts) == 1:
        stmt: Any = parts[0].order_by("bucket")
    else:
        stmt = union_all(*parts).order_by("series", "bucket")
    rows = await s.execute(stmt)
    return [
        MetricBucket(
            int(r[0]),
            int(r[1]),
            int(r[2]),
            int(r[3]),
            float(r[4]),
            float(r[5]),
            r[6],
            int(r[7]),
            int(r[8]),
        )
        for r in rows
    ]


async def metric_point_counts(
    s: AsyncSession, run_pks: Sequence[int], keys: Sequence[str] | None = None
) -> dict[tuple[int, str], int]:
    """How many history points (NaN included) each (run, key) has."""
    if not run_pks:
        return {}
    stmt = select(Metric.run_id, Metric.key, func.count()).where(Metric.run_id.in_(list(run_pks)))
    if keys is not None:
        stmt = stmt.where(Metric.key.in_(list(keys)))
    rows = await s.execute(stmt.group_by(Metric.run_id, Metric.key))
    return {(int(r[0]), r[1]): int(r[2]) for r in rows}


@dataclass(frozen=True, slots=True)
class MetricSeries:
    """A metric history for charts: at most the requested number of (step, value) points.

    ``total`` counts the history's non-NaN points; ``downsampled`` says points were merged.
    """

    run_id: str
    key: str
    steps: list[int]
    values: list[float]
    total: int
    downsampled: bool
    # Wall-clock time (ms) of each point, aligned with ``steps``; a downsampled bucket's two
    # points carry its earliest and latest time.
    timestamps: list[int] = field(default_factory=list)
