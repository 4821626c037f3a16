"""The strict parser for ``models:/`` URIs that name a registered model version.

Exactly these forms are accepted (what MLflow's client loads), and nothing else:

- ``models:/<name>/<version>``: a version number, e.g. ``models:/fraud/3``;
- ``models:/<name>/<stage>``: the highest version in Staging, Production, Archived or None
  (any case);
- ``models:/<name>/latest``: the highest version (any case);
- ``models:/<name>@<alias>``: the version an alias points at.

The URI is parsed once, here; the result carries checked values only. Whatever could make a
later step see a different model than this parser did is refused outright rather than
normalised: ``%`` (encoded or double-encoded ``/`` and ``..``), ``\\``, ``?``, ``#``, ``;``,
control characters, surrounding whitespace, extra segments, ``models://host/...`` and any
other scheme. A model whose name contains ``%`` can still be addressed by name and version.
"""

from __future__ import annotations

from dataclasses import dataclass

from registry.validation import (
    LATEST_ALIAS,
    canonical_stage,
    parse_version,
    validate_alias,
    validate_model_name,
)
from tracking.core.errors import InvalidParameter

MODELS_SCHEME = "models:/"
MAX_MODEL_URI_LEN = 600  # "models:/" + a 256-character name + "@" + a 255-character alias
_LOGGED_MODEL_PREFIX = "m-"

# Characters refused anywhere in the URI, with the attack class each one carries.
_FORBIDDEN = {
    "%": "percent-encoding is not allowed (CVE-2024-1560: '%2e%2e' decoded to '..' after checks)",
    "\\": "backslashes are not allowed (CVE-2023-2780: '\\..\\' escaped '/'-based checks)",
    "?": "queries are not allowed (CVE-2023-6909: '?' hid a path from the traversal check)",
    "#": "fragments are not allowed (CVE-2024-1483: '#' hid a path from the traversal check)",
    ";": "';' is not allowed (CVE-2024-1594: URI params hid '../' from the check)",
}


@dataclass(frozen=True, slots=True)
class ModelVersionUri:
    """A parsed ``models:/`` URI: exactly one of version, stage or alias, or none for latest."""

    name: str
    version: int | None = None
    stage: str | None = None
    alias: str | None = None

    @property
    def is_latest(self) -> bool:
        return self.version is None and self.stage is None and self.alias is None

    def __str__(self) -> str:
        if self.alias is not None:
            return f"{MODELS_SCHEME}{self.name}@{self.alias}"
        if self.version is not None:
            return f"{MODELS_SCHEME}{self.name}/{self.version}"
        return f"{MODELS_SCHEME}{self.name}/{self.stage or LATEST_ALIAS}"


def _invalid(raw: str, why: str) -> InvalidParameter:
    shown = raw if len(raw) <= 200 else f"{raw[:200]}..."
    return InvalidParameter(
        f"Invalid model URI {shown!r}: {why}. Expected models:/<name>/<version>, "
        "models:/<name>/<stage>, models:/<name>/latest or models:/<name>@<alias>."
    )


def _name(raw: str, name: str) -> str:
    try:
        return validate_model_name(name)
    except InvalidParameter as exc:
        raise _invalid(raw, exc.message.rstrip(".")) from None


def parse_model_uri(raw: str | None) -> ModelVersionUri:
    """Parse a ``models:/`` URI naming a registered model version, or refuse it (400)."""
    if raw is None or raw == "":
        raise InvalidParameter("Missing value for required parameter 'uri'.")
    if len(raw) > MAX_MODEL_URI_LEN:
        raise _invalid(raw, f"it is longer than {MAX_MODEL_URI_LEN} characters")
    if raw != raw.strip() or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in raw):
        raise _invalid(raw, "whitespace at the ends and control characters are not allowed")
    for char, why in _FORBIDDEN.items():
        if char in raw:
            raise _invalid(raw, why)
    if not raw.startswith(MODELS_SCHEME):
        # file:, runs:, s3:, http: ... (CVE-2023-1177 class): only registry URIs resolve here.
        raise _invalid(raw, "only models:/ URIs are resolved")
    body = raw[len(MODELS_SCHEME) :]
    if body.startswith("/"):
        raise _invalid(raw, "models:// URIs naming another registry are not served")
    if "/" in body:
        name, suffix = body.split("/", 1)
        if "/" in suffix or not suffix:
            raise _invalid(raw, "it must have exactly one segment after the model name")
        checked = _name(raw, name)
        if suffix.isascii() and suffix.isdigit():
            try:
                return ModelVersionUri(checked, version=parse_version(suffix))
            except InvalidParameter as exc:
                raise _invalid(raw, exc.message.rstrip(".")) from None
        if suffix.lower() == LATEST_ALIAS:
            return ModelVersionUri(checked)
        try:
            return ModelVersionUri(checked, stage=canonical_stage(suffix))
        except InvalidParameter:
            raise _invalid(
                raw, f"'{suffix}' is not a version number, a stage or 'latest'"
            ) from None
    if "@" in body:
        name, alias = body.rsplit("@", 1)
        checked = _name(raw, name)
        try:
            return ModelVersionUri(checked, alias=validate_alias(alias))
        except InvalidParameter as exc:
            raise _invalid(raw, exc.message.rstrip(".")) from None
    if body.startswith(_LOGGED_MODEL_PREFIX):
        raise _invalid(raw, "it names a logged model, not a registered model version")
    raise _invalid(raw, "it names no version, stage, 'latest' or alias")
