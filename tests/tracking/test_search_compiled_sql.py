"""The search grammar compiled to SQL for SQLite and PostgreSQL, without a database."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import Select
from sqlalchemy.dialects import postgresql, sqlite

from tracking.core.errors import InvalidParameter
from tracking.search import (
    LOGGED_MODEL_RULES,
    MAX_ORDER_BY_KEYS,
    Comparison,
    experiment_search_select,
    like_to_glob,
    logged_model_search_select,
    parse_filter,
    run_search_select,
)

DIALECTS = [sqlite.dialect(), postgresql.dialect()]


def sql_of(stmt: Select, dialect: object) -> str:
    return str(stmt.compile(dialect=dialect))  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Compiled SQL


@pytest.mark.parametrize(
    ("pattern", "glob"),
    [
        ("abc", "abc"),
        ("a%", "a*"),
        ("_b_", "?b?"),
        ("50%*", "50*[*]"),
        ("what?", "what[?]"),
        ("[x]", "[[]x]"),
        ("a\\%", "a\\*"),
    ],
)
def test_like_patterns_translate_to_glob(pattern: str, glob: str) -> None:
    assert like_to_glob(pattern) == glob


FULL_FILTER = (
    "metrics.acc > 0.5 AND params.lr = '0.1' AND tags.team LIKE 'M%' AND tags.x IS NULL "
    "AND tags.y IS NOT NULL AND datasets.name = 'd' AND datasets.context ILIKE 't%' "
    "AND attributes.status = 'FINISHED' AND start_time > 5 AND run_id IN ('a', 'b')"
)


@pytest.mark.parametrize("dialect", DIALECTS, ids=lambda d: d.name)
def test_each_child_clause_is_one_correlated_exists_without_distinct(dialect: object) -> None:
    sql = sql_of(run_search_select([1, 2], FULL_FILTER, [], "ACTIVE_ONLY"), dialect)
    assert sql.count("EXISTS (") == 6  # 1 metric, 3 tag, 2 dataset; attributes are direct
    # An equality on a param is a semi-join the value index can drive (one subquery, no join).
    assert sql.count("runs.id IN (SELECT params.run_id") == 1
    assert sql.count("NOT (EXISTS") == 1
    assert "DISTINCT" not in sql.upper()
    assert " JOIN " not in sql.split("WHERE", 1)[0]  # no joins without order keys
    where = sql.split("WHERE", 1)[1]
    assert where.lstrip().startswith("runs.experiment_id IN")
    assert "runs.lifecycle_stage IN" in where.split("EXISTS", 1)[0]
    # Correlated: the subqueries read the child tables, never runs itself.
    assert sql.count("FROM runs") == 1


@pytest.mark.parametrize("dialect", DIALECTS, ids=lambda d: d.name)
def test_all_view_type_drops_the_lifecycle_filter(dialect: object) -> None:
    assert "lifecycle_stage" not in sql_of(run_search_select([1], None, [], "ALL"), dialect)


def test_like_is_glob_on_sqlite_and_escape_free_like_on_postgresql() -> None:
    stmt = run_search_select([1], "tags.t LIKE 'M%' AND params.p ILIKE 'x'", [], None)
    lite = sql_of(stmt, sqlite.dialect())
    pg = sql_of(stmt, postgresql.dialect())
    assert "GLOB" in lite and "ILIKE" not in lite
    assert re.search(r"params\.value LIKE \?\)", lite)
    assert "tags.value LIKE %(param_1)s::VARCHAR ESCAPE ''" in pg
    assert "params.value ILIKE" in pg and "GLOB" not in pg
    compiled = stmt.compile(dialect=sqlite.dialect())
    assert "M*" in compiled.params.values()


@pytest.mark.parametrize("dialect", DIALECTS, ids=lambda d: d.name)
def test_metric_filters_skip_nan_rows(dialect: object) -> None:
    sql = sql_of(run_search_select([1], "metrics.acc != 1", [], None), dialect)
    assert re.search(r"latest_metrics\.is_nan = (0|false)", sql)


@pytest.mark.parametrize("dialect", DIALECTS, ids=lambda d: d.name)
def test_one_outer_join_per_order_key_and_tie_breakers_last(dialect: object) -> None:
    order = ["metrics.acc DESC", "params.lr", "tags.t DESC", "end_time", "metric.acc"]
    sql = sql_of(run_search_select([1], None, order, None), dialect)
    assert sql.count("LEFT OUTER JOIN") == 3
    assert "DISTINCT" not in sql.upper()
    order_by = sql.split("ORDER BY", 1)[1]
    assert order_by.rstrip().endswith("runs.start_time DESC, runs.run_uuid ASC")
    assert "order_0.value DESC" in order_by and "order_1.value ASC" in order_by
    assert "CASE WHEN (order_0.run_id IS NULL) THEN 2" in order_by
    assert "CASE WHEN (runs.end_time IS NULL) THEN 1" in order_by


@pytest.mark.parametrize("dialect", DIALECTS, ids=lambda d: d.name)
def test_default_run_order(dialect: object) -> None:
    sql = sql_of(run_search_select([1], None, [], None), dialect)
    assert sql.split("ORDER BY", 1)[1].strip() == "runs.start_time DESC, runs.run_uuid ASC"


def test_tie_breakers_are_not_repeated() -> None:
    sql = sql_of(run_search_select([1], None, ["start_time ASC", "run_id"], None), sqlite.dialect())
    assert sql.split("ORDER BY", 1)[1].strip() == "runs.start_time ASC, runs.run_uuid ASC"


@pytest.mark.parametrize("dialect", DIALECTS, ids=lambda d: d.name)
def test_experiment_select(dialect: object) -> None:
    stmt = experiment_search_select(
        "name ILIKE 'a%' AND tags.o = 'me' AND experiment_id != 'x' AND creation_time > 1",
        ["name DESC"],
        "DELETED_ONLY",
    )
    sql = sql_of(stmt, dialect)
    assert sql.startswith("SELECT experiments.experiment_id")
    assert sql.count("EXISTS (") == 1
    assert "DISTINCT" not in sql.upper()
    # An explicit order is tie-broken by experiment_id DESC, as mlflow server's store does.
    assert sql.split("ORDER BY", 1)[1].strip() == (
        "experiments.name DESC, experiments.experiment_id DESC"
    )
    default = sql_of(experiment_search_select(None, [], None), dialect)
    assert default.split("ORDER BY", 1)[1].strip() == (
        "experiments.creation_time DESC, experiments.experiment_id ASC"
    )


def test_non_integer_experiment_ids_match_nothing() -> None:
    stmt = experiment_search_select("experiment_id IN ('x', '99999999999999999999')", [], "ALL")
    compiled = stmt.compile(dialect=postgresql.dialect())
    assert compiled.params["experiment_id_1"] == []


# ---------------------------------------------------------------------------------------------
# Logged models


def test_logged_model_filter_grammar() -> None:
    assert parse_filter(
        "name = 'model' AND source_run_id IN ('r1') AND metrics.acc >= 0.5 AND params.p != 'x' "
        "AND tags.t ILIKE 'y' AND creation_time > 3",
        LOGGED_MODEL_RULES,
    ) == [
        Comparison("attribute", "name", "=", "model"),
        Comparison("attribute", "source_run_id", "IN", ("r1",)),
        Comparison("metric", "acc", ">=", 0.5),
        Comparison("param", "p", "!=", "x"),
        Comparison("tag", "t", "ILIKE", "y"),
        Comparison("attribute", "creation_timestamp", ">", 3),
    ]
    with pytest.raises(InvalidParameter, match="Invalid entity type 'datasets'"):
        parse_filter("datasets.name = 'x'", LOGGED_MODEL_RULES)


@pytest.mark.parametrize("dialect", DIALECTS, ids=lambda d: d.name)
def test_logged_model_select_scopes_by_experiment_and_orders_totally(dialect: object) -> None:
    stmt = logged_model_search_select(
        [1], "name = 'm' AND tags.t = 'x'", [("metrics.acc", False)], [("eval", "abc")]
    )
    sql = sql_of(stmt, dialect)
    where = sql.split("WHERE", 1)[1]
    assert where.lstrip().startswith("logged_models.experiment_id IN")
    assert "logged_models.lifecycle_stage = " in where
    # One EXISTS for the tag, one for "has a metric on the datasets" (no metric filter here).
    assert sql.count("EXISTS (") == 2 and "DISTINCT" not in sql.upper()
    assert sql.rstrip().endswith(
        "logged_models.creation_timestamp_ms DESC, logged_models.model_id ASC"
    )


@pytest.mark.parametrize(
    ("order", "message"),
    [
        ([("", True)], "must not be empty"),
        ([("params.p", True)], "is not supported"),
        ([("lifecycle_stage", True)], "Invalid attribute key"),
        ([(f"metrics.m{i}", True) for i in range(MAX_ORDER_BY_KEYS + 1)], "At most"),
    ],
)
def test_bad_logged_model_order_by(order: list[tuple[str, bool]], message: str) -> None:
    with pytest.raises(InvalidParameter, match=message):
        logged_model_search_select([1], None, order)


@pytest.mark.parametrize("dialect", DIALECTS, ids=lambda d: d.name)
def test_run_search_is_core_only_and_shared_order_aliases_keep_statements_independent(
    dialect: object,
) -> None:
    # Built from tables and one cached alias per (table, order position): no ORM entity (its
    # attribute work cost about 1 ms per search), and a later search reusing an alias leaves
    # an earlier statement's SQL as it was.
    filtered = ("metrics.a > 1 AND params.p = 'x'", ["metrics.a DESC", "params.p", "tags.t"])
    first = run_search_select([1], *filtered, "ACTIVE_ONLY")
    before = sql_of(first, dialect)
    other = run_search_select([2], "metrics.b < 0", ["tags.t", "metrics.a", "params.q DESC"], None)
    again = run_search_select([1], *filtered, "ACTIVE_ONLY")
    assert sql_of(first, dialect) == before == sql_of(again, dialect)
    assert {"order_0", "order_1", "order_2"} <= set(re.findall(r"order_\d", before))
    assert "order_2.key" in sql_of(other, dialect).replace('"', "")
    for stmt in (first, other):
        assert stmt._propagate_attrs.get("compile_state_plugin") != "orm"
