"""The search grammar without a database: tokens, parsed comparisons, errors and compiled SQL."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import Select
from sqlalchemy.dialects import postgresql, sqlite

from tracking.core.errors import InvalidParameter
from tracking.models import Run, Tag
from tracking.search import (
    EXPERIMENT_RULES,
    LOGGED_MODEL_RULES,
    MAX_CLAUSES,
    MAX_FILTER_LENGTH,
    MAX_ORDER_BY_KEYS,
    MAX_VALUES,
    STRING_OPS,
    Comparison,
    EntityRules,
    KeyRule,
    KindRule,
    OrderKey,
    experiment_search_select,
    key_value_predicate,
    lifecycle_stages,
    like_to_glob,
    logged_model_search_select,
    parse_filter,
    parse_order_by,
    parse_order_by_list,
    run_search_select,
    tokenize,
)

DIALECTS = [sqlite.dialect(), postgresql.dialect()]


def sql_of(stmt: Select, dialect: object) -> str:
    return str(stmt.compile(dialect=dialect))  # type: ignore[arg-type]


def one(text: str) -> Comparison:
    (comparison,) = parse_filter(text)
    return comparison


# ---------------------------------------------------------------------------------------------
# Tokenizer


def test_tokenize_splits_words_numbers_operators_and_quotes_with_positions() -> None:
    tokens = tokenize("metrics.acc>=-1.5e3 AND tags.`a b` != 'x'")
    assert [(t.kind, t.value) for t in tokens] == [
        ("word", "metrics.acc"),
        ("op", ">="),
        ("number", "-1.5e3"),
        ("word", "AND"),
        ("word", "tags."),
        ("backtick", "a b"),
        ("op", "!="),
        ("string", "x"),
    ]
    assert (tokens[0].start, tokens[0].end) == (0, 11)
    assert tokens[5].start == tokens[4].end


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("'it''s'", "it's"),
        ("'it\\'s'", "it's"),
        ("'a\\\\b'", "a\\b"),
        ("'C:\\dir'", "C:\\dir"),  # other backslashes are literal
        ('"say ""hi"""', 'say "hi"'),
        ("''", ""),
        ("'%_[*?'", "%_[*?"),
        ("'ünïcode ✓'", "ünïcode ✓"),
    ],
)
def test_tokenize_unescapes_quoted_strings(text: str, value: str) -> None:
    (token,) = tokenize(text)
    assert token.value == value


@pytest.mark.parametrize("number", ["1", "-1", "+2", "0.5", ".5", "5.", "1e10", "-2.5E-3", "007"])
def test_tokenize_reads_numbers(number: str) -> None:
    (token,) = tokenize(number)
    assert (token.kind, token.value) == ("number", number)


# ---------------------------------------------------------------------------------------------
# Filters: every kind, operator and value type


def test_empty_filter_has_no_comparisons() -> None:
    assert parse_filter(None) == []
    assert parse_filter("") == []
    assert parse_filter("  \t\n") == []


@pytest.mark.parametrize("op", ["=", "!=", "<", "<=", ">", ">="])
def test_metric_comparisons_take_numbers(op: str) -> None:
    assert one(f"metrics.acc {op} 0.5") == Comparison("metric", "acc", op, 0.5)


@pytest.mark.parametrize(
    ("literal", "value"),
    [("1", 1.0), ("-3", -3.0), ("2.5", 2.5), ("1e-3", 0.001), ("-1.5E2", -150.0), (".5", 0.5)],
)
def test_metric_values_are_floats(literal: str, value: float) -> None:
    comparison = one(f"metrics.acc > {literal}")
    assert comparison.value == value
    assert isinstance(comparison.value, float)


def test_huge_metric_literal_becomes_infinity() -> None:
    assert one("metrics.acc < 1e999").value == float("inf")


