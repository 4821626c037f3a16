"""Run search: search_runs filters and order_by compiled into one select scoped by experiment."""

from __future__ import annotations

from functools import cache
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Select,
    Table,
    and_,
    case,
    false,
    literal_column,
    select,
    true,
)
from sqlalchemy import inspect as sa_inspect

from tracking.core.auth import ResourceScope
from tracking.core.errors import InvalidParameter
from tracking.models import (
    VALUE_PREFIX_CHARS,
    Dataset,
    DatasetInput,
    DatasetInputTag,
    LatestMetric,
    Param,
    Run,
    Tag,
    value_prefix,
)
from tracking.search.experiments import visible_experiment_ids
from tracking.search.grammar import (
    Comparison,
    OrderKey,
    lifecycle_stages,
    parse_filter,
    parse_order_by_list,
)
from tracking.search.rules import RUN_RULES, _show
from tracking.search.sql import (
    _direction,
    _nulls_last,
    correlated_exists,
    key_value_predicate,
    numeric_predicate,
    string_predicate,
)

# Core tables, not ORM entities: the same SQL, without the ORM's per-attribute work (an
# aliased entity's first comparison alone cost about 1 ms per search).
_runs: Table = cast(Table, Run.__table__)
_latest: Table = cast(Table, LatestMetric.__table__)
_params: Table = cast(Table, Param.__table__)
_tags: Table = cast(Table, Tag.__table__)
_inputs: Table = cast(Table, DatasetInput.__table__)
_input_tags: Table = cast(Table, DatasetInputTag.__table__)
_datasets: Table = cast(Table, Dataset.__table__)


@cache
def _order_alias(table: Table, index: int) -> Any:
    """The join of the ``index``-th order key, built once (its column collection alone cost
    more than the rest of the clause). Statements are immutable, so one alias serves them all;
    it holds no bound parameter, which ``with_values_in_sql`` would mark in place."""
    return table.alias(f"order_{index}")


@cache
def _value_prefix(table: Table) -> ColumnElement[str]:
    """The indexed prefix expression of a param or tag table's value, built once (it holds
    no bound parameter, which ``with_values_in_sql`` would mark in place)."""
    return value_prefix(table.c.value)


_RUN_COLUMNS: dict[str, ColumnElement[Any]] = {
    "run_id": Run.__table__.c.run_uuid,
    "run_name": Run.__table__.c.name,
    "status": Run.__table__.c.status,
    "user_id": Run.__table__.c.user_id,
    "artifact_uri": Run.__table__.c.artifact_uri,
    "start_time": Run.__table__.c.start_time,
    "end_time": Run.__table__.c.end_time,
}
_RUN_NULLABLE = frozenset(
    key for key, column in _RUN_COLUMNS.items() if sa_inspect(Run).columns[str(column.key)].nullable
)
_DATASET_CONTEXT_TAG = "mlflow.data.context"


def _run_clause(comparison: Comparison, *, walks_metric: bool = False) -> ColumnElement[bool]:
    kind, key, op, value = comparison.kind, comparison.key, comparison.op, comparison.value
    if kind == "attribute":
        column = _RUN_COLUMNS[key]
        if isinstance(value, int):
            return numeric_predicate(column, op, value)
        return string_predicate(column, op, value)
    if kind == "metric":
        return correlated_exists(
            _runs,
            _latest.c.run_id == _runs.c.id,
            _latest.c.key == key,
            # NaN is stored as 0 with is_nan set; it satisfies no numeric comparison.
            _latest.c.is_nan == false(),
            numeric_predicate(_latest.c.value, op, value),
        )
    if kind in ("param", "tag"):
        table = _params if kind == "param" else _tags
        return _key_value_clause(table, comparison, drive=not walks_metric)
    if kind == "dataset" and key == "context":
        return correlated_exists(
            _runs,
            _inputs.c.run_id == _runs.c.id,
            _input_tags.c.key == _DATASET_CONTEXT_TAG,
            string_predicate(_input_tags.c.value, op, value),
            from_=_inputs.join(_input_tags, _input_tags.c.input_id == _inputs.c.id),
        )
    if kind == "dataset":
        dataset_column = _datasets.c.name if key == "name" else _datasets.c.digest
        return correlated_exists(
            _runs,
            _inputs.c.run_id == _runs.c.id,
            string_predicate(dataset_column, op, value),
            from_=_inputs.join(_datasets, _datasets.c.dataset_uuid == _inputs.c.dataset_uuid),
        )
    raise InvalidParameter(f"Unsupported run search key {kind} {_show(key)}.")


