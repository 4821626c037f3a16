"""Logged model search (MLflow 3): search_logged_models compiled into one select."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, ScalarSelect, Select, and_, case, false, or_, select, true
from sqlalchemy.orm import aliased

from tracking.core.auth import ResourceScope
from tracking.core.errors import InvalidParameter
from tracking.models import LoggedModel, LoggedModelMetric, LoggedModelParam, LoggedModelTag
from tracking.search.experiments import visible_experiment_ids
from tracking.search.grammar import (
    MAX_ORDER_BY_KEYS,
    Comparison,
    OrderKey,
    parse_filter,
    parse_order_by,
)
from tracking.search.rules import LOGGED_MODEL_RULES
from tracking.search.sql import (
    _direction,
    _nulls_last,
    key_value_predicate,
    numeric_predicate,
    string_predicate,
)

_LOGGED_MODEL_COLUMNS: dict[str, ColumnElement[Any]] = {
    "name": LoggedModel.__table__.c.name,
    "model_id": LoggedModel.__table__.c.model_id,
    "model_type": LoggedModel.__table__.c.model_type,
    "status": LoggedModel.__table__.c.status,
    "source_run_id": LoggedModel.__table__.c.source_run_id,
    "creation_timestamp": LoggedModel.__table__.c.creation_timestamp_ms,
    "last_updated_timestamp": LoggedModel.__table__.c.last_updated_timestamp_ms,
}
_LOGGED_MODEL_NULLABLE = frozenset({"model_type", "source_run_id"})


def _latest_model_metric(
    key: str, datasets: list[tuple[str | None, str | None]]
) -> ScalarSelect[Any]:
    """The model's latest (step, timestamp) value of ``key``; NULL when missing or NaN.

    ``datasets`` limits the points considered to those logged against one of the given
    (name, digest) datasets (:func:`_dataset_scopes`).
    """
    metric = aliased(LoggedModelMetric, name="model_metric")
    criteria: list[ColumnElement[bool]] = [
        metric.model_id == LoggedModel.model_id,
        metric.key == key,
    ]
    scopes = _dataset_scopes(metric, datasets)
    if scopes:
        criteria.append(or_(*scopes))
    value = case((metric.is_nan == true(), None), else_=metric.value)
    return (
        select(value)
        .where(*criteria)
        .order_by(metric.step.desc(), metric.timestamp.desc(), metric.id.desc())
        .limit(1)
        .correlate(LoggedModel)
        .scalar_subquery()
    )


def _dataset_scopes(
    metric: Any, datasets: list[tuple[str | None, str | None]]
) -> list[ColumnElement[bool]]:
    """One condition per (name, digest): a missing digest matches any digest of that name (and
    a lone digest, which an order_by entry may carry, any name)."""
    return [
        and_(
            *([metric.dataset_name == name] if name else []),
            *([metric.dataset_digest == digest] if digest else []),
        )
        for name, digest in datasets
        if name or digest
    ]


def _any_metric_point(
    key: str, op: str, value: Any, datasets: list[tuple[str | None, str | None]]
) -> ColumnElement[bool]:
    """Some point of the model's metric ``key`` satisfies ``op value``, as MLflow's
    search_logged_models filters (any logged point, not only the latest; NaN never matches),
    limited to points logged against ``datasets`` when given."""
    metric = aliased(LoggedModelMetric, name="filter_metric")
    criteria = [
        metric.model_id == LoggedModel.model_id,
        metric.key == key,
        metric.is_nan == false(),
        numeric_predicate(metric.value, op, value),
    ]
    scopes = _dataset_scopes(metric, datasets)
    if scopes:
        criteria.append(or_(*scopes))
    return select(metric.model_id).where(*criteria).correlate(LoggedModel).exists()


def _logged_model_clause(
    comparison: Comparison, datasets: list[tuple[str | None, str | None]]
) -> ColumnElement[bool]:
    kind, key, op, value = comparison.kind, comparison.key, comparison.op, comparison.value
    if kind == "attribute":
        column = _LOGGED_MODEL_COLUMNS[key]
        if isinstance(value, int):
            return numeric_predicate(column, op, value)
        return string_predicate(column, op, value)
    if kind == "metric":
        return _any_metric_point(key, op, value, datasets)
    table: Any = LoggedModelParam if kind == "param" else LoggedModelTag
    return key_value_predicate(
        LoggedModel, table.model_id == LoggedModel.model_id, table.key, table.value, comparison
    )


# (field_name, ascending), optionally followed by the (dataset_name, dataset_digest) whose
# metric points a "metrics.<key>" ordering reads, as MLflow's order_by entries carry them.
OrderSpec = tuple[str, bool] | tuple[str, bool, str | None, str | None]


def _has_metric_on(datasets: list[tuple[str | None, str | None]]) -> ColumnElement[bool]:
    """The model has at least one metric point logged against one of ``datasets``."""
    metric = aliased(LoggedModelMetric, name="dataset_metric")
    scopes = _dataset_scopes(metric, datasets)
    return (
        select(metric.model_id)
        .where(metric.model_id == LoggedModel.model_id, or_(*scopes))
        .correlate(LoggedModel)
        .exists()
    )


def logged_model_search_select(
    experiment_ids: list[int],
    filter_string: str | None,
    order_by: list[OrderSpec] | None,
    datasets: list[tuple[str | None, str | None]] | None = None,
    scope: ResourceScope | None = None,
) -> Select:
    """Active logged models matching a search_logged_models request, fully ordered.

    ``order_by`` holds :data:`OrderSpec` entries, e.g. ("metrics.accuracy", False, "eval", None).
    ``datasets`` (name, digest) pairs, as in MLflow: metric filters read only points logged
    against one of them, and without a metric filter a model must have some metric on one.
    ``scope`` (None: no filter) drops models of experiments the caller may not read.
    """
    scopes = list(datasets or [])
    if any(not name for name, _ in scopes):
        raise InvalidParameter("`dataset_name` in the `datasets` clause must be specified.")
    comparisons = parse_filter(filter_string, LOGGED_MODEL_RULES)
    if len(order_by or []) > MAX_ORDER_BY_KEYS:
        raise InvalidParameter(f"At most {MAX_ORDER_BY_KEYS} order_by clauses are supported.")
    keys = [
        (OrderKey(parsed.kind, parsed.key, spec[1]), [spec[2:4]] if len(spec) == 4 else [])
        for spec in order_by or []
        for parsed in [parse_order_by(spec[0], LOGGED_MODEL_RULES)]
    ]
    stmt = select(LoggedModel.model_id).where(
        LoggedModel.experiment_id.in_(list(experiment_ids)),
        LoggedModel.lifecycle_stage == "active",
    )
    if scope is not None:
        stmt = stmt.where(LoggedModel.experiment_id.in_(visible_experiment_ids(scope)))
    for comparison in comparisons:
        stmt = stmt.where(_logged_model_clause(comparison, scopes))
    if scopes and not any(c.kind == "metric" for c in comparisons):
        stmt = stmt.where(_has_metric_on(scopes))
    ordering: list[ColumnElement[Any]] = []
    for key, order_datasets in keys:
        if key.kind == "metric":
            column: ColumnElement[Any] = _latest_model_metric(key.key, order_datasets)
            nullable = True
        else:
            column = _LOGGED_MODEL_COLUMNS[key.key]
            nullable = key.key in _LOGGED_MODEL_NULLABLE
        if nullable:
            ordering.append(_nulls_last(column))
        ordering.append(_direction(column, key.ascending))
    named = {key.key for key, _ in keys if key.kind == "attribute"}
    if "creation_timestamp" not in named:
        ordering.append(LoggedModel.creation_timestamp_ms.desc())
    if "model_id" not in named:
        ordering.append(LoggedModel.model_id.asc())
    return stmt.order_by(*ordering)
