"""Registry operations: models, versions, stages, aliases and their history. Takes a session.

Every change of a pointer (a stage or an alias) happens with the model's row locked, records
its pointer-history rows and calls the ``registry.events`` hooks in the same transaction.
``actor`` is who asked: the authenticated user, or ``ANONYMOUS`` when authentication is off.

Split by topic: ``registered_models`` (models, tags, aliases), ``model_versions`` (versions,
stage transitions, download URIs), ``history`` (pointer history), ``integrity`` (fingerprints,
immutable files, resolve and verify) and ``lookups`` (shared).
"""

from __future__ import annotations

from registry.service.history import (
    LivePointer,
    live_pointer,
    parse_pointer,
    pointer_at,
    pointer_history,
    versions_that_held,
    versions_with_digest,
)
from registry.service.integrity import (
    RecordedFingerprint,
    VerifyReport,
    VersionFingerprint,
    check_artifact_writable,
    freeze_version_files,
    model_version_files,
    moved_version,
    recorded_fingerprint,
    resolve_model_uri,
    verify_fingerprint,
)
from registry.service.lookups import (
    ANONYMOUS,
    POINTER_STAGES,
    model_out,
    models_storing,
    source_references,
    version_out,
)
from registry.service.model_versions import (
    create_model_version,
    delete_model_version,
    delete_model_version_tag,
    get_download_uri,
    get_model_version,
    model_version_location,
    register_version,
    search_model_versions,
    set_model_version_tag,
    update_model_version,
    version_artifact_root,
    versions_of_run,
)
from registry.service.moves import move_stage, transition_stage
from registry.service.pointers import (
    PointerState,
    model_id_of,
    model_names,
    pointer_state,
    pointer_state_of,
)
from registry.service.registered_models import (
    create_registered_model,
    delete_alias,
    delete_registered_model,
    delete_registered_model_tag,
    get_latest_versions,
    get_registered_model,
    get_version_by_alias,
    patterns_with_readable_models,
    rename_registered_model,
    search_registered_models,
    set_alias,
    set_registered_model_tag,
    update_registered_model,
)
from registry.service.resolve import (
    download_uri_at_once,
    latest_versions_at_once,
    model_version_at_once,
    version_by_alias_at_once,
)

__all__ = [
    "ANONYMOUS",
    "POINTER_STAGES",
    "LivePointer",
    "PointerState",
    "RecordedFingerprint",
    "VerifyReport",
    "VersionFingerprint",
    "check_artifact_writable",
    "create_model_version",
    "create_registered_model",
    "delete_alias",
    "delete_model_version",
    "delete_model_version_tag",
    "delete_registered_model",
    "delete_registered_model_tag",
    "download_uri_at_once",
    "freeze_version_files",
    "get_download_uri",
    "get_latest_versions",
    "get_model_version",
    "get_registered_model",
    "get_version_by_alias",
    "latest_versions_at_once",
    "live_pointer",
    "model_id_of",
    "model_names",
    "model_out",
    "model_version_at_once",
    "model_version_files",
    "model_version_location",
    "models_storing",
    "move_stage",
    "moved_version",
    "parse_pointer",
    "patterns_with_readable_models",
    "pointer_at",
    "pointer_history",
    "pointer_state",
    "pointer_state_of",
    "recorded_fingerprint",
    "register_version",
    "rename_registered_model",
    "resolve_model_uri",
    "search_model_versions",
    "search_registered_models",
    "set_alias",
    "set_model_version_tag",
    "set_registered_model_tag",
    "source_references",
    "transition_stage",
    "update_model_version",
    "update_registered_model",
    "verify_fingerprint",
    "version_artifact_root",
    "version_by_alias_at_once",
    "version_out",
    "versions_of_run",
    "versions_that_held",
    "versions_with_digest",
]
