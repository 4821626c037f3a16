"""Resolving a model on the driver connection: the registry's hottest reads, answered at once.

Each function answers a well-formed request whose answer is found; ``None`` means "take the
full path" (the session-based function of the same name in this package), which names the
error MLflow names (a missing model first, then a bad version or stage, then what is missing)
or confirms an empty answer. The full path re-reads, so what these return is always what it
would have returned.
"""

from __future__ import annotations

from collections.abc import Sequence

from registry.schemas import ModelVersionOut, Version
from registry.service.lookups import version_out
from registry.service.model_versions import _is_prompt_version
from registry.store import prebuilt
from registry.validation import (
    LATEST_ALIAS,
    STAGES,
    canonical_stage,
    parse_version,
    validate_alias,
    validate_model_name,
)
from tracking.core.driver import DriverRows
from tracking.core.errors import MlflowError


async def download_uri_at_once(
    r: DriverRows, name: str | None, version: Version | None
) -> str | None:
    """``get-download-uri`` in one indexed read (see ``get_download_uri``)."""
    try:
        checked, number = validate_model_name(name), parse_version(version)
    except MlflowError:
        return None
    found = await prebuilt.location_of(r, checked, number)
    if found is None:
        return None
    # A prompt version has no files: like MLflow, answer with its placeholder source.
    return str(found.source if _is_prompt_version(found) else found.storage_location)


async def latest_versions_at_once(
    r: DriverRows, name: str | None, stages: Sequence[str] | None
) -> list[ModelVersionOut] | None:
    """``get-latest-versions`` when some requested stage holds a version."""
    try:
        checked = validate_model_name(name)
        wanted = sorted({canonical_stage(st) for st in stages} if stages else set(STAGES))
    except MlflowError:
        return None
    params = {"name": checked, "stages": prebuilt.stages_value(wanted, r.dialect)}
    found = await prebuilt.versions_with_children(r, prebuilt.LATEST_IN_STAGES, params)
    return [version_out(b) for b in found] or None


async def version_by_alias_at_once(
    r: DriverRows, name: str | None, alias: str | None
) -> ModelVersionOut | None:
    """``GET registered-models/alias`` when the alias (or ``latest``) names a version."""
    try:
        checked, model_name = validate_alias(alias), validate_model_name(name)
    except MlflowError:
        return None
    if checked.lower() == LATEST_ALIAS:
        stmt, params = prebuilt.HIGHEST_VERSION, {"name": model_name}
    else:
        stmt, params = prebuilt.ALIAS_TARGET, {"name": model_name, "alias": checked}
    found = await prebuilt.versions_with_children(r, stmt, params)
    return version_out(found[0]) if found else None


async def model_version_at_once(
    r: DriverRows, name: str | None, version: Version | None
) -> ModelVersionOut | None:
    """``model-versions/get`` of an existing version."""
    try:
        checked, number = validate_model_name(name), parse_version(version)
    except MlflowError:
        return None
    params = {"name": checked, "version": number}
    found = await prebuilt.versions_with_children(r, prebuilt.VERSION_BY_NUMBER, params)
    return version_out(found[0]) if found else None
