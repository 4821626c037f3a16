"""A metric's history on a read connection's driver, in one statement."""

from __future__ import annotations

from tracking.core.driver import DriverRows
from tracking.core.errors import MlflowError
from tracking.core.wire import decode_page_token, encode_double, encode_page_token
from tracking.schemas import MetricOut
from tracking.service.lookups import page_fingerprint
from tracking.store.read_rows import metric_history_rows
from tracking.validation import MAX_HISTORY_PAGE, validate_max_results


async def metric_history_at_once(
    r: DriverRows,
    run_id: str | None,
    key: str | None,
    max_results: int | None,
    page_token: str | None,
) -> tuple[list[MetricOut], str | None] | None:
    """:func:`tracking.service.run_data.metric_history` in one statement, no session: the
    page's points and the next page's token. None: a refused request, no such run or metric,
    or an empty page, which the session path answers (or names the error of).
    """
    if not run_id or not key:
        return None
    try:
        limit = validate_max_results(max_results, MAX_HISTORY_PAGE, MAX_HISTORY_PAGE)
        # The session path's fingerprint names the run's stored id, which equals run_id (the
        # run is found by equality).
        fingerprint = page_fingerprint("hist", run_id, key)
        offset = decode_page_token(page_token, fingerprint)
    except MlflowError:
        return None
    rows = await metric_history_rows(r, run_id, key, offset=offset, limit=limit + 1)
    if not rows:
        return None
    token = encode_page_token(offset + limit, fingerprint) if len(rows) > limit else None
    # The points as the session path builds them (measured: building these structs and
    # encoding them costs less than writing each point's JSON by hand in Python).
    return [
        MetricOut(k, "NaN" if nan else encode_double(v), ts, step, mid, dname, ddigest)
        for k, v, nan, ts, step, mid, dname, ddigest in rows[:limit]
    ], token
