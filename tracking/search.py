"""MLflow's search filter and order_by grammar, parsed here and compiled into SQLAlchemy selects."""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    Boolean,
    ColumnElement,
    Exists,
    FromClause,
    ScalarSelect,
    Select,
    String,
    and_,
    case,
    false,
    literal,
    literal_column,
    or_,
    select,
    true,
)
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import QueryableAttribute, aliased
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from tracking.core.errors import InvalidParameter
from tracking.models import (
    Dataset,
    DatasetInput,
    DatasetInputTag,
    Experiment,
    ExperimentTag,
    LatestMetric,
    LoggedModel,
    LoggedModelMetric,
    LoggedModelParam,
    LoggedModelTag,
    Param,
    Run,
    Tag,
)

# MLflow itself sets no limits here; these bound the parse work and the size of the SQL we emit.
# 50,000 characters still fits a `run_id IN (...)` list of ~1,300 run ids; 100 clauses and 1,000
# literal values keep every statement far below SQLite's expression depth (1,000) and bound
# variable (32,766) limits, so a hostile filter is a 400, never a driver error (a 500 that the
# MLflow client would retry).
MAX_FILTER_LENGTH = 50_000
MAX_CLAUSES = 100
MAX_VALUES = 1_000
MAX_ORDER_BY_KEYS = 10
MAX_ORDER_BY_LENGTH = 1_000
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1

# A column expression or an ORM attribute standing for one.
ColumnLike = ColumnElement[Any] | QueryableAttribute[Any]

# Operators, normalised to upper case.
EQUALITY_OPS = frozenset({"=", "!="})
NUMERIC_OPS = frozenset({"=", "!=", "<", "<=", ">", ">="})
PATTERN_OPS = frozenset({"LIKE", "ILIKE"})
STRING_OPS = EQUALITY_OPS | PATTERN_OPS
MEMBERSHIP_OPS = frozenset({"IN", "NOT IN"})
NULL_OPS = frozenset({"IS NULL", "IS NOT NULL"})
_SYMBOL_ORDER = ("=", "!=", "<", "<=", ">", ">=")
_OP_ORDER = (*_SYMBOL_ORDER, "LIKE", "ILIKE", "IN", "NOT IN", "IS NULL", "IS NOT NULL")
_SYMBOL_OPS = frozenset(_SYMBOL_ORDER)
_KEYWORDS = frozenset({"AND", "OR", "NOT", "LIKE", "ILIKE", "IN", "IS", "NULL"})

# Value types a key accepts: "string" (quoted), "number" (bare, compared as float), "integer"
# (bare integer literal within int64), "id" (a quoted or bare integer id, kept as a string).
VALUE_TYPES = frozenset({"string", "number", "integer", "id"})


# ---------------------------------------------------------------------------------------------
# Parsed forms


@dataclass(frozen=True)
class Comparison:
    kind: str  # the canonical kind of the entity rules: 'metric', 'param', 'tag', 'attribute', ...
    key: str  # canonical key (attribute aliases resolved)
    op: str  # one of _OP_ORDER
    value: str | float | int | tuple[str, ...] | None


@dataclass(frozen=True)
class OrderKey:
    kind: str
    key: str
    ascending: bool


@dataclass(frozen=True)
class KeyRule:
    """What one key (or every key of an open key space) accepts."""

    ops: frozenset[str]
    value_type: str
    orderable: bool = True

    def __post_init__(self) -> None:
        if self.value_type not in VALUE_TYPES:
            raise ValueError(f"unknown value type {self.value_type!r}")
        if self.ops & MEMBERSHIP_OPS and self.value_type not in {"string", "id"}:
            raise ValueError("IN lists are only supported for string and id values")


@dataclass(frozen=True)
class KindRule:
    """One kind of identifier: an open key space (``any_key``) or a closed set of ``keys``."""

    any_key: KeyRule | None = None
    keys: Mapping[str, KeyRule] = field(default_factory=dict)
    aliases: Mapping[str, str] = field(default_factory=dict)  # alternative spelling -> key


