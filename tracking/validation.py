"""Input limits and checks for tracking writes, matching MLflow's reference server."""

from __future__ import annotations

import functools
import posixpath
import re

from tracking.core.errors import InvalidParameter
from tracking.errors import MissingParameter

MAX_KEY_LEN = 250
MAX_PARAM_VALUE_LEN = 6000
MAX_RUN_TAG_VALUE_LEN = 8000
MAX_EXPERIMENT_NAME_LEN = 500
MAX_EXPERIMENT_TAG_VALUE_LEN = 20000
MAX_RUN_NAME_LEN = 250
MAX_BATCH_METRICS = 1000
MAX_BATCH_PARAMS = 100
MAX_BATCH_TAGS = 100
MAX_BATCH_TOTAL = 1000
MAX_SEARCH_RESULTS = 50000
MAX_EXPERIMENT_SEARCH_RESULTS = 50000
MAX_HISTORY_PAGE = 25000
MAX_DATASET_NAME = 500
MAX_DATASET_DIGEST = 36
MAX_DATASET_SOURCE = 65535
MAX_DATASET_SCHEMA = 1 << 20
MAX_DATASET_PROFILE = 16 << 20
MAX_LOGGED_MODEL_PARAMS = 100

_KEY_RE = re.compile(r"^[/\w.\- :]*$")


def require(value: object, name: str) -> None:
    if value is None or value == "" or value == []:
        raise MissingParameter(name)


def validate_key(key: str | None, kind: str) -> str:
    """Metric, param and tag names: short, a safe charset, and a normalised relative path."""
    if key is None or key == "":
        raise MissingParameter("key")
    return _checked_key(key, kind)


# A batch names the same few keys over and over; a refused key raises and is never cached.
@functools.lru_cache(maxsize=4096)
def _checked_key(key: str, kind: str) -> str:
    if len(key) > MAX_KEY_LEN:
        raise InvalidParameter(
            f"{kind} name '{key[:40]}...' had length {len(key)}, which exceeded length limit of "
            f"{MAX_KEY_LEN}"
        )
    if not _KEY_RE.match(key):
        raise InvalidParameter(
            f"Invalid {kind} name: '{key}'. Names may only contain alphanumerics, underscores (_), "
            "dashes (-), periods (.), spaces ( ), colon(:) and slashes (/)."
        )
    # Keys become file-system-like paths in some clients; refuse traversal-shaped names.
    if key.startswith("/") or posixpath.normpath(key) != key or ".." in key.split("/"):
        raise InvalidParameter(
            f"Invalid {kind} name: '{key}'. "
            "Names cannot be absolute, non-normalised or contain '..'."
        )
    return key


def truncate(value: str, limit: int) -> str:
    # MLflow truncates long param and run-tag values silently (MLFLOW_TRUNCATE_LONG_VALUES).
    return value if len(value) <= limit else value[:limit]


def validate_metric_value(key: str, value: float | None) -> float:
    if value is None:
        raise InvalidParameter(f"Got invalid value None for metric '{key}' (expected a number)")
    if isinstance(value, bool):
        raise InvalidParameter(f"Got invalid value {value} for metric '{key}' (expected a number)")
    return float(value)


def validate_timestamp(key: str, timestamp: int | None) -> int:
    if timestamp is None:
        raise MissingParameter("timestamp")
    if timestamp < 0:
        raise InvalidParameter(
            f"Got invalid timestamp {timestamp} for metric '{key}'. Timestamp must be non-negative."
        )
    return int(timestamp)


def validate_experiment_name(name: str | None) -> str:
    if not name:  # mlflow server's wording for an absent (or empty) required field
        raise MissingParameter("name")
    if not name.strip():
        raise InvalidParameter("Invalid experiment name: ''. Experiment names must be non-empty.")
    if len(name) > MAX_EXPERIMENT_NAME_LEN:
        raise InvalidParameter(
            f"Experiment name exceeds the maximum length of {MAX_EXPERIMENT_NAME_LEN} characters."
        )
    return name


def validate_experiment_tag(key: str | None, value: str | None) -> tuple[str, str]:
    k = validate_key(key, "tag")
    v = value or ""
    if len(v) > MAX_EXPERIMENT_TAG_VALUE_LEN:
        raise InvalidParameter(
            f"Tag value for '{k}' had length {len(v)}, which exceeded length limit of "
            f"{MAX_EXPERIMENT_TAG_VALUE_LEN}"
        )
    return k, v


def validate_max_results(value: int | None, default: int, limit: int) -> int:
    if value is None:
        return default
    # mlflow server's two wordings (experiments search); scripts match on them.
    if value < 1:
        raise InvalidParameter(
            f"Invalid value {value} for parameter 'max_results' supplied. "
            "It must be a positive integer"
        )
    if value > limit:
        raise InvalidParameter(
            f"Invalid value {value} for parameter 'max_results' supplied. "
            f"It must be at most {limit}"
        )
    return value


def validate_batch_sizes(n_metrics: int, n_params: int, n_tags: int) -> None:
    if n_metrics > MAX_BATCH_METRICS:
        raise InvalidParameter(
            f"A batch logging request can contain at most {MAX_BATCH_METRICS} metrics. "
            f"Got {n_metrics} metrics."
        )
    if n_params > MAX_BATCH_PARAMS:
        raise InvalidParameter(
            f"A batch logging request can contain at most {MAX_BATCH_PARAMS} params. "
            f"Got {n_params} params."
        )
    if n_tags > MAX_BATCH_TAGS:
        raise InvalidParameter(
            f"A batch logging request can contain at most {MAX_BATCH_TAGS} tags. Got {n_tags} tags."
        )
    if n_metrics + n_params + n_tags > MAX_BATCH_TOTAL:
        raise InvalidParameter(
            f"A batch logging request can contain at most {MAX_BATCH_TOTAL} metrics, params and "
            f"tags in total. Got {n_metrics + n_params + n_tags}."
        )


def check_length(value: str | None, limit: int, what: str) -> None:
    if value is not None and len(value) > limit:
        raise InvalidParameter(f"{what} exceeds the maximum length of {limit}")
