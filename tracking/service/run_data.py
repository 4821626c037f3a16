"""What a run logs: metrics, params and tags, single or batched, and metric histories."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from tracking import store
from tracking.core.db import Database
from tracking.core.driver import DriverRows
from tracking.core.errors import InvalidParameter, ResourceNotFound
from tracking.core.group_commit import GroupCommit
from tracking.core.wire import decode_page_token, encode_double, encode_page_token
from tracking.errors import LoggedModelNotFound, ParamChanged
from tracking.schemas import LogBatch, MetricIn, MetricOut
from tracking.service.lookups import RUN_NAME_TAG, active_run, page_fingerprint, run_handle
from tracking.store import MetricColumns, MetricPoint, RunHandle, prebuilt
from tracking.validation import (
    MAX_DATASET_DIGEST,
    MAX_DATASET_NAME,
    MAX_HISTORY_PAGE,
    MAX_PARAM_VALUE_LEN,
    MAX_RUN_NAME_LEN,
    MAX_RUN_TAG_VALUE_LEN,
    check_length,
    require,
    truncate,
    validate_batch_sizes,
    validate_key,
    validate_max_results,
    validate_metric_value,
    validate_timestamp,
)


def _metric_point(m: MetricIn | Any) -> MetricPoint:
    key = validate_key(m.key, "metric")
    value = validate_metric_value(key, m.value)
    # The columns' own limits (the same as a logged dataset's): PostgreSQL refused a longer
    # value with a 500, SQLite stored it.
    check_length(m.dataset_name, MAX_DATASET_NAME, "Dataset name")
    check_length(m.dataset_digest, MAX_DATASET_DIGEST, "Dataset digest")
    return MetricPoint(
        key=key,
        value=value,
        timestamp=validate_timestamp(key, m.timestamp),
        step=int(m.step or 0),
        model_id=m.model_id or None,
        dataset_name=m.dataset_name or None,
        dataset_digest=m.dataset_digest or None,
    )


async def _log_metric_points(s: AsyncSession, handle: RunHandle, points: list[MetricPoint]) -> None:
    await store.insert_metrics(s, handle.id, points)
    model_points = [p for p in points if p.model_id]
    if model_points:
        known = await store.existing_logged_model_ids(
            s, (p.model_id for p in model_points if p.model_id)
        )
        missing = {p.model_id for p in model_points} - known
        if missing:
            raise LoggedModelNotFound(sorted(str(m) for m in missing)[0])
        await store.insert_logged_model_metrics(s, handle.run_uuid, model_points)


async def _log_metrics_in_one_statement(
    s: AsyncSession, run_id: str | None, points: list[MetricPoint]
) -> bool:
    """The fast path of a metrics-only write (no logged model to check): True when done.

    False sends the caller down the usual path, which finds the run and raises the right
    error (missing, or not active) when the write found no active run.
    """
    if not run_id or any(p.model_id for p in points):
        return False
    return bool(await store.insert_metrics_by_run_uuid(s, run_id, points))


async def log_metric(s: AsyncSession, run_id: str | None, m: Any) -> None:
    point = _metric_point(m)
    if await _log_metrics_in_one_statement(s, run_id, [point]):
        return
    handle = await active_run(s, run_id)
    await _log_metric_points(s, handle, [point])


async def log_metric_at_once(w: DriverRows, run_id: str | None, m: Any) -> bool:
    """``log-metric`` on the write connection's driver (one statement on PostgreSQL): True
    when written. False sends the caller to :func:`log_metric` (a missing or inactive run to
    report, a logged model to check); nothing was written."""
    point = _metric_point(m)
    if not run_id or point.model_id:
        return False
    return await prebuilt.write_metrics(w, run_id, [point])


# What one flush of grouped metric writes may carry, in points: a full log-batch (1,000, as
# MLflow's limit) goes alone; a hundred log-metric requests or ten 100-metric batches together.
MAX_GROUP_POINTS = 1000
# Two flushes at once: a worker's next group need not wait for a large one's commit.
MAX_FLUSHES_IN_FLIGHT = 2
# A larger batch is written by itself (same statement, its own connection): its points cost
# PostgreSQL far more than the statement's fixed cost (about that of 13 points) that a group
# would share, and in a group it would wait for, and hold up, the others' commits.
MAX_GROUPED_BATCH = 20

MetricWrites = GroupCommit[tuple[str, MetricColumns], bool]


def metric_writes(db: Database) -> MetricWrites | None:
    """PostgreSQL: the group commit of this app's metrics-only writes (log-metric, log-batch),
    each flush ONE statement on the driver; None on SQLite, where a write is a few
    microseconds on the process's single writer connection and there is no commit to share.
    """
    if db.is_sqlite:
        return None

    async def flush(writes: Sequence[tuple[str, MetricColumns]]) -> list[bool]:
        async with db.driver_write() as w:
            return await prebuilt.write_metric_groups(w, writes)

    return GroupCommit(
        flush,
        weight=lambda write: len(write[1]),
        max_weight=MAX_GROUP_POINTS,
        max_in_flight=MAX_FLUSHES_IN_FLIGHT,
    )


async def log_metric_grouped(writes: MetricWrites, run_id: str | None, m: Any) -> bool:
    """:func:`log_metric_at_once` through the group commit: True when written (committed).
    False sends the caller to :func:`log_metric`; :class:`GroupFailed` to
    :func:`log_metric_at_once` (the flush failed; this write may or may not be stored, and
    writing it again is a no-op if it was)."""
    point = _metric_point(m)
    if not run_id or point.model_id:
        return False
    return await writes.submit((run_id, MetricColumns.of([point])))


async def log_param(
    s: AsyncSession, run_id: str | None, key: str | None, value: str | None
) -> None:
    k = validate_key(key, "param")
    v = truncate("" if value is None else value, MAX_PARAM_VALUE_LEN)
    handle = await active_run(s, run_id)
    changed = await store.insert_params_checked(s, handle.id, {k: v})
    if changed:
        raise ParamChanged(handle.run_uuid, *changed[0])


async def set_tag(s: AsyncSession, run_id: str | None, key: str | None, value: str | None) -> None:
    k = validate_key(key, "tag")
    v = truncate(value or "", MAX_RUN_TAG_VALUE_LEN)
    handle = await active_run(s, run_id)
    await store.upsert_run_tags(s, handle.id, {k: v})
    if k == RUN_NAME_TAG:
        await store.update_run(s, handle.id, name=v[:MAX_RUN_NAME_LEN])


async def delete_tag(s: AsyncSession, run_id: str | None, key: str | None) -> None:
    require(key, "key")
    assert key is not None
    handle = await active_run(s, run_id)
    if not await store.delete_run_tag(s, handle.id, key):
        raise ResourceNotFound(f"No tag with name: {key} in run with id {handle.run_uuid}")


async def log_batch(s: AsyncSession, req: LogBatch) -> None:
    validate_batch_sizes(len(req.metrics), len(req.params), len(req.tags))
    points = [_metric_point(m) for m in req.metrics]
    params: dict[str, str] = {}
    for p in req.params:
        k = validate_key(p.key, "param")
        v = truncate("" if p.value is None else p.value, MAX_PARAM_VALUE_LEN)
        if k in params and params[k] != v:
            raise InvalidParameter(
                f"Duplicate parameter keys have been submitted: ['{k}']. Please ensure the request "
                "contains only one param value per param key."
            )
        params[k] = v
    tags = {
        validate_key(t.key, "tag"): truncate(t.value or "", MAX_RUN_TAG_VALUE_LEN) for t in req.tags
    }
    only_metrics = points and not params and not tags
    if only_metrics and await _log_metrics_in_one_statement(s, req.run_id, points):
        return
    handle = await active_run(s, req.run_id)
    changed = await store.insert_params_checked(s, handle.id, params)
    if changed:
        raise ParamChanged(handle.run_uuid, *changed[0])
    await _log_metric_points(s, handle, points)
    await store.upsert_run_tags(s, handle.id, tags)
    if RUN_NAME_TAG in tags:
        await store.update_run(s, handle.id, name=tags[RUN_NAME_TAG][:MAX_RUN_NAME_LEN])


async def log_batch_at_once(w: DriverRows, req: LogBatch) -> bool:
    """A metrics-only ``log-batch`` on the write connection's driver (one statement on
    PostgreSQL, no BEGIN and COMMIT round trips): True when written.

    False sends the caller to :func:`log_batch`, which validates everything again and reports
    the error (params or tags to write, a logged model to check, a missing or inactive run, an
    empty batch); nothing was written. The checks run in :func:`log_batch`'s order (sizes,
    then each metric), so a refused batch raises the same error on either path.
    """
    if req.params or req.tags or not req.metrics or not req.run_id:
        return False
    validate_batch_sizes(len(req.metrics), 0, 0)
    points = [_metric_point(m) for m in req.metrics]
    if any(p.model_id for p in points):
        return False
    return await prebuilt.write_metrics(w, req.run_id, points)


async def log_batch_grouped(writes: MetricWrites, req: LogBatch) -> bool:
    """:func:`log_batch_at_once` through the group commit (see :func:`log_metric_grouped`)."""
    if req.params or req.tags or not req.metrics or not req.run_id:
        return False
    validate_batch_sizes(len(req.metrics), 0, 0)
    columns = _metric_columns(req.metrics)
    if columns is None:
        return False
    if len(columns) > MAX_GROUPED_BATCH:
        return await writes.alone((req.run_id, columns))
    return await writes.submit((req.run_id, columns))


def _metric_columns(metrics: Sequence[MetricIn]) -> MetricColumns | None:
    """:func:`_metric_point`'s checks over a batch, building its columns directly (a
    MetricPoint per point was most of a 100-metric batch's own CPU); None when a point names
    a logged model (the usual path checks it). The first point a check refuses is handed to
    :func:`_metric_point`, so the error is the one it raises, for the same point."""
    c = MetricColumns()
    isnan = math.isnan
    for m in metrics:
        key, value, ts = m.key, m.value, m.timestamp
        name, digest = m.dataset_name, m.dataset_digest
        if (
            not key
            or value is None
            or isinstance(value, bool)
            or ts is None
            or ts < 0
            or (name is not None and len(name) > MAX_DATASET_NAME)
            or (digest is not None and len(digest) > MAX_DATASET_DIGEST)
        ):
            _metric_point(m)
            raise AssertionError(f"a metric check refused {m!r} without an error")
        c.keys.append(validate_key(key, "metric"))
        if m.model_id:
            return None
        value = float(value)
        nan = isnan(value)
        c.values.append(0.0 if nan else value)
        c.nans.append(nan)
        c.timestamps.append(int(ts))
        c.steps.append(int(m.step or 0))
        c.model_ids.append(None)
        c.dataset_names.append(name or None)
        c.dataset_digests.append(digest or None)
    return c


async def metric_history(
    s: AsyncSession,
    run_id: str | None,
    key: str | None,
    max_results: int | None,
    page_token: str | None,
) -> tuple[list[MetricOut], str | None]:
    require(key, "metric_key")
    assert key is not None
    limit = validate_max_results(max_results, MAX_HISTORY_PAGE, MAX_HISTORY_PAGE)
    handle = await run_handle(s, run_id)
    fingerprint = page_fingerprint("hist", handle.run_uuid, key)
    offset = decode_page_token(page_token, fingerprint)
    rows = await store.metric_history(s, handle.id, key, offset=offset, limit=limit + 1)
    token = encode_page_token(offset + limit, fingerprint) if len(rows) > limit else None
    return [
        MetricOut(k, "NaN" if nan else encode_double(v), ts, step, mid, dname, ddigest)
        for k, v, nan, ts, step, mid, dname, ddigest in rows[:limit]
    ], token
