"""Artifact storage backends (local directory, S3) and ``build_storage``, which picks one.

Every backend method takes an :class:`~registry.artifacts.paths.ArtifactPath`, never a string,
so a backend only ever sees paths that went through the one canonicaliser. Bodies move as async
byte iterators in bounded chunks: no backend reads a whole artifact into memory.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from registry.artifacts.storage.base import (
    UNSUPPORTED_MULTIPART,
    ArtifactEntry,
    ArtifactReader,
    ArtifactStat,
    ArtifactStorage,
    StorageUnavailable,
    UploadedPart,
    guess_media_type,
)
from registry.artifacts.storage.local import LocalStorage
from registry.artifacts.storage.s3 import S3Storage
from tracking.core.settings import Settings

__all__ = [
    "UNSUPPORTED_MULTIPART",
    "ArtifactEntry",
    "ArtifactReader",
    "ArtifactStat",
    "ArtifactStorage",
    "LocalStorage",
    "S3Storage",
    "StorageUnavailable",
    "UploadedPart",
    "build_storage",
    "guess_media_type",
]


def build_storage(settings: Settings) -> ArtifactStorage:
    """The backend named by ``settings.artifacts_destination``: a directory or ``s3://b/prefix``."""
    destination = settings.artifacts_destination.strip()
    if not destination:
        raise ValueError("MLGATE_ARTIFACTS_DESTINATION must not be empty")
    parsed = urlparse(destination)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise ValueError(f"artifacts destination {destination!r} names no bucket")
        return S3Storage(
            bucket=parsed.netloc,
            prefix=parsed.path.strip("/"),
            endpoint_url=settings.s3_endpoint_url or None,
        )
    if parsed.scheme == "file":
        return LocalStorage(Path(parsed.path))
    if len(parsed.scheme) > 1:  # one letter is a Windows drive, not a scheme
        raise ValueError(
            f"unsupported artifacts destination {destination!r}: use a directory or s3://bucket/prefix"
        )
    return LocalStorage(Path(destination))