@dataclass(frozen=True)
class EntityRules:
    """The identifiers a search accepts. Other domains build their own and pass them in."""

    entity: str  # used in messages: "run", "experiment", ...
    prefixes: Mapping[str, str]  # lower-case type prefix -> kind
    kinds: Mapping[str, KindRule]
    bare_kind: str | None = "attribute"  # the kind of an identifier without a prefix

    def resolve(self, prefix: str | None, key: str, shown: str) -> tuple[str, str, KeyRule]:
        """Map ``prefix.key`` to (kind, canonical key, rule) or raise InvalidParameter."""
        if prefix is None:
            if self.bare_kind is None:
                raise InvalidParameter(
                    f"Identifier {shown} needs a type prefix: one of {self._prefix_names()}."
                )
            kind = self.bare_kind
        else:
            found = self.prefixes.get(prefix.lower())
            if found is None:
                raise InvalidParameter(
                    f"Invalid entity type {_show(prefix)} in {shown} for {self.entity} search. "
                    f"Valid types are {self._prefix_names()}."
                )
            kind = found
        kind_rule = self.kinds[kind]
        if kind_rule.any_key is not None:
            return kind, key, kind_rule.any_key
        canonical = kind_rule.aliases.get(key, key)
        rule = kind_rule.keys.get(canonical)
        if rule is None:
            raise InvalidParameter(
                f"Invalid {kind} key {_show(key)} for {self.entity} search. "
                f"Valid keys are {', '.join(sorted(kind_rule.keys))}."
            )
        return kind, canonical, rule

    def _prefix_names(self) -> str:
        first: dict[str, str] = {}
        for prefix, kind in self.prefixes.items():
            first.setdefault(kind, prefix)
        return ", ".join(first.values())