@pytest.mark.parametrize("kind", ["param", "tag"])
@pytest.mark.parametrize(
    ("op_text", "op"),
    [("=", "="), ("!=", "!="), ("LIKE", "LIKE"), ("like", "LIKE"), ("ILike", "ILIKE")],
)
def test_param_and_tag_string_comparisons(kind: str, op_text: str, op: str) -> None:
    assert one(f"{kind}s.k {op_text} 'v%'") == Comparison(kind, "k", op, "v%")


@pytest.mark.parametrize("kind", ["param", "tag"])
@pytest.mark.parametrize(
    ("text", "op"),
    [
        ("IS NULL", "IS NULL"),
        ("is null", "IS NULL"),
        ("IS NOT NULL", "IS NOT NULL"),
        ("Is Not Null", "IS NOT NULL"),
    ],
)
def test_param_and_tag_null_checks(kind: str, text: str, op: str) -> None:
    assert one(f"{kind}.k {text}") == Comparison(kind, "k", op, None)


@pytest.mark.parametrize(
    ("prefix", "kind"),
    [
        ("metrics", "metric"),
        ("metric", "metric"),
        ("params", "param"),
        ("param", "param"),
        ("parameter", "param"),
        ("parameters", "param"),
        ("tags", "tag"),
        ("tag", "tag"),
        ("TAGS", "tag"),
        ("attributes", "attribute"),
        ("attribute", "attribute"),
        ("attr", "attribute"),
        ("run", "attribute"),
        ("datasets", "dataset"),
        ("dataset", "dataset"),
    ],
)
def test_every_prefix_alias_resolves(prefix: str, kind: str) -> None:
    key, value = {
        "metric": ("m", "1"),
        "param": ("p", "'v'"),
        "tag": ("t", "'v'"),
        "attribute": ("status", "'FINISHED'"),
        "dataset": ("name", "'d'"),
    }[kind]
    comparison = one(f"{prefix}.{key} = {value}")
    assert (comparison.kind, comparison.key) == (kind, key)


def test_identifier_splits_on_the_first_dot() -> None:
    assert one("tags.mlflow.parentRunId = 'abc'") == Comparison(
        "tag", "mlflow.parentRunId", "=", "abc"
    )


@pytest.mark.parametrize(
    "text",
    ["tags.`my key.with dots` = 'v'", "tags.\"my key.with dots\" = 'v'"],
)
def test_quoted_keys_may_hold_spaces_and_dots(text: str) -> None:
    assert one(text) == Comparison("tag", "my key.with dots", "=", "v")


@pytest.mark.parametrize("value", ["'v'", '"v"'])
def test_string_values_take_single_or_double_quotes(value: str) -> None:
    assert one(f"params.p = {value}").value == "v"


def test_unquoted_keys_may_hold_slashes_dashes_and_colons() -> None:
    assert one("metrics.val/loss-x:1 < 3").key == "val/loss-x:1"


@pytest.mark.parametrize(
    ("identifier", "key"),
    [
        ("run_id", "run_id"),
        ("attributes.run_name", "run_name"),
        ("`run name`", "run_name"),
        ("`Run name`", "run_name"),
        ("`Run Name`", "run_name"),
        ('"Run Name"', "run_name"),
        ("attributes.`Run Name`", "run_name"),
        ("status", "status"),
        ("user_id", "user_id"),
        ("artifact_uri", "artifact_uri"),
    ],
)
@pytest.mark.parametrize("op", ["=", "!=", "LIKE", "ILIKE"])
def test_string_attributes_and_their_aliases(identifier: str, key: str, op: str) -> None:
    assert one(f"{identifier} {op} 'x'") == Comparison("attribute", key, op, "x")


@pytest.mark.parametrize("op_text", ["IN", "in", "NOT IN", "not In"])
def test_run_id_membership_lists(op_text: str) -> None:
    comparison = one(f"attributes.run_id {op_text} ('a', \"b\" ,'c')")
    assert comparison == Comparison("attribute", "run_id", op_text.upper(), ("a", "b", "c"))


