"""Experiment search: search_experiments filters and order_by compiled into one select."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Select, select

from tracking.core.auth import ResourceScope
from tracking.models import Experiment, ExperimentTag
from tracking.search.grammar import (
    Comparison,
    lifecycle_stages,
    parse_filter,
    parse_order_by_list,
)
from tracking.search.rules import EXPERIMENT_RULES
from tracking.search.sql import (
    _direction,
    id_predicate,
    key_value_predicate,
    numeric_predicate,
    scope_predicate,
    string_predicate,
)

_EXPERIMENT_COLUMNS: dict[str, ColumnElement[Any]] = {
    "name": Experiment.__table__.c.name,
    "experiment_id": Experiment.__table__.c.experiment_id,
    "creation_time": Experiment.__table__.c.creation_time,
    "last_update_time": Experiment.__table__.c.last_update_time,
}


def _experiment_clause(comparison: Comparison) -> ColumnElement[bool]:
    if comparison.kind == "tag":
        return key_value_predicate(
            Experiment,
            ExperimentTag.experiment_id == Experiment.experiment_id,
            ExperimentTag.key,
            ExperimentTag.value,
            comparison,
        )
    column = _EXPERIMENT_COLUMNS[comparison.key]
    if comparison.key == "experiment_id":
        return id_predicate(column, comparison.op, comparison.value)
    if isinstance(comparison.value, int):
        return numeric_predicate(column, comparison.op, comparison.value)
    return string_predicate(column, comparison.op, comparison.value)


def visible_experiment_ids(scope: ResourceScope) -> Select:
    """Ids of the experiments a visibility scope lets through (a subquery for other searches)."""
    return select(Experiment.experiment_id).where(
        scope_predicate(scope, Experiment.name, Experiment.experiment_id)
    )


def experiment_search_select(
    filter_string: str | None,
    order_by: list[str] | None,
    view_type: str | None,
    scope: ResourceScope | None = None,
) -> Select:
    """The experiments matching a search_experiments request, fully ordered.

    ``scope`` (None: no filter) keeps only experiments the caller may read, inside the query,
    so page sizes and tokens say nothing about hidden experiments.
    """
    stages = lifecycle_stages(view_type)
    comparisons = parse_filter(filter_string, EXPERIMENT_RULES)
    keys = parse_order_by_list(order_by, EXPERIMENT_RULES)
    stmt = select(Experiment.experiment_id)
    if scope is not None:
        stmt = stmt.where(scope_predicate(scope, Experiment.name, Experiment.experiment_id))
    if stages is not None:
        stmt = stmt.where(Experiment.lifecycle_stage.in_(stages))
    for comparison in comparisons:
        stmt = stmt.where(_experiment_clause(comparison))
    if not keys:
        # MLflow's default order: newest first, then the oldest id among equals.
        return stmt.order_by(Experiment.creation_time.desc(), Experiment.experiment_id.asc())
    ordering = [_direction(_EXPERIMENT_COLUMNS[key.key], key.ascending) for key in keys]
    if "experiment_id" not in {key.key for key in keys}:
        # MLflow breaks ties of an explicit order by experiment_id descending (not by creation).
        ordering.append(Experiment.experiment_id.desc())
    return stmt.order_by(*ordering)
