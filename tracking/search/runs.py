"""Run search: search_runs filters and order_by compiled into one select scoped by experiment."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Select, and_, case, false, literal_column, select, true
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.orm import aliased

from tracking.core.auth import ResourceScope
from tracking.core.errors import InvalidParameter
from tracking.models import Dataset, DatasetInput, DatasetInputTag, LatestMetric, Param, Run, Tag
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


def _run_clause(comparison: Comparison) -> ColumnElement[bool]:
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
        return key_value_predicate(Run, table.run_id == Run.id, table.key, table.value, comparison)
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


def _order_runs(stmt: Select, keys: list[OrderKey]) -> Select:
    ordering: list[ColumnElement[Any]] = []
    for index, key in enumerate(keys):
        if key.kind == "attribute":
            column = _RUN_COLUMNS[key.key]
            if key.key in _RUN_NULLABLE:
                ordering.append(_nulls_last(column))
            ordering.append(_direction(column, key.ascending))
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
    for comparison in comparisons:
        stmt = stmt.where(_run_clause(comparison))
    return _order_runs(stmt, keys)
