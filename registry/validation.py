"""Input checks for registry writes: names, versions, tags, aliases and stages (MLflow's rules)."""

from __future__ import annotations

import posixpath
import re

from registry.errors import InvalidStage
from registry.models import ALIAS_LEN, NAME_LEN, TAG_KEY_LEN
from tracking.core.errors import InvalidParameter

MAX_TAG_VALUE_LEN = 100_000
MAX_DESCRIPTION_LEN = 100_000
MAX_SEARCH_MODELS = 1000
DEFAULT_SEARCH_MODELS = 100
MAX_SEARCH_VERSIONS = 200_000
DEFAULT_SEARCH_VERSIONS = 10_000
MAX_HISTORY_PAGE = 1000
DEFAULT_HISTORY_PAGE = 100
MAX_VERSION_TAGS = 100

# Canonical stage names; clients may send any case.
STAGES = ("None", "Staging", "Production", "Archived")
_STAGE_BY_LOWER = {s.lower(): s for s in STAGES}
# Stages archive_existing_versions applies to (MLflow answers others with a 500; we use 400).
ARCHIVING_STAGES = frozenset({"Staging", "Production"})

_TAG_KEY_RE = re.compile(r"^[/\w.\- :]*$")
_ALIAS_RE = re.compile(r"^[\w\-]*$")
_VERSION_ALIAS_RE = re.compile(r"^[vV]\d+$")
LATEST_ALIAS = "latest"


def require(value: object, name: str) -> None:
    if value is None or value == "" or value == []:
        raise InvalidParameter(f"Missing value for required parameter '{name}'.")


def validate_model_name(name: str | None, what: str = "name") -> str:
    """Non-blank; no '/' or ':' (they split ``models:/`` URIs); no '..' (path traversal)."""
    if name is None or not name.strip():
        raise InvalidParameter(f"Missing value for required parameter '{what}'.")
    if "/" in name or ":" in name:
        raise InvalidParameter(f"Invalid model name '{name}'. Names cannot contain '/' or ':'.")
    if ".." in name or name == ".":
        raise InvalidParameter(f"Invalid model name '{name}'. Names cannot be '.' or contain '..'.")
    if len(name) > NAME_LEN:
        raise InvalidParameter(f"Model name exceeds the maximum length of {NAME_LEN} characters.")
    return name


def parse_version(version: str | int | None) -> int:
    if version is None or version == "":
        raise InvalidParameter("Missing value for required parameter 'version'.")
    text = str(version).strip()
    if not re.fullmatch(r"\d{1,9}", text):
        raise InvalidParameter(f"Parameter 'version' must be an integer, got '{version}'.")
    return int(text)


def validate_tag(key: str | None, value: str | None) -> tuple[str, str]:
    """Registered-model and model-version tags: MLflow's key charset, values up to 100,000."""
    if key is None or key == "":
        raise InvalidParameter("Missing value for required parameter 'key'.")
    if len(key) > TAG_KEY_LEN:
        raise InvalidParameter(
            f"Tag key '{key[:40]}...' had length {len(key)}, which exceeded length limit of "
            f"{TAG_KEY_LEN}"
        )
    if (
        not _TAG_KEY_RE.match(key)
        or key.startswith("/")
        or posixpath.normpath(key) != key
        or ".." in key.split("/")
    ):
        raise InvalidParameter(
            f"Invalid tag name: '{key}'. Names may only contain alphanumerics, underscores (_), "
            "dashes (-), periods (.), spaces ( ), colon(:) and slashes (/), and must be a "
            "normalised relative path."
        )
    text = "" if value is None else value
    if len(text) > MAX_TAG_VALUE_LEN:
        raise InvalidParameter(
            f"Tag value for '{key}' had length {len(text)}, which exceeded length limit of "
            f"{MAX_TAG_VALUE_LEN}"
        )
    return key, text


def validate_description(description: str | None) -> str | None:
    if description is not None and len(description) > MAX_DESCRIPTION_LEN:
        raise InvalidParameter(
            f"Description exceeds the maximum length of {MAX_DESCRIPTION_LEN} characters."
        )
    return description


def validate_alias(alias: str | None, *, setting: bool = False) -> str:
    """``^[\\w\\-]*$`` up to 255 characters; ``latest`` and ``v<digits>`` are reserved to set."""
    if alias is None or alias == "":
        raise InvalidParameter("Registered model alias name cannot be empty.")
    if not _ALIAS_RE.match(alias):
        raise InvalidParameter(
            f"Invalid alias name: '{alias}'. Names may only contain alphanumerics, "
            "underscores (_), and dashes (-)."
        )
    if len(alias) > ALIAS_LEN:
        raise InvalidParameter(
            f"Registered model alias name exceeds the maximum length of {ALIAS_LEN} characters."
        )
    if setting:
        if alias.lower() == LATEST_ALIAS:
            raise InvalidParameter("'latest' alias name (case insensitive) is reserved.")
        if _VERSION_ALIAS_RE.match(alias):
            raise InvalidParameter(f"Version alias name '{alias}' is reserved.")
    return alias


def canonical_stage(stage: str | None) -> str:
    """The canonical spelling of a stage name given in any case, or INVALID_PARAMETER_VALUE."""
    found = _STAGE_BY_LOWER.get((stage or "").strip().lower())
    if found is None:
        raise InvalidStage(stage)
    return found


def validate_max_results(value: int | None, default: int, limit: int) -> int:
    if value is None:
        return default
    if value < 1 or value > limit:
        raise InvalidParameter(
            f"Invalid value {value} for parameter 'max_results' supplied. It must be at most "
            f"{limit} and at least 1."
        )
    return value
