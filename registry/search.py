"""Registry search: MLflow's filter/order_by grammar for models and versions, compiled to SQL.

The grammar itself (tokenizer, parser, LIKE semantics, EXISTS building blocks) is the shared,
rules-driven layer in ``tracking.search``; this module only states which keys the registry
accepts and what SQL each one means.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Select, select

from registry.models import ModelVersion, ModelVersionTag, RegisteredModel, RegisteredModelTag
from registry.prompts import PROMPT_TAG
from tracking.core.auth import ResourceScope
from tracking.core.errors import InvalidParameter
from tracking.search import (
    MEMBERSHIP_OPS,
    NUMERIC_OPS,
    STRING_OPS,
    Comparison,
    EntityRules,
    KeyRule,
    KindRule,
    OrderKey,
    correlated_exists,
    key_value_predicate,
    numeric_predicate,
    parse_filter,
    parse_order_by_list,
    string_predicate,
)
from tracking.search.sql import scope_predicate

_PREFIXES = {
    "attribute": "attribute",
    "attributes": "attribute",
    "attr": "attribute",
    "tag": "tag",
    "tags": "tag",
}
_TAG = KindRule(any_key=KeyRule(STRING_OPS, "string", orderable=False))
# Timestamps and version numbers take bare integers or quoted ones (``version_number = '3'``),
# as MLflow's parser does; "id" keeps the literal as text and _as_int checks it.
_INTEGER = KeyRule(NUMERIC_OPS, "id")

REGISTERED_MODEL_RULES = EntityRules(
    entity="registered model",
    prefixes=_PREFIXES,
    kinds={
        "attribute": KindRule(
            keys={
                "name": KeyRule(STRING_OPS | MEMBERSHIP_OPS, "string"),
                "creation_timestamp": _INTEGER,
                "last_updated_timestamp": _INTEGER,
            },
            # MLflow's order_by key "timestamp" means the last update.
            aliases={"timestamp": "last_updated_timestamp"},
        ),
        "tag": _TAG,
    },
)

MODEL_VERSION_RULES = EntityRules(
    entity="model version",
    prefixes=_PREFIXES,
    kinds={
        "attribute": KindRule(
            keys={
                "name": KeyRule(STRING_OPS | MEMBERSHIP_OPS, "string"),
                "run_id": KeyRule(STRING_OPS | MEMBERSHIP_OPS, "string"),
                "source_path": KeyRule(STRING_OPS, "string", orderable=False),
                "version_number": _INTEGER,
                "creation_timestamp": _INTEGER,
                "last_updated_timestamp": _INTEGER,
            },
            aliases={"version": "version_number", "timestamp": "last_updated_timestamp"},
        ),
        "tag": _TAG,
    },
)


def _as_int(comparison: Comparison) -> int:
    try:
        number = int(str(comparison.value))
    except ValueError:
        number = None
    # Beyond 64 bits the database driver cannot bind it (a 500 otherwise).
    if number is None or not -(2**63) <= number < 2**63:
        raise InvalidParameter(
            f"Invalid value for numeric attribute '{comparison.key}': {comparison.value!r}"
        )
    return number


def _is_prompt_query(comparisons: list[Comparison]) -> bool:
    """True when the filter asks for prompts; otherwise prompts are left out (MLflow's rule)."""
    for c in comparisons:
        if c.kind == "tag" and c.key == PROMPT_TAG and isinstance(c.value, str):
            value = c.value.lower()
            return (c.op == "=" and value == "true") or (c.op == "!=" and value == "false")
    return False


def _model_is_prompt() -> ColumnElement[bool]:
    return correlated_exists(
        RegisteredModel,
        RegisteredModelTag.model_id == RegisteredModel.id,
        RegisteredModelTag.key == PROMPT_TAG,
        RegisteredModelTag.value == "true",
    )


def _tag_clause(parent: Any, link: ColumnElement[bool], table: Any, c: Comparison) -> Any:
    return key_value_predicate(parent, link, table.key, table.value, c)


def _search_comparisons(comparisons: list[Comparison]) -> tuple[list[Comparison], bool]:
    """The comparisons a search applies, and whether it asks for prompts.

    MLflow's rule: a search asks for prompts when its first clause on the prompt tag is
    ``= 'true'`` or ``!= 'false'``; its prompt-tag clauses then apply as ordinary tag clauses.
    Any other search leaves prompts out, and its prompt-tag clauses (the client's own
    ``!= 'true'``, an ``= 'false'``) are dropped: a model without the tag is never a prompt.
    """
    if _is_prompt_query(comparisons):
        return comparisons, True
    return [c for c in comparisons if not (c.kind == "tag" and c.key == PROMPT_TAG)], False


def _attribute_clause(column: Any, c: Comparison) -> ColumnElement[bool]:
    if c.key in ("version_number", "creation_timestamp", "last_updated_timestamp"):
        return numeric_predicate(column, c.op, _as_int(c))
    return string_predicate(column, c.op, c.value)


# --- registered models -------------------------------------------------------------------------

_MODEL_COLUMNS: dict[str, Any] = {
    "name": RegisteredModel.name,
    "creation_timestamp": RegisteredModel.creation_timestamp,
    "last_updated_timestamp": RegisteredModel.last_updated_timestamp,
}


def _ordering(keys: list[OrderKey], columns: dict[str, Any]) -> list[Any]:
    return [
        columns[k.key].asc() if k.ascending else columns[k.key].desc()
        for k in keys
        if k.kind == "attribute"
    ]


def registered_model_search_select(
    filter_string: str | None, order_by: list[str] | None, scope: ResourceScope | None = None
) -> Select:
    """Ids of the registered models matching a search, fully ordered (default: name ASC).

    ``scope`` (None: no filter) keeps the models the caller may read, inside the query.
    """
    comparisons = parse_filter(filter_string, REGISTERED_MODEL_RULES)
    keys = parse_order_by_list(order_by, REGISTERED_MODEL_RULES, reject_duplicates=True)
    stmt = select(RegisteredModel.id)
    if scope is not None:
        stmt = stmt.where(scope_predicate(scope, RegisteredModel.name))
    link = RegisteredModelTag.model_id == RegisteredModel.id
    applied, prompts = _search_comparisons(comparisons)
    for c in applied:
        if c.kind == "tag":
            stmt = stmt.where(_tag_clause(RegisteredModel, link, RegisteredModelTag, c))
        else:
            stmt = stmt.where(_attribute_clause(_MODEL_COLUMNS[c.key], c))
    if not prompts:
        stmt = stmt.where(~_model_is_prompt())
    ordering = _ordering(keys, _MODEL_COLUMNS)
    if "name" not in {k.key for k in keys}:
        ordering.append(RegisteredModel.name.asc())
    return stmt.order_by(*ordering)


# --- model versions ------------------------------------------------------------------------------

_VERSION_COLUMNS: dict[str, Any] = {
    "name": RegisteredModel.name,
    "run_id": ModelVersion.run_id,
    "source_path": ModelVersion.source,
    "version_number": ModelVersion.version,
    "creation_timestamp": ModelVersion.creation_timestamp,
    "last_updated_timestamp": ModelVersion.last_updated_timestamp,
}


def model_version_search_select(
    filter_string: str | None, order_by: list[str] | None, scope: ResourceScope | None = None
) -> Select:
    """Ids of the model versions matching a search, fully ordered.

    Without ``order_by`` the order is MLflow's: ``last_updated_timestamp DESC``, then the
    tie-breakers every order gets, ``name ASC, version DESC``. ``scope`` (None: no filter)
    keeps versions of the models the caller may read.
    """
    comparisons = parse_filter(filter_string, MODEL_VERSION_RULES)
    keys = parse_order_by_list(order_by, MODEL_VERSION_RULES, reject_duplicates=True)
    stmt = select(ModelVersion.id).join(
        RegisteredModel, RegisteredModel.id == ModelVersion.model_id
    )
    if scope is not None:
        stmt = stmt.where(scope_predicate(scope, RegisteredModel.name))
    link = ModelVersionTag.version_id == ModelVersion.id
    applied, prompts = _search_comparisons(comparisons)
    for c in applied:
        if c.kind == "tag":
            stmt = stmt.where(_tag_clause(ModelVersion, link, ModelVersionTag, c))
        else:
            stmt = stmt.where(_attribute_clause(_VERSION_COLUMNS[c.key], c))
    if not prompts:
        stmt = stmt.where(~_model_is_prompt())
    ordering = _ordering(keys, _VERSION_COLUMNS)
    if not order_by:
        ordering = [ModelVersion.last_updated_timestamp.desc()]
    named = {k.key for k in keys}
    if "name" not in named:
        ordering.append(RegisteredModel.name.asc())
    if "version_number" not in named:
        ordering.append(ModelVersion.version.desc())
    return stmt.order_by(*ordering)
