"""Registry operations: models, versions, stages, aliases and their history. Takes a session.

Every change of a pointer (a stage or an alias) happens with the model's row locked, records
its pointer-history rows and calls the ``registry.events`` hooks in the same transaction.
``actor`` is who asked; until mlgate has identities the API passes ``ANONYMOUS``.

Split by topic: ``registered_models`` (models, tags, aliases), ``model_versions`` (versions,
stage transitions, download URIs), ``history`` (pointer history) and ``lookups`` (shared).
"""

from __future__ import annotations

from registry.service.history import parse_pointer, pointer_at, pointer_history
from registry.service.lookups import ANONYMOUS, POINTER_STAGES, model_out, version_out
from registry.service.model_versions import (
    create_model_version,
    delete_model_version,
    delete_model_version_tag,
    get_download_uri,
    get_model_version,
    search_model_versions,
    set_model_version_tag,
    transition_stage,
    update_model_version,
    version_artifact_root,
)
from registry.service.registered_models import (
    create_registered_model,
    delete_alias,
    delete_registered_model,
    delete_registered_model_tag,
    get_latest_versions,
    get_registered_model,
    get_version_by_alias,
    rename_registered_model,
    search_registered_models,
    set_alias,
    set_registered_model_tag,
    update_registered_model,
)

__all__ = [
    "ANONYMOUS",
    "POINTER_STAGES",
    "create_model_version",
    "create_registered_model",
    "delete_alias",
    "delete_model_version",
    "delete_model_version_tag",
    "delete_registered_model",
    "delete_registered_model_tag",
    "get_download_uri",
    "get_latest_versions",
    "get_model_version",
    "get_registered_model",
    "get_version_by_alias",
    "model_out",
    "parse_pointer",
    "pointer_at",
    "pointer_history",
    "rename_registered_model",
    "search_model_versions",
    "search_registered_models",
    "set_alias",
    "set_model_version_tag",
    "set_registered_model_tag",
    "transition_stage",
    "update_model_version",
    "update_registered_model",
    "version_artifact_root",
    "version_out",
]
