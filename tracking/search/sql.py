"""SQL building blocks for search: LIKE semantics, typed predicates and correlated EXISTS."""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from typing import Any

from sqlalchemy import (
    BindParameter,
    Boolean,
    ColumnElement,
    Exists,
    FromClause,
    Select,
    String,
    case,
    false,
    literal,
    literal_column,
    or_,
    select,
    true,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import QueryableAttribute
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.sql.visitors import traverse
from sqlalchemy.types import UserDefinedType

from tracking.core.auth import ResourceScope
from tracking.core.errors import InvalidParameter
from tracking.search.grammar import _INT64_MAX, Comparison

# A column expression or an ORM attribute standing for one.
ColumnLike = ColumnElement[Any] | QueryableAttribute[Any]


# ---------------------------------------------------------------------------------------------
# SQL building blocks, reusable by other domains' search modules


class _CaseSensitiveLike(FunctionElement[bool]):
    """``expr LIKE pattern``, case-sensitive on both backends; clauses: expr, LIKE and GLOB form."""

    type = Boolean()
    inherit_cache = True
    name = "case_sensitive_like"


class _CaseInsensitiveLike(FunctionElement[bool]):
    type = Boolean()
    inherit_cache = True
    name = "case_insensitive_like"


# MLflow documents only `%` and `_` as wildcards, so no escape character exists on any backend:
# PostgreSQL's default backslash escape is switched off with ESCAPE ''. SQLite's LIKE ignores
# ASCII case, so a case-sensitive LIKE is emitted as the equivalent GLOB there.
@compiles(_CaseSensitiveLike)
def _compile_like(element: _CaseSensitiveLike, compiler: SQLCompiler, **kw: Any) -> str:
    expr, pattern, _glob = element.clauses
    return f"({compiler.process(expr, **kw)} LIKE {compiler.process(pattern, **kw)} ESCAPE '')"


@compiles(_CaseSensitiveLike, "sqlite")
def _compile_like_sqlite(element: _CaseSensitiveLike, compiler: SQLCompiler, **kw: Any) -> str:
    expr, _pattern, glob = element.clauses
    return f"({compiler.process(expr, **kw)} GLOB {compiler.process(glob, **kw)})"


@compiles(_CaseInsensitiveLike)
def _compile_ilike(element: _CaseInsensitiveLike, compiler: SQLCompiler, **kw: Any) -> str:
    expr, pattern = element.clauses
    return f"({compiler.process(expr, **kw)} ILIKE {compiler.process(pattern, **kw)} ESCAPE '')"


@compiles(_CaseInsensitiveLike, "sqlite")
def _compile_ilike_sqlite(element: _CaseInsensitiveLike, compiler: SQLCompiler, **kw: Any) -> str:
    expr, pattern = element.clauses
    return f"({compiler.process(expr, **kw)} LIKE {compiler.process(pattern, **kw)})"


def like_to_glob(pattern: str) -> str:
    """Translate a LIKE pattern (``%``, ``_``, no escape) into the equivalent SQLite GLOB."""
    out = []
    for ch in pattern:
        if ch == "%":
            out.append("*")
        elif ch == "_":
            out.append("?")
        elif ch in "*?[":
            out.append(f"[{ch}]")
        else:
            out.append(ch)
    return "".join(out)


def pattern_match(column: ColumnLike, pattern: str, *, case_sensitive: bool) -> ColumnElement[bool]:
    """LIKE (case-sensitive) or ILIKE with the same meaning on SQLite and PostgreSQL."""
    like = literal(pattern, String())
    if case_sensitive:
        return _CaseSensitiveLike(column, like, literal(like_to_glob(pattern), String()))
    return _CaseInsensitiveLike(column, like)


class _GlobMatch(FunctionElement[bool]):
    """``expr`` matches a grant glob (``*``, ``?``; nothing else special), case-sensitively."""

    type = Boolean()
    inherit_cache = True
    name = "glob_match"


def _glob_to_like(glob: str) -> str:
    out = []
    for ch in glob:
        if ch == "*":
            out.append("%")
        elif ch == "?":
            out.append("_")
        elif ch in "%_\\":
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "".join(out)


def _glob_for_sqlite(glob: str) -> str:
    # SQLite's GLOB also knows [...] classes; a literal '[' is spelled '[[]'.
    return glob.replace("[", "[[]")


@compiles(_GlobMatch)
def _compile_glob(element: _GlobMatch, compiler: SQLCompiler, **kw: Any) -> str:
    expr, like, _glob = element.clauses
    return f"({compiler.process(expr, **kw)} LIKE {compiler.process(like, **kw)} ESCAPE '\\')"


@compiles(_GlobMatch, "sqlite")
def _compile_glob_sqlite(element: _GlobMatch, compiler: SQLCompiler, **kw: Any) -> str:
    expr, _like, glob = element.clauses
    return f"({compiler.process(expr, **kw)} GLOB {compiler.process(glob, **kw)})"


def glob_match(column: ColumnLike, glob: str) -> ColumnElement[bool]:
    """SQL twin of ``tracking.core.auth.glob_matches`` on both backends."""
    return _GlobMatch(
        column,
        literal(_glob_to_like(glob), String()),
        literal(_glob_for_sqlite(glob), String()),
    )


def scope_predicate(
    scope: ResourceScope, name_column: ColumnLike, id_column: ColumnLike | None = None
) -> ColumnElement[bool]:
    """Rows a visibility scope lets through: exact names, exact ids, or name globs."""
    if scope.everything:
        return true()
    clauses: list[ColumnElement[bool]] = []
    if scope.names:
        clauses.append(name_column.in_(sorted(scope.names)))
    if scope.ids and id_column is not None:
        clauses.append(id_column.in_(sorted(scope.ids)))
    clauses.extend(glob_match(name_column, pattern) for pattern in scope.patterns)
    return or_(*clauses) if clauses else false()


_COMPARATORS: dict[str, Callable[[Any, Any], Any]] = {
    "=": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


def string_predicate(column: ColumnLike, op: str, value: Any) -> ColumnElement[bool]:
    """``column op value`` for = != LIKE ILIKE IN NOT IN on a string column."""
    if op in ("LIKE", "ILIKE"):
        return pattern_match(column, str(value), case_sensitive=op == "LIKE")
    if op == "IN":
        return column.in_(list(value))
    if op == "NOT IN":
        return column.not_in(list(value))
    return numeric_predicate(column, op, value)


def numeric_predicate(column: ColumnLike, op: str, value: Any) -> ColumnElement[bool]:
    """``column op value`` for the symbolic comparators."""
    comparator = _COMPARATORS.get(op)
    if comparator is None:
        raise InvalidParameter(f"Comparator {op!r} is not supported here.")
    result: ColumnElement[bool] = comparator(column, value)
    return result


def _int64_id(text: str) -> int | None:
    # Ids are strings on the wire; one that is not a canonical integer names no row.
    if not re.fullmatch(r"0|[1-9]\d{0,18}", text):
        return None
    number = int(text)
    return number if number <= _INT64_MAX else None


def id_predicate(column: ColumnLike, op: str, value: Any) -> ColumnElement[bool]:
    """Compare an integer id column with wire ids (strings); non-integer ids match nothing."""
    if op in ("=", "!="):
        ident = _int64_id(str(value))
        if ident is None:
            return false() if op == "=" else true()
        return numeric_predicate(column, op, ident)
    idents = [i for i in (_int64_id(v) for v in value) if i is not None]
    return column.in_(idents) if op == "IN" else column.not_in(idents)


def correlated_exists(
    parent: Any, *criteria: ColumnElement[bool], from_: FromClause | None = None
) -> Exists:
    """``EXISTS (SELECT 1 ... WHERE criteria)`` correlated to the outer ``parent`` entity only."""
    inner: Select = select(literal_column("1"))
    if from_ is not None:
        inner = inner.select_from(from_)
    return inner.where(*criteria).correlate(parent).exists()


def key_value_predicate(
    parent: Any,
    link: ColumnElement[bool],
    key_column: ColumnLike,
    value_column: ColumnLike,
    comparison: Comparison,
    *,
    missing_matches_not_equal: bool = False,
) -> ColumnElement[bool]:
    """A tag/param-style clause as one (NOT) EXISTS; ``link`` ties a child row to ``parent``.

    A parent without the key matches only IS NULL, unless ``missing_matches_not_equal``
    (the registry's ``tag.mlflow.prompt.is_prompt != 'true'``), where it also matches ``!=``.
    """
    has_key = key_column == comparison.key
    if comparison.op == "IS NULL":
        return ~correlated_exists(parent, link, has_key)
    if comparison.op == "IS NOT NULL":
        return correlated_exists(parent, link, has_key)
    if comparison.op == "!=" and missing_matches_not_equal:
        return ~correlated_exists(parent, link, has_key, value_column == comparison.value)
    condition = string_predicate(value_column, comparison.op, comparison.value)
    return correlated_exists(parent, link, has_key, condition)


# ---------------------------------------------------------------------------------------------
# Ordering helpers shared by the entity modules


def _nulls_last(column: ColumnLike) -> ColumnElement[Any]:
    # NULLS LAST is spelled differently (and unsupported on old SQLite), so sort on a flag first.
    return case((column.is_(None), literal_column("1")), else_=literal_column("0"))


def _direction(column: ColumnLike, ascending: bool) -> ColumnElement[Any]:
    return column.asc() if ascending else column.desc()


# --- fnmatch patterns (gate bindings such as ``fraud-*`` or ``model-[ab]``) -----------------


def _fnmatch_tokens(pattern: str) -> list[tuple[str, str]]:
    """Split an ``fnmatch`` pattern into ("any"|"one"|"lit"|"class"|"notclass", text) tokens,
    with fnmatch's own rules: ``[!...]`` negates, a ``]`` first in a class is literal, and an
    unclosed ``[`` is a literal ``[``."""
    tokens: list[tuple[str, str]] = []
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        i += 1
        if ch == "*":
            if not tokens or tokens[-1][0] != "any":
                tokens.append(("any", ""))
        elif ch == "?":
            tokens.append(("one", ""))
        elif ch == "[":
            j = i
            if j < n and pattern[j] == "!":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            while j < n and pattern[j] != "]":
                j += 1
            if j >= n:
                tokens.append(("lit", "["))
                continue
            body = pattern[i:j]
            i = j + 1
            if body.startswith("!"):
                tokens.append(("notclass", body[1:]))
            else:
                tokens.append(("class", body))
        else:
            tokens.append(("lit", ch))
    return tokens


def _class_members(body: str) -> list[tuple[str, str]]:
    """The (low, high) members of a class body, split on ``-`` as ``fnmatch.translate`` does
    (a leading or trailing ``-`` is literal; a reversed range such as ``z-a`` is empty)."""
    if "-" not in body:
        return [(c, c) for c in body]
    chunks: list[str] = []
    i, k = 0, 1
    while True:
        k = body.find("-", k)
        if k < 0:
            break
        chunks.append(body[i:k])
        i = k + 1
        k += 3
    rest = body[i:]
    if rest:
        chunks.append(rest)
    else:
        chunks[-1] += "-"
    for k in range(len(chunks) - 1, 0, -1):
        if chunks[k - 1] and chunks[k] and chunks[k - 1][-1] > chunks[k][0]:
            chunks[k - 1] = chunks[k - 1][:-1] + chunks[k][1:]
            del chunks[k]
    members: list[tuple[str, str]] = []
    for index, chunk in enumerate(chunks):
        chars = list(chunk)
        if index > 0 and chars:  # its first character ends the previous chunk's range
            low = members.pop()[0] if members else chars[0]
            members.append((low, chars.pop(0)))
        members.extend((c, c) for c in chars)
    return members


# The most characters a class range is spelled out as, where a backend cannot spell it as a range.
_MAX_EXPANDED_RANGE = 256


def _regex_char(c: str) -> str:
    return c if c.isalnum() else "\\" + c


def fnmatch_to_regex(pattern: str) -> str:
    """The PostgreSQL (ARE) regular expression matching what ``fnmatch.fnmatchcase`` does."""
    out = ["^"]
    for kind, text in _fnmatch_tokens(pattern):
        if kind == "any":
            out.append(".*")
        elif kind == "one":
            out.append(".")
        elif kind == "lit":
            out.append(_regex_char(text))
        else:
            members = _class_members(text)
            if not members:
                if kind == "class":
                    return "^$."  # an empty class: nothing matches
                out.append(".")  # a negated empty class: any character
                continue
            body = "".join(
                _regex_char(lo) if lo == hi else f"{_regex_char(lo)}-{_regex_char(hi)}"
                for lo, hi in members
            )
            out.append(f"[{'^' if kind == 'notclass' else ''}{body}]")
    out.append("$")
    return "".join(out)


def fnmatch_to_sqlite_glob(pattern: str) -> str:
    """The SQLite GLOB matching what ``fnmatch.fnmatchcase`` does (GLOB negates with ``^``,
    has no escape character, and reads ``]`` first and ``-`` first or last in a class as
    members). A pattern with an empty class matches nothing: see :func:`fnmatch_match`."""
    out = []
    for kind, text in _fnmatch_tokens(pattern):
        if kind == "any":
            out.append("*")
        elif kind == "one":
            out.append("?")
        elif kind == "lit":
            out.append(f"[{text}]" if text in "*?[" else text)
        else:
            members = _class_members(text)
            if not members:  # negated empty class: any character
                out.append("?")
                continue
            singles: set[str] = set()
            ranges: list[str] = []
            for lo, hi in members:
                if lo == hi:
                    singles.add(lo)
                elif lo in "]^-" or hi in "]^-" or ord(hi) - ord(lo) > _MAX_EXPANDED_RANGE:
                    singles.update(chr(c) for c in range(ord(lo), ord(hi) + 1))
                else:
                    ranges.append(f"{lo}-{hi}")
            body = (
                ("]" if "]" in singles else "")
                + "".join(ranges)
                + "".join(sorted(singles - {"]", "-", "^"}))
                + ("^" if "^" in singles else "")
                + ("-" if "-" in singles else "")
            )
            negate = "^" if kind == "notclass" else ""
            if body == "^":
                out.append(f"[{negate}^]" if negate else "^")
            elif body == "^-":
                out.append(f"[{negate}-^]")
            else:
                out.append(f"[{negate}{body}]")
    return "".join(out)


def _never_matches(pattern: str) -> bool:
    return any(
        kind == "class" and not _class_members(text) for kind, text in _fnmatch_tokens(pattern)
    )


class _FnmatchMatch(FunctionElement[bool]):
    """``expr`` matches an fnmatch pattern, case-sensitively, on both backends."""

    type = Boolean()
    inherit_cache = True
    name = "fnmatch_match"


@compiles(_FnmatchMatch)
def _compile_fnmatch(element: _FnmatchMatch, compiler: SQLCompiler, **kw: Any) -> str:
    expr, regex, _glob = element.clauses
    return f"({compiler.process(expr, **kw)} ~ {compiler.process(regex, **kw)})"


@compiles(_FnmatchMatch, "sqlite")
def _compile_fnmatch_sqlite(element: _FnmatchMatch, compiler: SQLCompiler, **kw: Any) -> str:
    expr, _regex, glob = element.clauses
    return f"({compiler.process(expr, **kw)} GLOB {compiler.process(glob, **kw)})"


def fnmatch_match(column: ColumnLike, pattern: str) -> ColumnElement[bool]:
    """SQL twin of ``fnmatch.fnmatchcase(value, pattern)`` on SQLite and PostgreSQL."""
    if _never_matches(pattern):
        return false()
    return _FnmatchMatch(
        column,
        literal(fnmatch_to_regex(pattern), String()),
        literal(fnmatch_to_sqlite_glob(pattern), String()),
    )


class _Float8Literal(UserDefinedType[float]):
    """A double written into SQL text as a cast of its exact ``repr``: PostgreSQL reads it back
    to the same double, ``inf`` and ``-inf`` included, and folds it to a constant."""

    cache_ok = True

    def get_col_spec(self, **kw: Any) -> str:
        return "DOUBLE PRECISION"

    def literal_processor(self, dialect: Any) -> Callable[[Any], str]:
        return lambda value: f"CAST('{float(value)!r}' AS DOUBLE PRECISION)"


def with_values_in_sql(stmt: Select) -> Select:
    """``stmt`` with every bound number and text written into its SQL text (for PostgreSQL).

    asyncpg prepares each statement text, and after five executions of one text PostgreSQL may
    switch to a generic plan, made without the values. For a search its estimates are blind
    (a value's share of a key, a metric threshold, the page size), so it can pick a plan that
    reads every run with the matching param and tag (64,000 buffers and about 270 ms at 100,000
    runs) instead of walking the ordered metric's index and stopping after the page (7,500
    buffers, 14 ms). With the values in the text, every plan is made knowing them.

    SQLAlchemy renders them at execution (``literal_execute``; the compiled form stays cached)
    with the dialect's own quoting. The statement's bound parameters are marked in place: a
    search select is built fresh for each request.
    """

    def mark(bind: BindParameter[Any]) -> None:
        value = bind.effective_value
        if isinstance(value, float):
            bind.type = _Float8Literal()
        else:
            items = value if isinstance(value, list | tuple) else [value]
            if not all(isinstance(v, int | str) and not isinstance(v, bool) for v in items):
                return  # left bound: only numbers and text are written into the SQL
        bind.literal_execute = True

    traverse(stmt, {}, {"bindparam": mark})
    return stmt
