"""Run search: search_runs filters and order_by compiled into one select scoped by experiment."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    case,
    false,
    literal_column,
    select,
    true,
)
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.orm import aliased

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
            Run,
            LatestMetric.run_id == Run.id,
            LatestMetric.key == key,
            # NaN is stored as 0 with is_nan set; it satisfies no numeric comparison.
            LatestMetric.is_nan == false(),
            numeric_predicate(LatestMetric.value, op, value),
        )
    if kind in ("param", "tag"):
        table = Param if kind == "param" else Tag
        return _key_value_clause(table, comparison, drive=not walks_metric)
    if kind == "dataset" and key == "context":
        return correlated_exists(
            Run,
            DatasetInput.run_id == Run.id,
            DatasetInputTag.key == _DATASET_CONTEXT_TAG,
            string_predicate(DatasetInputTag.value, op, value),
            from_=DatasetInput.__table__.join(
                DatasetInputTag.__table__, DatasetInputTag.input_id == DatasetInput.id
            ),
        )
    if kind == "dataset":
        dataset_column = Dataset.name if key == "name" else Dataset.digest
        return correlated_exists(
            Run,
            DatasetInput.run_id == Run.id,
            string_predicate(dataset_column, op, value),
            from_=DatasetInput.__table__.join(
                Dataset.__table__, Dataset.dataset_uuid == DatasetInput.dataset_uuid
            ),
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
    if comparison.op != "=":
        return key_value_predicate(Run, table.run_id == Run.id, table.key, table.value, comparison)
    value = str(comparison.value)
    match = value_prefix(table.value) == value[:VALUE_PREFIX_CHARS]
    if len(value) >= VALUE_PREFIX_CHARS:
        match = and_(match, table.value == value)
    if not drive:
        return correlated_exists(Run, table.run_id == Run.id, table.key == comparison.key, match)
    return Run.id.in_(select(table.run_id).where(table.key == comparison.key, match))


def _join_filtered_metric(
    stmt: Select, index: int, key: str, comparisons: list[Comparison]
) -> tuple[Select, Any]:
    """Order by a metric the filter also compares: the filter already requires a numeric
    (non-NaN) latest value, so no run falls into the NaN or missing groups. An inner join
    carrying the filter's comparisons orders by the value alone, which the (key, value) index
    returns in order, and the planner can stop after the page instead of sorting every match.
    """
    joined = aliased(LatestMetric, name=f"order_{index}")
    condition = and_(
        joined.run_id == Run.id,
        joined.key == key,
        joined.is_nan == false(),
        *(numeric_predicate(joined.value, c.op, c.value) for c in comparisons),
    )
    return stmt.join(joined, condition), joined.value


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
        table: Any = {"metric": LatestMetric, "param": Param, "tag": Tag}[key.kind]
        joined = aliased(table, name=f"order_{index}")
        stmt = stmt.outerjoin(joined, and_(joined.run_id == Run.id, joined.key == key.key))
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
        ordering.append(Run.start_time.desc())
    if "run_id" not in named:
        ordering.append(Run.run_uuid.asc())
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
    stmt = select(Run.id, Run.run_uuid).where(Run.experiment_id.in_(list(experiment_ids)))
    if scope is not None:
        stmt = stmt.where(Run.experiment_id.in_(visible_experiment_ids(scope)))
    if stages is not None:
        stmt = stmt.where(Run.lifecycle_stage.in_(stages))
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