@pytest.mark.parametrize(
    ("identifier", "key"),
    [("start_time", "start_time"), ("end_time", "end_time"), ("created", "start_time")],
)
@pytest.mark.parametrize("op", ["=", "!=", "<", "<=", ">", ">="])
def test_time_attributes_take_integers(identifier: str, key: str, op: str) -> None:
    comparison = one(f"attributes.{identifier} {op} -1700000000000")
    assert comparison == Comparison("attribute", key, op, -1700000000000)
    assert isinstance(comparison.value, int)


def test_time_attribute_accepts_the_int64_bounds() -> None:
    assert one(f"start_time > {-(2**63)}").value == -(2**63)
    assert one(f"start_time < {2**63 - 1}").value == 2**63 - 1


@pytest.mark.parametrize("key", ["name", "digest", "context"])
@pytest.mark.parametrize("op", ["=", "!=", "LIKE", "ILIKE"])
def test_dataset_string_comparisons(key: str, op: str) -> None:
    assert one(f"datasets.{key} {op} 'v'") == Comparison("dataset", key, op, "v")


@pytest.mark.parametrize("op", ["IN", "NOT IN"])
def test_dataset_membership(op: str) -> None:
    assert one(f"dataset.context {op} ('train', 'eval')").value == ("train", "eval")


@pytest.mark.parametrize("conjunction", ["AND", "and", "And"])
def test_comparisons_join_with_case_insensitive_and(conjunction: str) -> None:
    comparisons = parse_filter(
        f"metrics.a > 1 {conjunction} params.b = 'x' {conjunction} tags.c IS NULL"
    )
    assert [c.kind for c in comparisons] == ["metric", "param", "tag"]


def test_whitespace_between_tokens_is_optional() -> None:
    assert parse_filter("metrics.a>1 and params.b='x'and run_id in('a','b')") == [
        Comparison("metric", "a", ">", 1.0),
        Comparison("param", "b", "=", "x"),
        Comparison("attribute", "run_id", "IN", ("a", "b")),
    ]


def test_comparisons_are_hashable_values() -> None:
    assert len({one("params.a = 'x'"), one("param.a = 'x'")}) == 1