def _show(text: str, limit: int = 60) -> str:
    """Quote a fragment of user input for a message, shortened so messages stay readable."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


# ---------------------------------------------------------------------------------------------
# Tokenizer


@dataclass(frozen=True)
class Token:
    kind: str  # 'word', 'number', 'op', 'punct', 'string' ('...'), 'dquote' ("..."), 'backtick'
    value: str  # the text; for quoted tokens the unescaped content
    start: int
    end: int


_LEXEME = re.compile(
    r"(?P<ws>\s+)"
    r"|(?P<number>[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)"
    # Unquoted identifiers: MLflow keys are `[/\w.\- :]`; only the space needs quoting here.
    r"|(?P<word>[^\W\d][\w.\-/:]*)"
    r"|(?P<op>[<>=!]+)"
    r"|(?P<punct>[(),])"
)
_QUOTE_KINDS = {"'": "string", '"': "dquote", "`": "backtick"}
_INTEGER_LITERAL = re.compile(r"[+-]?\d+")


def tokenize(
    text: str, *, limit: int = MAX_FILTER_LENGTH, what: str = "filter string"
) -> list[Token]:
    """Split ``text`` into tokens; raise InvalidParameter on anything outside the grammar."""
    if len(text) > limit:
        raise InvalidParameter(
            f"The {what} is too long ({len(text)} characters; the limit is {limit})."
        )
    if "\x00" in text:
        raise InvalidParameter(f"The {what} must not contain NUL characters.")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidParameter(f"The {what} is not valid UTF-8 text.") from None
    tokens: list[Token] = []
    pos = 0
    while pos < len(text):
        if text[pos] in _QUOTE_KINDS:
            token = _scan_quoted(text, pos, what)
        else:
            match = _LEXEME.match(text, pos)
            if match is None:
                raise InvalidParameter(
                    f"Invalid character {text[pos]!r} at position {pos} in the {what}."
                )
            pos = match.end()
            if match.lastgroup == "ws":
                continue
            token = Token(str(match.lastgroup), match.group(), match.start(), match.end())
        tokens.append(token)
        pos = token.end
    return tokens


def _scan_quoted(text: str, start: int, what: str) -> Token:
    # Strings follow SQL and sqlparse: a doubled quote or a backslash-escaped quote (or
    # backslash) stands for itself; any other backslash is literal, so Windows paths survive.
    quote = text[start]
    escapable = quote != "`"
    out: list[str] = []
    i = start + 1
    while i < len(text):
        ch = text[i]
        nxt = text[i + 1] if i + 1 < len(text) else ""
        if ch == quote:
            if escapable and nxt == quote:
                out.append(quote)
                i += 2
                continue
            return Token(_QUOTE_KINDS[quote], "".join(out), start, i + 1)
        if ch == "\\" and escapable and nxt in (quote, "\\"):
            out.append(nxt)
            i += 2
            continue
        out.append(ch)
        i += 1
    noun = "quoted identifier" if quote == "`" else "string"
    raise InvalidParameter(
        f"Unterminated {noun} starting at position {start} in the {what}: {_show(text[start:])}."
    )


def _is_keyword(token: Token | None, word: str) -> bool:
    return token is not None and token.kind == "word" and token.value.upper() == word


def _invalid_clause(fragment: str) -> InvalidParameter:
    # MLflow's wording, which users and its docs know: only AND-joined comparisons exist.
    return InvalidParameter(f"Invalid clause(s) in filter string: {fragment!r}")


# ---------------------------------------------------------------------------------------------
# Parser


class _Parser:
    def __init__(self, text: str, tokens: list[Token], rules: EntityRules, what: str) -> None:
        self.text = text
        self.tokens = tokens
        self.rules = rules
        self.what = what
        self.pos = 0
        self.values = 0

    def peek(self) -> Token | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> Token | None:
        token = self.peek()
        if token is not None:
            self.pos += 1
        return token

    def source(self, token: Token) -> str:
        return _show(self.text[token.start : token.end])

    def identifier(self) -> tuple[str, str, str, KeyRule]:
        """Read ``[type.]key``; returns (shown identifier, kind, canonical key, rule)."""
        token = self.take()
        if token is None:
            raise InvalidParameter(f"Expected an identifier at the end of the {self.what}.")
        end = token.end
        if token.kind in ("backtick", "dquote"):
            prefix, key = None, token.value
        elif token.kind == "word" and token.value.upper() not in _KEYWORDS:
            prefix, dot, key = token.value.partition(".")
            if not dot:
                prefix, key = None, token.value
            elif not key:
                quoted = self.peek()
                if (
                    quoted is None
                    or quoted.kind not in ("backtick", "dquote")
                    or quoted.start != end
                ):
                    raise InvalidParameter(
                        f"Missing key after {_show(token.value)} in the {self.what}; quote keys "
                        'with spaces as tags.`my key` or tags."my key".'
                    )
                self.take()
                key, end = quoted.value, quoted.end
        else:
            raise InvalidParameter(
                f"Expected an identifier such as metrics.<key> or tags.<key> at position "
                f"{token.start} in the {self.what}, found {self.source(token)}."
            )
        shown = _show(self.text[token.start : end])
        if not key:
            raise InvalidParameter(f"Empty key in identifier {shown} in the {self.what}.")
        kind, canonical, rule = self.rules.resolve(prefix, key, shown)
        return shown, kind, canonical, rule

    def operator(self, shown: str) -> str:
        token = self.take()
        if token is None:
            raise InvalidParameter(f"Expected a comparison operator after {shown}.")
        if token.kind == "op":
            if token.value in _SYMBOL_OPS:
                return token.value
            raise InvalidParameter(
                f"Invalid comparator {token.value!r} after {shown}; "
                f"use one of {', '.join(_OP_ORDER)}."
            )
        word = token.value.upper() if token.kind == "word" else ""
        if word in ("LIKE", "ILIKE", "IN"):
            return word
        if word == "IS":
            negated = _is_keyword(self.peek(), "NOT")
            if negated:
                self.take()
            if not _is_keyword(self.take(), "NULL"):
                raise InvalidParameter(f"Expected IS NULL or IS NOT NULL after {shown}.")
            return "IS NOT NULL" if negated else "IS NULL"
        if word == "NOT":
            if not _is_keyword(self.take(), "IN"):
                raise InvalidParameter(
                    f"Expected IN after NOT in the comparison on {shown}; NOT is only "
                    "supported as NOT IN and IS NOT NULL."
                )
            return "NOT IN"
        raise InvalidParameter(
            f"Expected a comparison operator after {shown}, found {self.source(token)}."
        )

    def value(self, rule: KeyRule, label: str, op: str) -> str | float | int:
        token = self.take()
        if token is None:
            raise InvalidParameter(f"Expected a value after {op!r} in the comparison on {label}.")
        self.values += 1
        if self.values > MAX_VALUES:
            raise InvalidParameter(f"The {self.what} has more than {MAX_VALUES} values.")
        if _is_keyword(token, "NULL"):
            raise InvalidParameter(
                f"Compare {label} with NULL using IS NULL or IS NOT NULL, not {op!r}."
            )
        value_type = rule.value_type
        if token.kind in ("string", "dquote"):
            if value_type in ("string", "id"):
                return token.value
            raise InvalidParameter(
                f"Expected a numeric value for {label}, found the string {self.source(token)}."
            )
        if token.kind == "number":
            if value_type == "number":
                return float(token.value)  # never raises for this literal; may be +-inf
            if value_type in ("integer", "id"):
                number = _int64_literal(token.value)
                if number is None:
                    raise InvalidParameter(
                        f"Expected an integer between {_INT64_MIN} and {_INT64_MAX} for {label}, "
                        f"found {self.source(token)}."
                    )
                return str(number) if value_type == "id" else number
            raise InvalidParameter(
                f"Expected a quoted string value for {label}, found {self.source(token)}; "
                "use single or double quotes."
            )
        raise InvalidParameter(f"Expected a value for {label}, found {self.source(token)}.")

    def value_list(self, rule: KeyRule, label: str, op: str) -> tuple[str, ...]:
        opening = self.take()
        if opening is None or opening.value != "(" or opening.kind != "punct":
            raise InvalidParameter(f"Expected a parenthesised list such as ('a', 'b') after {op}.")
        values: list[str] = []
        while True:
            closing = self.peek()
            if (
                not values
                and closing is not None
                and closing.kind == "punct"
                and closing.value == ")"
            ):
                raise InvalidParameter(f"The {op} list for {label} must not be empty.")
            values.append(str(self.value(rule, label, op)))
            separator = self.take()
            if separator is not None and separator.kind == "punct" and separator.value == ")":
                return tuple(values)
            if separator is None or separator.kind != "punct" or separator.value != ",":
                raise InvalidParameter(f"Expected ',' or ')' in the {op} list for {label}.")

    def comparison(self) -> Comparison:
        token = self.peek()
        if token is None:
            raise InvalidParameter(f"Expected a comparison at the end of the {self.what}.")
        if (token.kind == "punct" and token.value in "()") or _is_keyword(token, "NOT"):
            raise _invalid_clause(token.value.upper())
        shown, kind, key, rule = self.identifier()
        op = self.operator(shown)
        label = f"{kind} {_show(key)}"
        if op not in rule.ops:
            allowed = ", ".join(o for o in _OP_ORDER if o in rule.ops)
            raise InvalidParameter(
                f"Invalid comparator {op!r} for {label}; expected one of {allowed}."
            )
        value: str | float | int | tuple[str, ...] | None
        if op in NULL_OPS:
            value = None
        elif op in MEMBERSHIP_OPS:
            value = self.value_list(rule, label, op)
        else:
            value = self.value(rule, label, op)
        return Comparison(kind, key, op, value)


def _int64_literal(text: str) -> int | None:
    if not _INTEGER_LITERAL.fullmatch(text):
        return None
    digits = text.lstrip("+-").lstrip("0")
    # Python refuses to parse very long digit strings; nothing above 19 digits fits in int64.
    if len(digits) > 19:
        return None
    number = int(text)
    return number if _INT64_MIN <= number <= _INT64_MAX else None


def parse_filter(text: str | None, rules: EntityRules | None = None) -> list[Comparison]:
    """Parse an AND-joined filter against ``rules`` (runs by default); empty means no clauses."""
    rules = rules or RUN_RULES
    if text is None or not text.strip():
        return []
    tokens = tokenize(text)
    for early in tokens:
        if _is_keyword(early, "OR"):
            raise _invalid_clause(early.value.upper())
    parser = _Parser(text, tokens, rules, "filter string")
    comparisons: list[Comparison] = []
    while True:
        comparisons.append(parser.comparison())
        if len(comparisons) > MAX_CLAUSES:
            raise InvalidParameter(f"The filter string has more than {MAX_CLAUSES} comparisons.")
        token = parser.take()
        if token is None:
            return comparisons
        if _is_keyword(token, "AND"):
            if parser.peek() is None:
                raise InvalidParameter("The filter string ends with AND; expected a comparison.")
            continue
        if (token.kind == "punct" and token.value in "()") or _is_keyword(token, "NOT"):
            raise _invalid_clause(token.value.upper())
        raise InvalidParameter(
            f"Expected AND between comparisons at position {token.start} in the filter string, "
            f"found {parser.source(token)}."
        )


def parse_order_by(item: str, rules: EntityRules | None = None) -> OrderKey:
    """Parse one ``<identifier> [ASC|DESC]`` order_by item against ``rules`` (runs by default)."""
    rules = rules or RUN_RULES
    tokens = tokenize(item, limit=MAX_ORDER_BY_LENGTH, what="order_by clause")
    if not tokens:
        raise InvalidParameter("An order_by clause must not be empty.")
    parser = _Parser(item, tokens, rules, "order_by clause")
    shown, kind, key, rule = parser.identifier()
    if not rule.orderable:
        raise InvalidParameter(f"Ordering {rules.entity}s by {kind} {_show(key)} is not supported.")
    ascending = True
    direction = parser.take()
    if direction is not None:
        if _is_keyword(direction, "ASC") or _is_keyword(direction, "DESC"):
            ascending = direction.value.upper() == "ASC"
        else:
            raise InvalidParameter(
                f"Invalid order_by direction {parser.source(direction)} after {shown}; "
                "expected ASC or DESC."
            )
        extra = parser.take()
        if extra is not None:
            raise InvalidParameter(
                f"Unexpected {parser.source(extra)} at the end of the order_by clause "
                f"{_show(item)}."
            )
    return OrderKey(kind, key, ascending)


def parse_order_by_list(
    items: Iterable[str] | None,
    rules: EntityRules | None = None,
    *,
    reject_duplicates: bool = False,
) -> list[OrderKey]:
    """Parse every order_by item; a repeated key is dropped (or rejected when asked)."""
    keys: list[OrderKey] = []
    seen: set[tuple[str, str]] = set()
    for count, item in enumerate(items or (), start=1):
        if count > MAX_ORDER_BY_KEYS:
            raise InvalidParameter(f"At most {MAX_ORDER_BY_KEYS} order_by clauses are supported.")
        key = parse_order_by(item, rules)
        if (key.kind, key.key) in seen:
            if reject_duplicates:
                raise InvalidParameter(f"order_by contains {key.kind} {_show(key.key)} twice.")
            continue
        seen.add((key.kind, key.key))
        keys.append(key)
    return keys


def lifecycle_stages(view_type: str | None) -> tuple[str, ...] | None:
    """The lifecycle stages a ViewType selects; None means every stage."""
    name = (view_type or "ACTIVE_ONLY").upper()
    if name == "ACTIVE_ONLY":
        return ("active",)
    if name == "DELETED_ONLY":
        return ("deleted",)
    if name == "ALL":
        return None
    raise InvalidParameter(
        f"Invalid view type {_show(str(view_type))}; expected ACTIVE_ONLY, DELETED_ONLY or ALL."
    )


# ---------------------------------------------------------------------------------------------
# Rules for runs and experiments

_NAMED_STRING = KeyRule(STRING_OPS, "string")
_TIMESTAMP = KeyRule(NUMERIC_OPS, "integer")
_KEY_VALUE = KindRule(any_key=KeyRule(STRING_OPS | NULL_OPS, "string"))
_DATASET_KEY = KeyRule(STRING_OPS | MEMBERSHIP_OPS, "string", orderable=False)

RUN_RULES = EntityRules(
    entity="run",
    prefixes={
        "metrics": "metric",
        "metric": "metric",
        "params": "param",
        "param": "param",
        "parameter": "param",
        "parameters": "param",
        "tags": "tag",
        "tag": "tag",
        "attributes": "attribute",
        "attribute": "attribute",
        "attr": "attribute",
        "run": "attribute",
        "datasets": "dataset",
        "dataset": "dataset",
    },
    kinds={
        "metric": KindRule(any_key=KeyRule(NUMERIC_OPS, "number")),
        "param": _KEY_VALUE,
        "tag": _KEY_VALUE,
        "attribute": KindRule(
            keys={
                "run_id": KeyRule(STRING_OPS | MEMBERSHIP_OPS, "string"),
                "run_name": _NAMED_STRING,
                "status": _NAMED_STRING,
                "user_id": _NAMED_STRING,
                "artifact_uri": _NAMED_STRING,
                "start_time": _TIMESTAMP,
                "end_time": _TIMESTAMP,
            },
            aliases={
                "run name": "run_name",
                "Run name": "run_name",
                "Run Name": "run_name",
                "created": "start_time",
                "Created": "start_time",
            },
        ),
        "dataset": KindRule(
            keys={"name": _DATASET_KEY, "digest": _DATASET_KEY, "context": _DATASET_KEY}
        ),
    },
)

EXPERIMENT_RULES = EntityRules(
    entity="experiment",
    prefixes={
        "attributes": "attribute",
        "attribute": "attribute",
        "attr": "attribute",
        "tags": "tag",
        "tag": "tag",
    },
    kinds={
        "attribute": KindRule(
            keys={
                "name": _NAMED_STRING,
                "experiment_id": KeyRule(EQUALITY_OPS | MEMBERSHIP_OPS, "id"),
                "creation_time": _TIMESTAMP,
                "last_update_time": _TIMESTAMP,
            }
        ),
        "tag": KindRule(any_key=KeyRule(STRING_OPS | NULL_OPS, "string", orderable=False)),
    },
)


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


def _nulls_last(column: ColumnLike) -> ColumnElement[Any]:
    # NULLS LAST is spelled differently (and unsupported on old SQLite), so sort on a flag first.
    return case((column.is_(None), literal_column("1")), else_=literal_column("0"))


def _direction(column: ColumnLike, ascending: bool) -> ColumnElement[Any]:
    return column.asc() if ascending else column.desc()


# ---------------------------------------------------------------------------------------------
# Runs

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
) -> Select:
    """The runs matching a search_runs request, fully ordered, without limit or offset."""
    stages = lifecycle_stages(view_type)
    comparisons = parse_filter(filter_string, RUN_RULES)
    keys = parse_order_by_list(order_by, RUN_RULES)
    stmt = select(Run.id, Run.run_uuid).where(Run.experiment_id.in_(list(experiment_ids)))
    if stages is not None:
        stmt = stmt.where(Run.lifecycle_stage.in_(stages))
    for comparison in comparisons:
        stmt = stmt.where(_run_clause(comparison))
    return _order_runs(stmt, keys)


# ---------------------------------------------------------------------------------------------
# Experiments

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


def experiment_search_select(
    filter_string: str | None, order_by: list[str] | None, view_type: str | None
) -> Select:
    """The experiments matching a search_experiments request, fully ordered."""
    stages = lifecycle_stages(view_type)
    comparisons = parse_filter(filter_string, EXPERIMENT_RULES)
    keys = parse_order_by_list(order_by, EXPERIMENT_RULES)
    stmt = select(Experiment.experiment_id)
    if stages is not None:
        stmt = stmt.where(Experiment.lifecycle_stage.in_(stages))
    for comparison in comparisons:
        stmt = stmt.where(_experiment_clause(comparison))
    ordering = [_direction(_EXPERIMENT_COLUMNS[key.key], key.ascending) for key in keys]
    named = {key.key for key in keys}
    if "creation_time" not in named:
        ordering.append(Experiment.creation_time.desc())
    if "experiment_id" not in named:
        ordering.append(Experiment.experiment_id.asc())
    return stmt.order_by(*ordering)


# ---------------------------------------------------------------------------------------------
# Logged models (MLflow 3): search_logged_models

LOGGED_MODEL_RULES = EntityRules(
    entity="logged model",
    prefixes={
        "attributes": "attribute",
        "attribute": "attribute",
        "attr": "attribute",
        "metrics": "metric",
        "metric": "metric",
        "params": "param",
        "param": "param",
        "tags": "tag",
        "tag": "tag",
    },
    kinds={
        "attribute": KindRule(
            keys={
                "name": KeyRule(STRING_OPS | MEMBERSHIP_OPS, "string"),
                "model_id": KeyRule(STRING_OPS | MEMBERSHIP_OPS, "string"),
                "model_type": KeyRule(STRING_OPS | MEMBERSHIP_OPS, "string"),
                "status": KeyRule(STRING_OPS | MEMBERSHIP_OPS, "string"),
                "source_run_id": KeyRule(STRING_OPS | MEMBERSHIP_OPS, "string"),
                "creation_timestamp": _TIMESTAMP,
                "last_updated_timestamp": _TIMESTAMP,
            },
            aliases={
                "creation_time": "creation_timestamp",
                "creation_timestamp_ms": "creation_timestamp",
                "last_updated_timestamp_ms": "last_updated_timestamp",
            },
        ),
        "metric": KindRule(any_key=KeyRule(NUMERIC_OPS, "number")),
        "param": KindRule(any_key=KeyRule(STRING_OPS, "string", orderable=False)),
        "tag": KindRule(any_key=KeyRule(STRING_OPS, "string", orderable=False)),
    },
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
    (name, digest) datasets; a missing digest matches any digest of that name.
    """
    metric = aliased(LoggedModelMetric, name="model_metric")
    criteria: list[ColumnElement[bool]] = [
        metric.model_id == LoggedModel.model_id,
        metric.key == key,
    ]
    scopes = [
        and_(metric.dataset_name == name, metric.dataset_digest == digest)
        if digest
        else metric.dataset_name == name
        for name, digest in datasets
        if name
    ]
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
        # A scalar subquery per clause: NULL (missing or NaN) satisfies no comparison.
        return numeric_predicate(_latest_model_metric(key, datasets), op, value)
    table: Any = LoggedModelParam if kind == "param" else LoggedModelTag
    return key_value_predicate(
        LoggedModel, table.model_id == LoggedModel.model_id, table.key, table.value, comparison
    )


