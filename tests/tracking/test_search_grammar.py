"""The search grammar without a database: tokens, parsed comparisons, errors and compiled SQL."""

from __future__ import annotations

import pytest
from sqlalchemy.dialects import postgresql, sqlite

from tracking.core.errors import InvalidParameter
from tracking.models import Run, Tag
from tracking.search import (
    EXPERIMENT_RULES,
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
    parse_filter,
    parse_order_by,
    parse_order_by_list,
    run_search_select,
    tokenize,
)

DIALECTS = [sqlite.dialect(), postgresql.dialect()]


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