# ---------------------------------------------------------------------------------------------
# Bad filters: every class of error is an InvalidParameter with a readable message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("metrics.a > 1 OR metrics.b > 1", "Invalid clause(s) in filter string: 'OR'"),
        ("metrics.a > 1 or metrics.b > 1", "Invalid clause(s) in filter string: 'OR'"),
        ("NOT metrics.a > 1", "Invalid clause(s) in filter string: 'NOT'"),
        ("(metrics.a > 1)", "Invalid clause(s) in filter string: '('"),
        ("metrics.a > 1 AND (params.b = 'x')", "Invalid clause(s) in filter string: '('"),
        ("metrics.a > 1)", "Invalid clause(s) in filter string: ')'"),
        ("foo.bar = 'x'", "Invalid entity type 'foo'"),
        ("attributes.color = 'x'", "Invalid attribute key 'color'"),
        ("experiment_id = '1'", "Invalid attribute key 'experiment_id'"),
        ("datasets.schema = 'x'", "Invalid dataset key 'schema'"),
        ("metrics.a = '1'", "Expected a numeric value for metric 'a'"),
        ("metrics.a LIKE 1", "Invalid comparator 'LIKE' for metric 'a'"),
        ("metrics.a IS NULL", "Invalid comparator 'IS NULL' for metric 'a'"),
        ("metrics.a IN (1)", "Invalid comparator 'IN' for metric 'a'"),
        ("params.a = 1", "Expected a quoted string value for param 'a'"),
        ("tags.a > 'x'", "Invalid comparator '>' for tag 'a'"),
        ("tags.a IN ('x')", "Invalid comparator 'IN' for tag 'a'"),
        ("status IN ('x')", "Invalid comparator 'IN' for attribute 'status'"),
        ("status < 'x'", "Invalid comparator '<' for attribute 'status'"),
        ("start_time LIKE 'x'", "Invalid comparator 'LIKE' for attribute 'start_time'"),
        ("start_time = '5'", "Expected a numeric value for attribute 'start_time'"),
        ("start_time = 1.5", "Expected an integer"),
        ("start_time = 1e3", "Expected an integer"),
        (f"start_time = {2**63}", "Expected an integer"),
        (f"end_time = {-(2**63) - 1}", "Expected an integer"),
        ("start_time = " + "9" * 5000, "Expected an integer"),
        ("datasets.name IS NULL", "Invalid comparator 'IS NULL' for dataset 'name'"),
        ("params.a = 'x", "Unterminated string starting at position 11"),
        ('params.a = "x', "Unterminated string"),
        ("tags.`a = 'x'", "Unterminated quoted identifier"),
        ("params.a = 'x' 'y'", "Expected AND between comparisons"),
        ("params.a = 'x' AND", "ends with AND"),
        ("params.a = 'x' AND AND params.b = 'y'", "Expected an identifier"),
        ("params.a = 'x' params.b = 'y'", "Expected AND between comparisons"),
        ("params.a", "Expected a comparison operator after 'params.a'"),
        ("params.a 'x'", "Expected a comparison operator after 'params.a'"),
        ("params.a =", "Expected a value after '='"),
        ("params.a = AND", "Expected a value for param 'a'"),
        ("metrics.a == 1", "Invalid comparator '=='"),
        ("metrics.a <> 1", "Invalid comparator '<>'"),
        ("metrics.a => 1", "Invalid comparator '=>'"),
        ("params.a = NULL", "using IS NULL or IS NOT NULL"),
        ("params.a NOT LIKE 'x'", "Expected IN after NOT"),
        ("params.a IS 'x'", "Expected IS NULL or IS NOT NULL"),
        ("params.a IS NOT 'x'", "Expected IS NULL or IS NOT NULL"),
        ("run_id IN 'a'", "Expected a parenthesised list"),
        ("run_id IN ()", "must not be empty"),
        ("run_id IN ('a' 'b')", "Expected ',' or ')'"),
        ("run_id IN ('a',)", "Expected a value for attribute 'run_id'"),
        ("run_id IN ('a'", "Expected ',' or ')'"),
        ("run_id IN (1)", "Expected a quoted string value"),
        ("tags. = 'x'", "Missing key after 'tags.'"),
        ("tags.", "Missing key after 'tags.'"),
        ("tags. `a` = 'x'", "Missing key after 'tags.'"),
        ("tags.`` = 'x'", "Empty key"),
        ("`` = 'x'", "Empty key"),
        ("= 'x'", "Expected an identifier"),
        ("AND params.a = 'x'", "Expected an identifier"),
        ("'x' = params.a", "Expected an identifier"),
        ("1 = 1", "Expected an identifier"),
        ("params.a = 'x';", "Invalid character ';'"),
        ("params.a = 'x' -- comment", "Invalid character '-'"),
        ("params.a = 'x\x00'", "NUL characters"),
        ("params.a = '\ud800'", "not valid UTF-8"),
        ("x" * (MAX_FILTER_LENGTH + 1), "too long"),
        (" AND ".join(["metrics.a > 1"] * (MAX_CLAUSES + 1)), "more than"),
        ("run_id IN (" + ",".join(["'a'"] * (MAX_VALUES + 1)) + ")", "more than"),
    ],
)
def test_bad_filters_raise_invalid_parameter(text: str, message: str) -> None:
    with pytest.raises(InvalidParameter) as info:
        parse_filter(text)
    assert message in info.value.message
    assert info.value.error_code == "INVALID_PARAMETER_VALUE"
    assert info.value.status_code == 400


def test_error_messages_shorten_long_user_input() -> None:
    with pytest.raises(InvalidParameter) as info:
        parse_filter("foo" + "o" * 5000 + ".bar = 'x'")
    assert len(info.value.message) < 300