def _key_value_clause(table: Any, comparison: Comparison, *, drive: bool) -> ColumnElement[bool]:
    """A param or tag clause. Equality compares the indexed value prefix
    (``ix_params_key_value_prefix``, ``ix_tags_key_value_prefix``); a value shorter than the
    prefix equals the prefix exactly, so only a longer one also compares the whole value (a
    redundant clause would make PostgreSQL count one condition twice and underestimate).

    ``drive``: the form ``run id IN (matching rows)``, which SQLite can start from (the
    index gives the few matching runs). Otherwise a correlated EXISTS, which SQLite probes
    per run, for a search that walks a metric's order instead. PostgreSQL plans both forms
    as the same semi-join and picks the side from its statistics.
    """
    c = table.c
    if comparison.op != "=":
        return key_value_predicate(_runs, c.run_id == _runs.c.id, c.key, c.value, comparison)
    value = str(comparison.value)
    match = _value_prefix(table) == value[:VALUE_PREFIX_CHARS]
    if len(value) >= VALUE_PREFIX_CHARS:
        match = and_(match, c.value == value)
    if not drive:
        return correlated_exists(_runs, c.run_id == _runs.c.id, c.key == comparison.key, match)
    return _runs.c.id.in_(select(c.run_id).where(c.key == comparison.key, match))


def _join_filtered_metric(
    stmt: Select, index: int, key: str, comparisons: list[Comparison]
) -> tuple[Select, Any]:
    """Order by a metric the filter also compares: the filter already requires a numeric
    (non-NaN) latest value, so no run falls into the NaN or missing groups. An inner join
    carrying the filter's comparisons orders by the value alone, which the (key, value) index
    returns in order, and the planner can stop after the page instead of sorting every match.
    """
    alias = _order_alias(_latest, index)
    joined = alias.c
    condition = and_(
        joined.run_id == _runs.c.id,
        joined.key == key,
        joined.is_nan == false(),
        *(numeric_predicate(joined.value, c.op, c.value) for c in comparisons),
    )
    return stmt.join(alias, condition), joined.value


def _order_runs(
    stmt: Select, keys: list[OrderKey], metric_filters: dict[str, list[Comparison]]
) -> Select:
    ordering: list[ColumnElement[Any]] = []
    for index, key in enumerate(keys):
        if key.kind == "attribute":
            column = _RUN_COLUMNS[key.key]
            if key.key in _RUN_NULLABLE:
                ordering.append(_nulls_last(column))
            ordering.append(_direction(column, key.ascending))
            continue
        if key.kind == "metric" and key.key in metric_filters:
            stmt, value = _join_filtered_metric(stmt, index, key.key, metric_filters[key.key])
            ordering.append(_direction(value, key.ascending))
            continue
        # One LEFT JOIN per order key; (run_id, key) is each table's primary key, so the join
        # adds no rows and needs no DISTINCT. Runs without the key sort last either way.
        table: Table = {"metric": _latest, "param": _params, "tag": _tags}[key.kind]
        alias = _order_alias(table, index)
        joined = alias.c
        stmt = stmt.outerjoin(alias, and_(joined.run_id == _runs.c.id, joined.key == key.key))
        if key.kind == "metric":
            ordering.append(
                case(
                    (joined.run_id.is_(None), literal_column("2")),
                    (joined.is_nan == true(), literal_column("1")),  # NaN after numbers
                    else_=literal_column("0"),
                )
            )
        else:
            ordering.append(_nulls_last(joined.run_id))
        ordering.append(_direction(joined.value, key.ascending))
    named = {key.key for key in keys if key.kind == "attribute"}
    if "start_time" not in named:
        ordering.append(_runs.c.start_time.desc())
    if "run_id" not in named:
        ordering.append(_runs.c.run_uuid.asc())
    return stmt.order_by(*ordering)


def run_search_select(
    experiment_ids: list[int],
    filter_string: str | None,
    order_by: list[str] | None,
    view_type: str | None,
    scope: ResourceScope | None = None,
) -> Select:
    """The runs matching a search_runs request, fully ordered, without limit or offset.

    ``scope`` (None: no filter) drops runs of experiments the caller may not read.
    """
    stages = lifecycle_stages(view_type)
    comparisons = parse_filter(filter_string, RUN_RULES)
    keys = parse_order_by_list(order_by, RUN_RULES)
    run = _runs.c
    stmt = select(run.id, run.run_uuid).where(run.experiment_id.in_(list(experiment_ids)))
    if scope is not None:
        stmt = stmt.where(run.experiment_id.in_(visible_experiment_ids(scope)))
    if stages is not None:
        stmt = stmt.where(run.lifecycle_stage.in_(stages))
    ordered_metrics = {key.key for key in keys if key.kind == "metric"}
    metric_filters: dict[str, list[Comparison]] = {}
    pending: list[Comparison] = []
    for comparison in comparisons:
        if comparison.kind == "metric" and comparison.key in ordered_metrics:
            # Applied by the order key's join instead (same row: (run_id, key) is the key).
            metric_filters.setdefault(comparison.key, []).append(comparison)
            continue
        pending.append(comparison)
    # The first order key is a metric the filter compares: favour the plan that walks that
    # metric's index in order and probes each run's params and tags (see _key_value_clause).
    walks_metric = bool(keys) and keys[0].kind == "metric" and keys[0].key in metric_filters
    for comparison in pending:
        stmt = stmt.where(_run_clause(comparison, walks_metric=walks_metric))
    return _order_runs(stmt, keys, metric_filters)
