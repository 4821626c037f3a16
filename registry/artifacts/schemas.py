"""Wire structs of the proxied-artifact API, in MLflow's snake_case JSON."""

from __future__ import annotations

import msgspec

# --- requests --------------------------------------------------------------------------------


class ListArtifactsQuery(msgspec.Struct):
    path: str | None = None


class ListRunArtifactsQuery(msgspec.Struct):
    run_id: str | None = None
    run_uuid: str | None = None
    path: str | None = None
    # Accepted and ignored, as mlflow server does: one directory level is one page.
    page_token: str | None = None


class GetRunArtifactQuery(msgspec.Struct):
    path: str | None = None
    run_id: str | None = None
    run_uuid: str | None = None


class GetModelVersionArtifactQuery(msgspec.Struct):
    path: str | None = None
    name: str | None = None
    version: str | None = None


class CreateMultipartUpload(msgspec.Struct):
    # ``path`` is the client's *local* file name; only its base name is used.
    path: str | None = None
    num_parts: int | None = None


class MultipartUploadPart(msgspec.Struct):
    part_number: int = 0
    etag: str | None = None
    url: str | None = None


class CompleteMultipartUpload(msgspec.Struct):
    path: str | None = None
    upload_id: str | None = None
    parts: list[MultipartUploadPart] = []


class AbortMultipartUpload(msgspec.Struct):
    path: str | None = None
    upload_id: str | None = None


class UploadPartQuery(msgspec.Struct):
    upload_id: str | None = None
    part_number: int | None = None


# --- responses -------------------------------------------------------------------------------


class FileInfoOut(msgspec.Struct, omit_defaults=True):
    # The proxy's listing sends a base name, which the client joins onto the directory it
    # asked for; the run listing (``mlflow/artifacts/list``) sends the run-relative path.
    path: str
    is_dir: bool
    # Omitted for directories, as MLflow does.
    file_size: int | None = None


# An empty listing is ``{}``, as mlflow server sends it (protobuf JSON omits empty lists).
class ListArtifactsOut(msgspec.Struct, omit_defaults=True):
    files: list[FileInfoOut] = []


class ListRunArtifactsOut(msgspec.Struct, omit_defaults=True):
    root_uri: str
    files: list[FileInfoOut] = []


class MultipartUploadCredential(msgspec.Struct):
    url: str
    part_number: int
    headers: dict[str, str] = {}


class CreateMultipartUploadOut(msgspec.Struct):
    upload_id: str
    credentials: list[MultipartUploadCredential]