# ---------------------------------------------------------------------------------------------
# order_by


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ("metrics.acc", OrderKey("metric", "acc", True)),
        ("metrics.acc DESC", OrderKey("metric", "acc", False)),
        ("metrics.acc desc", OrderKey("metric", "acc", False)),
        ("  params.lr   ASC ", OrderKey("param", "lr", True)),
        ("tags.`my key` Desc", OrderKey("tag", "my key", False)),
        ('tags."my key"', OrderKey("tag", "my key", True)),
        ("tags.mlflow.runName", OrderKey("tag", "mlflow.runName", True)),
        ("start_time", OrderKey("attribute", "start_time", True)),
        ("attributes.created DESC", OrderKey("attribute", "start_time", False)),
        ("`Run Name`", OrderKey("attribute", "run_name", True)),
        ("attr.end_time", OrderKey("attribute", "end_time", True)),
        ("run_id", OrderKey("attribute", "run_id", True)),
    ],
)
def test_parse_order_by(item: str, expected: OrderKey) -> None:
    assert parse_order_by(item) == expected


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("", "must not be empty"),
        ("   ", "must not be empty"),
        ("metrics.acc UP", "Invalid order_by direction 'UP'"),
        ("metrics.acc DESC ASC", "Unexpected 'ASC'"),
        ("metrics.acc DESC, params.b", "Unexpected ','"),
        ("metrics", "Invalid attribute key 'metrics'"),
        ("attributes.color", "Invalid attribute key 'color'"),
        ("datasets.name", "is not supported"),
        ("foo.bar", "Invalid entity type 'foo'"),
        ("tags.", "Missing key"),
        ("tags.`x", "Unterminated quoted identifier"),
        ("DESC", "Invalid attribute key 'DESC'"),
        ("ASC metrics.a", "Invalid attribute key 'ASC'"),
        ("metrics.a = 1", "Invalid order_by direction"),
        ("metrics." + "a" * 2000, "too long"),
    ],
)
def test_bad_order_by_raises_invalid_parameter(item: str, message: str) -> None:
    with pytest.raises(InvalidParameter) as info:
        parse_order_by(item)
    assert message in info.value.message


def test_order_by_list_drops_repeats_and_caps_length() -> None:
    keys = parse_order_by_list(["metrics.a DESC", "metric.a", "params.b"])
    assert keys == [OrderKey("metric", "a", False), OrderKey("param", "b", True)]
    with pytest.raises(InvalidParameter, match="twice"):
        parse_order_by_list(["metrics.a", "metrics.a DESC"], reject_duplicates=True)
    assert len(parse_order_by_list([f"metrics.m{i}" for i in range(MAX_ORDER_BY_KEYS)])) == 10
    with pytest.raises(InvalidParameter, match="At most"):
        parse_order_by_list([f"metrics.m{i}" for i in range(MAX_ORDER_BY_KEYS + 1)])


# ---------------------------------------------------------------------------------------------
# View types


@pytest.mark.parametrize(
    ("view_type", "stages"),
    [
        (None, ("active",)),
        ("", ("active",)),
        ("ACTIVE_ONLY", ("active",)),
        ("DELETED_ONLY", ("deleted",)),
        ("ALL", None),
    ],
)
def test_view_types(view_type: str | None, stages: tuple[str, ...] | None) -> None:
    assert lifecycle_stages(view_type) == stages


@pytest.mark.parametrize("view_type", ["ACTIVE", "deleted", "3", "ALL_RUNS"])
def test_unknown_view_type_is_rejected(view_type: str) -> None:
    with pytest.raises(InvalidParameter, match="Invalid view type"):
        lifecycle_stages(view_type)
    with pytest.raises(InvalidParameter, match="Invalid view type"):
        run_search_select([1], None, [], view_type)


# ---------------------------------------------------------------------------------------------
# Experiments


