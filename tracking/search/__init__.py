"""MLflow's search filter and order_by grammar, parsed here and compiled into SQLAlchemy selects.

The package keeps the public names of the former ``tracking/search.py`` module: ``rules`` says
which identifiers a search accepts, ``grammar`` parses filter and order_by text, ``sql`` holds
the reusable SQL building blocks, and ``runs``, ``experiments`` and ``logged_models`` compile a
search of each entity into one select.
"""

from __future__ import annotations

from tracking.search.experiments import experiment_search_select
from tracking.search.grammar import (
    MAX_CLAUSES,
    MAX_FILTER_LENGTH,
    MAX_ORDER_BY_KEYS,
    MAX_VALUES,
    Comparison,
    OrderKey,
    Token,
    lifecycle_stages,
    parse_filter,
    parse_order_by,
    parse_order_by_list,
    tokenize,
)

# ColumnLike, MAX_ORDER_BY_LENGTH and VALUE_TYPES were public in the single module but not in
# its __all__; the `X as X` form re-exports them while keeping __all__ (and `import *`) as it was.
from tracking.search.grammar import (
    MAX_ORDER_BY_LENGTH as MAX_ORDER_BY_LENGTH,
)
from tracking.search.logged_models import logged_model_search_select
from tracking.search.rules import (
    EQUALITY_OPS,
    EXPERIMENT_RULES,
    LOGGED_MODEL_RULES,
    MEMBERSHIP_OPS,
    NULL_OPS,
    NUMERIC_OPS,
    PATTERN_OPS,
    RUN_RULES,
    STRING_OPS,
    EntityRules,
    KeyRule,
    KindRule,
)
from tracking.search.rules import (
    VALUE_TYPES as VALUE_TYPES,
)
from tracking.search.runs import run_search_select
from tracking.search.sql import (
    ColumnLike as ColumnLike,
)
from tracking.search.sql import (
    correlated_exists,
    id_predicate,
    key_value_predicate,
    like_to_glob,
    numeric_predicate,
    pattern_match,
    string_predicate,
)

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
