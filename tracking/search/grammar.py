"""MLflow's filter and order_by grammar: limits, tokenizer, parser and the parsed forms."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from tracking.core.errors import InvalidParameter
from tracking.search.rules import (
    _OP_ORDER,
    _SYMBOL_OPS,
    MEMBERSHIP_OPS,
    NULL_OPS,
    RUN_RULES,
    EntityRules,
    KeyRule,
    _show,
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

# Reserved words: never read as a bare identifier.
_KEYWORDS = frozenset({"AND", "OR", "NOT", "LIKE", "ILIKE", "IN", "IS", "NULL"})


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
