"""Wire structs for the registry API, in MLflow's snake_case JSON (plus mlgate's history API)."""

from __future__ import annotations

import msgspec

# Versions go out as strings; the client sends strings, a number is accepted and normalised.
Version = str | int


class KeyValue(msgspec.Struct):
    key: str | None = None
    value: str | None = None


# --- registered models: requests -------------------------------------------------------------


class CreateRegisteredModel(msgspec.Struct):
    name: str | None = None
    tags: list[KeyValue] = []
    description: str | None = None


class RegisteredModelRef(msgspec.Struct):
    name: str | None = None


class RenameRegisteredModel(msgspec.Struct):
    name: str | None = None
    new_name: str | None = None


class UpdateRegisteredModel(msgspec.Struct):
    name: str | None = None
    description: str | None = None


class SearchRegisteredModels(msgspec.Struct):
    filter: str | None = None
    max_results: int | None = None
    order_by: list[str] = []
    page_token: str | None = None


class SetRegisteredModelTag(msgspec.Struct):
    name: str | None = None
    key: str | None = None
    value: str | None = None


class DeleteRegisteredModelTag(msgspec.Struct):
    name: str | None = None
    key: str | None = None


class SetAlias(msgspec.Struct):
    name: str | None = None
    alias: str | None = None
    version: Version | None = None
    # mlgate extension: why the pointer moved, kept in the pointer history.
    comment: str | None = None


class DeleteAlias(msgspec.Struct):
    name: str | None = None
    alias: str | None = None
    comment: str | None = None


class GetByAlias(msgspec.Struct):
    name: str | None = None
    alias: str | None = None


class GetLatestVersions(msgspec.Struct):
    name: str | None = None
    stages: list[str] = []


# --- model versions: requests ----------------------------------------------------------------


class CreateModelVersion(msgspec.Struct):
    name: str | None = None
    source: str | None = None
    run_id: str | None = None
    tags: list[KeyValue] = []
    run_link: str | None = None
    description: str | None = None
    model_id: str | None = None


class ModelVersionRef(msgspec.Struct):
    name: str | None = None
    version: Version | None = None


class UpdateModelVersion(msgspec.Struct):
    name: str | None = None
    version: Version | None = None
    description: str | None = None


class SearchModelVersions(msgspec.Struct):
    filter: str | None = None
    max_results: int | None = None
    order_by: list[str] = []
    page_token: str | None = None


class SetModelVersionTag(msgspec.Struct):
    name: str | None = None
    version: Version | None = None
    key: str | None = None
    value: str | None = None


class DeleteModelVersionTag(msgspec.Struct):
    name: str | None = None
    version: Version | None = None
    key: str | None = None


class TransitionStage(msgspec.Struct):
    name: str | None = None
    version: Version | None = None
    stage: str | None = None
    archive_existing_versions: bool = False
    comment: str | None = None


# --- pointer history (mlgate's own API) ------------------------------------------------------


class GetPointerHistory(msgspec.Struct):
    name: str | None = None
    pointer: str | None = None
    max_results: int | None = None
    page_token: str | None = None


class GetPointerAt(msgspec.Struct):
    name: str | None = None
    pointer: str | None = None
    timestamp: int | None = None


# --- integrity and resolve (mlgate's own API) ------------------------------------------------


class ResolveModelUri(msgspec.Struct):
    uri: str | None = None


class GetModelVersionFiles(msgspec.Struct):
    name: str | None = None
    version: Version | None = None
    max_results: int | None = None
    page_token: str | None = None


# --- responses -------------------------------------------------------------------------------


class TagOut(msgspec.Struct):
    key: str
    value: str


class AliasOut(msgspec.Struct):
    alias: str
    version: str


class ModelVersionOut(msgspec.Struct, omit_defaults=True):
    name: str
    version: str
    creation_timestamp: int
    last_updated_timestamp: int
    current_stage: str
    source: str
    # The client polls while status is PENDING_REGISTRATION (the proto default): always send it.
    status: str
    user_id: str | None = None
    description: str | None = None
    run_id: str | None = None
    status_message: str | None = None
    run_link: str | None = None
    model_id: str | None = None
    tags: list[TagOut] = []
    aliases: list[str] = []


class RegisteredModelOut(msgspec.Struct, omit_defaults=True):
    name: str
    creation_timestamp: int
    last_updated_timestamp: int
    user_id: str | None = None
    description: str | None = None
    latest_versions: list[ModelVersionOut] = []
    tags: list[TagOut] = []
    aliases: list[AliasOut] = []


class PointerEventOut(msgspec.Struct, omit_defaults=True):
    id: str
    name: str
    pointer_kind: str
    pointer: str
    action: str
    actor: str
    timestamp: int
    from_version: str | None = None
    to_version: str | None = None
    version: str | None = None
    comment: str | None = None


class PointerAtOut(msgspec.Struct, omit_defaults=True):
    name: str
    pointer_kind: str
    pointer: str
    timestamp: int
    # Absent when nothing held the pointer at that time.
    version: str | None = None
    event: PointerEventOut | None = None


# Integrity responses always carry every key (``digest`` may be null): they are read by
# systems that do not run the MLflow client, and an explicit null is easier to handle there.


class ManifestFileOut(msgspec.Struct):
    path: str
    size: int
    sha256: str


class ResolvedModelVersionOut(msgspec.Struct):
    name: str
    version: str
    current_stage: str
    aliases: list[str]
    run_id: str | None
    source: str
    # The concrete mlflow-artifacts:/ location (what get-download-uri answers).
    download_uri: str
    # The same location as an HTTP path on this server; a file is at artifact_url + "/" + path.
    artifact_url: str
    # The manifest digest (registry.artifacts.manifest); null when no files were registered.
    digest: str | None
    files: list[ManifestFileOut]


class ModelVersionFilesOut(msgspec.Struct, omit_defaults=True):
    name: str
    version: str
    digest: str | None
    files: list[ManifestFileOut]
    next_page_token: str | None = None
