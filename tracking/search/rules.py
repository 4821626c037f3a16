"""What a search accepts (operators, value types, keys) and the rules for tracking's entities."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from tracking.core.errors import InvalidParameter

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

# Value types a key accepts: "string" (quoted), "number" (bare, compared as float), "integer"
# (bare integer literal within int64), "id" (a quoted or bare integer id, kept as a string).
VALUE_TYPES = frozenset({"string", "number", "integer", "id"})


# ---------------------------------------------------------------------------------------------
# Rule types


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
# Rules for logged models (MLflow 3): search_logged_models

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
