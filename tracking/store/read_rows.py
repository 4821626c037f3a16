"""A search's page of runs and a metric's history as plain driver rows (the runs for the
renderer that writes them straight to JSON, tracking.service.run_json).

The runs are read by the very statements :func:`tracking.store.runs.load_runs` sends (prebuilt
in :mod:`tracking.store.prebuilt`), so the database returns the same rows in the same order; only
the Python objects built from them are left out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, select

from tracking.core.db import id_list_value
from tracking.core.driver import DriverRows, Prebuilt
from tracking.models import Metric, Run
from tracking.store.prebuilt import (
    LOAD_INPUT_TAGS,
    LOAD_INPUTS,
    LOAD_METRICS,
    LOAD_MODEL_LINKS,
    LOAD_PARAMS,
    LOAD_RUN_ROWS,
    LOAD_TAGS,
    InputRow,
)

# Positions of the run row's columns (LOAD_RUN_ROWS selects the whole table, in its order).
RUN_COLUMN = {c.key: i for i, c in enumerate(Run.__table__.c)}


@dataclass(slots=True)
class RunPageRows:
    """The rows of a page's runs, as the driver returned them.

    ``runs``: whole run rows (see :data:`RUN_COLUMN`); ``params`` and ``tags``: (run_id, key,
    value); ``metrics``: (run_id, key, value, is_nan, timestamp, step); ``inputs``: dataset
    inputs with their tags, in input order; ``links``: (run_id, model_id, direction, step).
    """

    runs: list[Sequence[Any]]
    params: list[Sequence[Any]]
    tags: list[Sequence[Any]]
    metrics: list[Sequence[Any]]
    inputs: list[tuple[Any, list[tuple[str, str]]]]
    links: list[Sequence[Any]]


async def load_run_page_rows(r: DriverRows, run_pks: Sequence[int]) -> RunPageRows:
    """The rows of the runs ``run_pks``: six statements (seven with dataset inputs)."""
    if not run_pks:
        return RunPageRows([], [], [], [], [], [])
    bind = {"ids": id_list_value(list(run_pks), r.dialect)}
    runs = await r.all(LOAD_RUN_ROWS, bind)
    params = await r.all(LOAD_PARAMS, bind)
    tags = await r.all(LOAD_TAGS, bind)
    metrics = await r.all(LOAD_METRICS, bind)
    inputs: list[tuple[Any, list[tuple[str, str]]]] = []
    input_rows: list[Any] = [InputRow._make(row) for row in await r.all(LOAD_INPUTS, bind)]
    if input_rows:
        by_input: dict[int, list[tuple[str, str]]] = {i.id: [] for i in input_rows}
        input_bind = {"ids": id_list_value([i.id for i in input_rows], r.dialect)}
        for input_id, key, value in await r.all(LOAD_INPUT_TAGS, input_bind):
            by_input[input_id].append((key, value))
        inputs = [(i, by_input[i.id]) for i in input_rows]
    links = await r.all(LOAD_MODEL_LINKS, bind)
    return RunPageRows(runs, params, tags, metrics, inputs, links)


# A page of one metric's history found by the run's id, in one statement: the same columns and
# order as tracking.store.metrics' session statement, joined to the run instead of reading its
# key first. No row: no such run, no such metric, or a page past the end (the session path
# tells them apart).
HISTORY_BY_RUN_UUID = Prebuilt(
    lambda _dialect: (
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
        .join(Run, Run.id == Metric.run_id)
        .where(Run.run_uuid == bindparam("run_uuid"), Metric.key == bindparam("key"))
        .order_by(Metric.step, Metric.timestamp, Metric.value, Metric.is_nan)
        .offset(bindparam("offset"))
        .limit(bindparam("limit"))
    )
)


async def metric_history_rows(
    r: DriverRows, run_uuid: str, key: str, *, offset: int, limit: int
) -> list[Sequence[Any]]:
    """A page of the metric ``key`` of the run ``run_uuid`` (deleted or not): (key, value,
    is_nan, timestamp, step, model_id, dataset_name, dataset_digest) rows."""
    params = {"run_uuid": run_uuid, "key": key, "offset": offset, "limit": limit}
    return await r.all(HISTORY_BY_RUN_UUID, params)
