"""Property tests: any filter or order_by text is either understood or an InvalidParameter."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.dialects import postgresql, sqlite

from tracking.core.errors import InvalidParameter
from tracking.search import (
    EXPERIMENT_RULES,
    Comparison,
    OrderKey,
    experiment_search_select,
    logged_model_search_select,
    parse_filter,
    parse_order_by,
    run_search_select,
    tokenize,
)

DIALECTS = [sqlite.dialect(), postgresql.dialect()]
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Fragments that sit near the grammar, so random sequences reach deep into the parser.
IDENTIFIERS = [
    "metrics.acc", "metric.`a b`", "params.lr", 'param."x y"', "tags.mlflow.runName", "tag.",
    "attributes.run_id", "attr.start_time", "run.status", "datasets.name", "dataset.context",
    "`Run Name`", "created", "end_time", "run_id", "foo.bar", "name", "experiment_id",
    "creation_time", "tags.`", "`",
]  # fmt: skip
OPERATORS = [
    "=", "!=", "<", "<=", ">", ">=", "==", "<>", "!", "LIKE", "ilike", "IN", "not in", "NOT",
    "IS NULL", "is not null", "IS", "NULL",
]  # fmt: skip
VALUES = [
    "'x'", "'it''s'", "'a\\'b'", '"v"', "'%_[*?'", "''", "1", "-1", "0.5", "1e999", "-2.5E-3",
    ".5", "9223372036854775808", "-9223372036854775809", "1" * 30, "('a', 'b')", "()", "('a',",
    "(1)", "'", "\\", ";", "\x00", "é", "",
]  # fmt: skip
JOINERS = [" AND ", " and ", " OR ", " ", "", ",", " ( ", ") "]

clause_like = st.tuples(
    st.sampled_from(IDENTIFIERS), st.sampled_from(OPERATORS), st.sampled_from(VALUES)
).map(" ".join)
grammarish = st.tuples(
    st.lists(st.one_of(clause_like, st.sampled_from(IDENTIFIERS + OPERATORS + VALUES)), max_size=5),
    st.sampled_from(JOINERS),
).map(lambda pair: pair[1].join(pair[0]))
any_text = st.one_of(
    st.text(),
    st.text(st.characters(exclude_categories=())),  # lone surrogates included
    st.text(alphabet="metrics.tagsparamAND OR'\"`()=<>!,-1.5e_%"),
    grammarish,
)


def _compile_everywhere(stmt: object) -> None:
    for dialect in DIALECTS:
        assert "SELECT" in str(stmt.compile(dialect=dialect))  # type: ignore[attr-defined]


@SETTINGS
@given(any_text)
def test_any_filter_text_parses_or_is_invalid_parameter(text: str) -> None:
    try:
        comparisons = parse_filter(text)
    except InvalidParameter as exc:
        assert exc.message
        return
    assert all(isinstance(c, Comparison) for c in comparisons)


@SETTINGS
@given(any_text)
def test_any_filter_text_compiles_or_is_invalid_parameter(text: str) -> None:
    for build in (
        lambda: run_search_select([1, 2], text, [], "ALL"),
        lambda: experiment_search_select(text, [], None),
        lambda: logged_model_search_select([1], text, [], [("d", None), ("e", "x")]),
    ):
        try:
            stmt = build()
        except InvalidParameter:
            continue
        _compile_everywhere(stmt)


@SETTINGS
@given(any_text)
def test_any_order_by_text_parses_or_is_invalid_parameter(text: str) -> None:
    try:
        key = parse_order_by(text)
    except InvalidParameter:
        pass
    else:
        assert isinstance(key, OrderKey)
        _compile_everywhere(run_search_select([1], None, [text], None))
    try:
        parse_order_by(text, EXPERIMENT_RULES)
    except InvalidParameter:
        pass
    else:
        _compile_everywhere(experiment_search_select(None, [text], None))
    try:
        stmt = logged_model_search_select([1], None, [(text, False)])
    except InvalidParameter:
        pass
    else:
        _compile_everywhere(stmt)


@SETTINGS
@given(any_text, any_text)
def test_any_view_type_is_accepted_or_invalid_parameter(filter_text: str, view: str) -> None:
    try:
        stmt = run_search_select([1], filter_text, [], view)
    except InvalidParameter:
        return
    _compile_everywhere(stmt)


# ---------------------------------------------------------------------------------------------
# Round trips: rendered well-formed filters parse back to exactly what was rendered.

KEY_ALPHABET = "abcXYZ019_./-: é"
keys = st.text(KEY_ALPHABET, min_size=1, max_size=20)
strings = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=20)


def render_key(prefix: str, key: str) -> str:
    return f"{prefix}.`{key}`" if " " in key else f"{prefix}.{key}"


def render_string(value: str, quote: str) -> str:
    escaped = value.replace("\\", "\\\\").replace(quote, quote * 2)
    return f"{quote}{escaped}{quote}"


@st.composite
def clauses(draw: st.DrawFn) -> tuple[str, Comparison]:
    kind = draw(st.sampled_from(["metric", "param", "tag", "time", "run_id", "dataset"]))
    keyword = draw(st.sampled_from([str.upper, str.lower, str.title]))
    quote = draw(st.sampled_from(["'", '"']))
    if kind == "metric":
        key = draw(keys)
        op = draw(st.sampled_from(["=", "!=", "<", "<=", ">", ">="]))
        number = draw(st.floats(allow_nan=False, allow_infinity=False))
        prefix = draw(st.sampled_from(["metrics", "metric", "METRICS"]))
        return f"{render_key(prefix, key)} {op} {number!r}", Comparison("metric", key, op, number)
    if kind in ("param", "tag"):
        key = draw(keys)
        prefix = draw(st.sampled_from([f"{kind}s", kind]))
        op = draw(st.sampled_from(["=", "!=", "LIKE", "ILIKE", "IS NULL", "IS NOT NULL"]))
        if op.startswith("IS"):
            return f"{render_key(prefix, key)} {keyword(op)}", Comparison(kind, key, op, None)
        value = draw(strings)
        text = f"{render_key(prefix, key)} {keyword(op)} {render_string(value, quote)}"
        return text, Comparison(kind, key, op, value)
    if kind == "time":
        name, key = draw(st.sampled_from([("start_time", "start_time"), ("created", "start_time"),
                                          ("end_time", "end_time")]))  # fmt: skip
        op = draw(st.sampled_from(["=", "!=", "<", "<=", ">", ">="]))
        number = draw(st.integers(min_value=-(2**63), max_value=2**63 - 1))
        return f"attributes.{name} {op} {number}", Comparison("attribute", key, op, number)
    if kind == "run_id":
        values = tuple(draw(st.lists(strings, min_size=1, max_size=4)))
        op = draw(st.sampled_from(["IN", "NOT IN"]))
        listed = ", ".join(render_string(v, quote) for v in values)
        return f"run_id {keyword(op)} ({listed})", Comparison("attribute", "run_id", op, values)
    key = draw(st.sampled_from(["name", "digest", "context"]))
    value = draw(strings)
    op = draw(st.sampled_from(["=", "!=", "LIKE", "ILIKE"]))
    text = f"datasets.{key} {keyword(op)} {render_string(value, quote)}"
    return text, Comparison("dataset", key, op, value)


@SETTINGS
@given(st.lists(clauses(), min_size=1, max_size=6), st.sampled_from([" AND ", " and ", "\nAnd\t"]))
def test_rendered_filters_round_trip(parts: list[tuple[str, Comparison]], joiner: str) -> None:
    text = joiner.join(part for part, _ in parts)
    parsed = parse_filter(text)
    assert parsed == [comparison for _, comparison in parts]
    for comparison in parsed:
        if isinstance(comparison.value, float):
            assert math.isfinite(comparison.value)
    _compile_everywhere(run_search_select([1], text, [], None))


@SETTINGS
@given(
    st.sampled_from([("metrics", "metric"), ("params", "param"), ("tag", "tag")]),
    keys,
    st.sampled_from([("", True), (" ASC", True), (" desc", False), (" Desc", False)]),
)
def test_rendered_order_by_round_trips(
    prefix_kind: tuple[str, str], key: str, direction: tuple[str, bool]
) -> None:
    prefix, kind = prefix_kind
    suffix, ascending = direction
    assert parse_order_by(render_key(prefix, key) + suffix) == OrderKey(kind, key, ascending)


@SETTINGS
@given(strings, st.sampled_from(["'", '"']))
def test_rendered_strings_tokenize_to_themselves(value: str, quote: str) -> None:
    (token,) = tokenize(render_string(value, quote))
    assert token.value == value


@pytest.mark.parametrize("text", ["metrics.a > 1 OR metrics.b < 2", "(params.a = 'x')"])
def test_or_and_grouping_are_rejected(text: str) -> None:
    with pytest.raises(InvalidParameter, match="Invalid clause"):
        parse_filter(text)
