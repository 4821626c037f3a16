"""Property tests: any registry filter or order_by text compiles to SQL or is a 400, never a 500.

The MLflow client retries 5xx for minutes, so a parser crash is an outage for the caller. The
same holds for every visibility scope a grant can produce.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.dialects import postgresql, sqlite

from registry.search import model_version_search_select, registered_model_search_select
from tracking.core.auth import ResourceScope
from tracking.core.errors import InvalidParameter

DIALECTS = [sqlite.dialect(), postgresql.dialect()]
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

IDENTIFIERS = [
    "name", "attribute.name", "tags.team", "tag.`mlflow.prompt.is_prompt`", "run_id",
    "version_number", "source_path", "creation_timestamp", "timestamp", "attr.version",
    "last_updated_timestamp", "foo.bar", "`", "tag.",
]  # fmt: skip
OPERATORS = ["=", "!=", "<", ">=", "LIKE", "ilike", "IN", "NOT IN", "IS NULL", "==", "<>"]
VALUES = ["'x'", "'it''s'", '"v"', "'%_'", "1", "-1", "'3'", "('a', 'b')", "()", "'", "1e999", ""]
clause = st.tuples(
    st.sampled_from(IDENTIFIERS), st.sampled_from(OPERATORS), st.sampled_from(VALUES)
).map(" ".join)
filters = st.one_of(
    st.text(),
    st.lists(clause, max_size=4).map(" AND ".join),
    st.lists(clause, max_size=3).map(" OR ".join),
)
order_bys = st.lists(
    st.one_of(st.text(max_size=30), st.sampled_from(IDENTIFIERS).map(lambda i: f"{i} DESC")),
    max_size=3,
)
scopes = st.one_of(
    st.none(),
    st.builds(
        ResourceScope,
        everything=st.booleans(),
        names=st.frozensets(st.text(max_size=10), max_size=3),
        patterns=st.lists(st.text(alphabet="ab*?%_[\\", max_size=6), max_size=3).map(tuple),
    ),
)


def _compiles_or_invalid(build: object) -> None:
    try:
        stmt = build()  # type: ignore[operator]
    except InvalidParameter as exc:
        assert exc.message
        return
    for dialect in DIALECTS:
        assert "SELECT" in str(stmt.compile(dialect=dialect))


@SETTINGS
@given(filters, order_bys, scopes)
def test_any_registered_model_search_compiles_or_is_invalid_parameter(
    text: str, order_by: list[str], scope: ResourceScope | None
) -> None:
    _compiles_or_invalid(lambda: registered_model_search_select(text, order_by, scope))


@SETTINGS
@given(filters, order_bys, scopes)
def test_any_model_version_search_compiles_or_is_invalid_parameter(
    text: str, order_by: list[str], scope: ResourceScope | None
) -> None:
    _compiles_or_invalid(lambda: model_version_search_select(text, order_by, scope))