def test_experiment_filter_grammar() -> None:
    assert parse_filter(
        "name LIKE 'a%' AND experiment_id IN ('1', 2) AND tags.owner IS NULL "
        "AND attributes.creation_time > 5 AND last_update_time <= 9",
        EXPERIMENT_RULES,
    ) == [
        Comparison("attribute", "name", "LIKE", "a%"),
        Comparison("attribute", "experiment_id", "IN", ("1", "2")),
        Comparison("tag", "owner", "IS NULL", None),
        Comparison("attribute", "creation_time", ">", 5),
        Comparison("attribute", "last_update_time", "<=", 9),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("metrics.a > 1", "Invalid entity type 'metrics'"),
        ("params.a = 'x'", "Invalid entity type 'params'"),
        ("artifact_location = 'x'", "Invalid attribute key 'artifact_location'"),
        ("name IN ('a')", "Invalid comparator 'IN' for attribute 'name'"),
        ("experiment_id LIKE '1'", "Invalid comparator 'LIKE'"),
        ("experiment_id = 1.5", "Expected an integer"),
        ("creation_time = 'x'", "Expected a numeric value"),
    ],
)
def test_bad_experiment_filters(text: str, message: str) -> None:
    with pytest.raises(InvalidParameter) as info:
        parse_filter(text, EXPERIMENT_RULES)
    assert message in info.value.message


def test_experiment_order_by_is_limited_to_attributes() -> None:
    assert parse_order_by("name DESC", EXPERIMENT_RULES) == OrderKey("attribute", "name", False)
    with pytest.raises(InvalidParameter, match="is not supported"):
        parse_order_by("tags.owner", EXPERIMENT_RULES)
    with pytest.raises(InvalidParameter, match="Invalid attribute key"):
        experiment_search_select(None, ["lifecycle_stage"], None)


# ---------------------------------------------------------------------------------------------
# Reusable rules: another domain defines its own table


REGISTERED_MODEL_RULES = EntityRules(
    entity="registered model",
    prefixes={"tags": "tag", "tag": "tag", "attributes": "attribute"},
    kinds={
        "attribute": KindRule(
            keys={"name": KeyRule(STRING_OPS | frozenset({"IN", "NOT IN"}), "string")}
        ),
        "tag": KindRule(any_key=KeyRule(STRING_OPS, "string", orderable=False)),
    },
)


def test_other_domains_parse_with_their_own_rules() -> None:
    assert parse_filter(
        "name IN ('a', 'b') AND tag.`mlflow.prompt.is_prompt` != 'true'", REGISTERED_MODEL_RULES
    ) == [
        Comparison("attribute", "name", "IN", ("a", "b")),
        Comparison("tag", "mlflow.prompt.is_prompt", "!=", "true"),
    ]
    with pytest.raises(InvalidParameter, match="Invalid attribute key 'run_id'"):
        parse_filter("run_id = 'x'", REGISTERED_MODEL_RULES)
    with pytest.raises(InvalidParameter, match="Invalid comparator 'IS NULL'"):
        parse_filter("tags.a IS NULL", REGISTERED_MODEL_RULES)


def test_rules_reject_in_lists_for_numeric_values() -> None:
    with pytest.raises(ValueError, match="IN lists"):
        KeyRule(frozenset({"IN"}), "number")
    with pytest.raises(ValueError, match="unknown value type"):
        KeyRule(frozenset({"="}), "date")


@pytest.mark.parametrize("dialect", DIALECTS, ids=lambda d: d.name)
def test_missing_tag_can_satisfy_not_equal_when_asked(dialect: object) -> None:
    comparison = Comparison("tag", "mlflow.prompt.is_prompt", "!=", "true")
    link = Tag.run_id == Run.id
    default = key_value_predicate(Run, link, Tag.key, Tag.value, comparison)
    lenient = key_value_predicate(
        Run, link, Tag.key, Tag.value, comparison, missing_matches_not_equal=True
    )
    default_sql = str(default.compile(dialect=dialect))  # type: ignore[arg-type]
    lenient_sql = str(lenient.compile(dialect=dialect))  # type: ignore[arg-type]
    assert default_sql.startswith("EXISTS") and "!=" in default_sql
    assert lenient_sql.startswith("NOT (EXISTS") and "!=" not in lenient_sql


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
