"""Charts: downsampled metric histories and point counts, computed in the database."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from tracking import store
from tracking.core.errors import InvalidParameter
from tracking.service.lookups import run_handle

# --- charts: runs by id and downsampled metric histories ------------------------------------------

MAX_SERIES_POINTS = 5000
MetricSeries = store.MetricSeries
# SQLite caps a compound SELECT at 500 terms; one history is one term of the bucket query.
MAX_SERIES_PER_QUERY = 400


def _bucket_points(
    buckets: Sequence[store.MetricBucket],
) -> tuple[list[int], list[float], list[int]]:
    """Each bucket becomes its extremes: two points (one if flat or a single point).

    Which extreme comes first follows the curve's direction (towards the next bucket), so a
    smooth falling curve stays smooth instead of zig-zagging inside every bucket. The points'
    times are the bucket's earliest and latest, in step order.
    """
    steps: list[int] = []
    values: list[float] = []
    times: list[int] = []
    mids = [(b.min_value + b.max_value) / 2 for b in buckets]
    for i, b in enumerate(buckets):
        if b.points == 1 or b.min_value == b.max_value:
            steps.append(b.first_step)
            values.append(b.min_value)
            times.append(b.first_timestamp)
            continue
        if i + 1 < len(buckets):
            rising = mids[i + 1] >= mids[i]
        else:
            rising = i == 0 or mids[i] >= mids[i - 1]
        first, last = (b.min_value, b.max_value) if rising else (b.max_value, b.min_value)
        steps.extend((b.first_step, b.last_step))
        values.extend((first, last))
        times.extend((b.first_timestamp, b.last_timestamp))
    return steps, values, times


async def metric_series(
    s: AsyncSession,
    run_ids: Sequence[str],
    keys: Sequence[str] | None,
    max_points: int,
) -> list[MetricSeries]:
    """Downsampled histories of ``keys`` (None: every key) for each run, ``max_points`` each.

    "Min-max" downsampling in SQL: the step range is cut into ``max_points // 2`` buckets and
    each keeps its lowest and highest value, so the true minimum and maximum (and any spike)
    are always drawn, and no history is ever read whole. Two queries however many series.
    """
    points = max(2, min(int(max_points), MAX_SERIES_POINTS))
    n_buckets = points // 2
    pks = await store.run_pks_by_uuids(s, list(dict.fromkeys(run_ids)))
    uuid_of = {pk: uuid for uuid, pk in pks.items()}
    ranges = await store.metric_step_ranges(s, list(pks.values()), keys)
    if len(ranges) > MAX_SERIES_PER_QUERY:
        raise InvalidParameter(
            f"Too many metric histories requested at once ({len(ranges)}; the limit is "
            f"{MAX_SERIES_PER_QUERY}). Choose fewer runs or metrics."
        )
    specs: list[tuple[int, str, int, int]] = []
    for run_pk, key, first, last in ranges:
        width = (last - first) // n_buckets + 1
        # (step - first) stays inside int64 unless the steps span more than 2**62; then buckets
        # are aligned to zero instead (still at most n_buckets + 1 of them).
        origin = first if last - first < 2**62 else 0
        specs.append((run_pk, key, origin, width))
    grouped: dict[int, list[store.MetricBucket]] = {}
    for bucket in await store.metric_history_buckets(s, specs):
        grouped.setdefault(bucket.series, []).append(bucket)
    out: list[MetricSeries] = []
    for index, (run_pk, key, _, _) in enumerate(specs):
        buckets = grouped.get(index, [])
        steps, values, times = _bucket_points(buckets)
        total = sum(b.points for b in buckets)
        out.append(
            MetricSeries(
                run_id=uuid_of[run_pk],
                key=key,
                steps=steps,
                values=values,
                total=total,
                downsampled=total > len(steps),
                timestamps=times,
            )
        )
    order = {r: i for i, r in enumerate(dict.fromkeys(run_ids))}
    out.sort(key=lambda series: (order.get(series.run_id, 0), series.key))
    return out


async def count_metric_points(
    s: AsyncSession, run_id: str | None, keys: Sequence[str] | None = None
) -> dict[str, int]:
    """How many points each metric history of the run holds (NaN included)."""
    handle = await run_handle(s, run_id)
    counts = await store.metric_point_counts(s, [handle.id], keys)
    return {key: count for (_, key), count in counts.items()}
