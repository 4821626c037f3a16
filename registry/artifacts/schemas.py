"""Wire structs of the proxied-artifact API, in MLflow's snake_case JSON."""

from __future__ import annotations

import msgspec

# --- requests --------------------------------------------------------------------------------


class ListArtifactsQuery(msgspec.Struct):
    path: str | None = None


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
    # A base name, never a path: the client joins it onto the directory it asked for.
    path: str
    is_dir: bool
    # Omitted for directories, as MLflow does.
    file_size: int | None = None


class ListArtifactsOut(msgspec.Struct):
    files: list[FileInfoOut]


class MultipartUploadCredential(msgspec.Struct):
    url: str
    part_number: int
    headers: dict[str, str] = {}


class CreateMultipartUploadOut(msgspec.Struct):
    upload_id: str
    credentials: list[MultipartUploadCredential]