def logged_model_search_select(
    experiment_ids: list[int],
    filter_string: str | None,
    order_by: list[tuple[str, bool]] | None,
    datasets: list[tuple[str | None, str | None]] | None = None,
) -> Select:
    """Active logged models matching a search_logged_models request, fully ordered.

    ``order_by`` holds (field_name, ascending) pairs, e.g. ("metrics.accuracy", False).
    ``datasets`` (name, digest) pairs restrict which metric points metric filters read.
    """
    scopes = list(datasets or [])
    comparisons = parse_filter(filter_string, LOGGED_MODEL_RULES)
    if len(order_by or []) > MAX_ORDER_BY_KEYS:
        raise InvalidParameter(f"At most {MAX_ORDER_BY_KEYS} order_by clauses are supported.")
    keys = [
        OrderKey(parsed.kind, parsed.key, ascending)
        for field_name, ascending in order_by or []
        for parsed in [parse_order_by(field_name, LOGGED_MODEL_RULES)]
    ]
    stmt = select(LoggedModel.model_id).where(
        LoggedModel.experiment_id.in_(list(experiment_ids)),
        LoggedModel.lifecycle_stage == "active",
    )
    for comparison in comparisons:
        stmt = stmt.where(_logged_model_clause(comparison, scopes))
    ordering: list[ColumnElement[Any]] = []
    for key in keys:
        if key.kind == "metric":
            column: ColumnElement[Any] = _latest_model_metric(key.key, [])
            nullable = True
        else:
            column = _LOGGED_MODEL_COLUMNS[key.key]
            nullable = key.key in _LOGGED_MODEL_NULLABLE
        if nullable:
            ordering.append(_nulls_last(column))
        ordering.append(_direction(column, key.ascending))
    named = {key.key for key in keys if key.kind == "attribute"}
    if "creation_timestamp" not in named:
        ordering.append(LoggedModel.creation_timestamp_ms.desc())
    if "model_id" not in named:
        ordering.append(LoggedModel.model_id.asc())
    return stmt.order_by(*ordering)


__all__ = [
    "EQUALITY_OPS",
    "EXPERIMENT_RULES",
    "LOGGED_MODEL_RULES",
    "MAX_CLAUSES",
    "MAX_FILTER_LENGTH",
    "MAX_ORDER_BY_KEYS",
    "MAX_VALUES",
    "MEMBERSHIP_OPS",
    "NULL_OPS",
    "NUMERIC_OPS",
    "PATTERN_OPS",
    "RUN_RULES",
    "STRING_OPS",
    "Comparison",
    "EntityRules",
    "KeyRule",
    "KindRule",
    "OrderKey",
    "Token",
    "correlated_exists",
    "experiment_search_select",
    "id_predicate",
    "key_value_predicate",
    "lifecycle_stages",
    "like_to_glob",
    "logged_model_search_select",
    "numeric_predicate",
    "parse_filter",
    "parse_order_by",
    "parse_order_by_list",
    "pattern_match",
    "run_search_select",
    "string_predicate",
    "tokenize",
]
