"""The artifact storage protocol and the value types every backend shares.

Every method takes an :class:`~registry.artifacts.paths.ArtifactPath`, never a string, so a
backend only ever sees paths that went through the one canonicaliser. Bodies move as async byte
iterators in bounded chunks: no backend reads a whole artifact into memory.
"""

from __future__ import annotations

import mimetypes
import posixpath
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Mapping,
    Sequence,
)
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from registry.artifacts.paths import ArtifactPath
from tracking.core.errors import InvalidParameter, MlflowError

# Chunk size for local file reads and writes, and for reads from S3 streaming bodies.
IO_CHUNK_BYTES = 1024 * 1024
# A listing larger than this is refused rather than built in memory: MLflow's list API has no
# page token, and silently truncating a listing would make downloads silently incomplete.
MAX_LIST_ENTRIES = 100_000
# S3's limits, applied to every backend so that behaviour does not depend on the backend.
MAX_PARTS = 10_000
MAX_PART_BYTES = 5 * 1024**3

UNSUPPORTED_MULTIPART = "Multipart upload is not supported for the current artifact repository"


class StorageUnavailable(MlflowError):
    """The backing store failed (network, credentials, bucket): retryable, not a client error."""

    error_code = "TEMPORARILY_UNAVAILABLE"
    status_code = 503
    headers = {"Retry-After": "5"}


@dataclass(frozen=True, slots=True)
class ArtifactEntry:
    """One entry of a one-level directory listing; ``name`` is a base name, never a path."""

    name: str
    is_dir: bool
    file_size: int | None = None


@dataclass(frozen=True, slots=True)
class ArtifactStat:
    is_dir: bool
    size: int | None = None


@dataclass(frozen=True, slots=True)
class UploadedPart:
    part_number: int
    etag: str


class ArtifactReader:
    """An open artifact: its size, and its bytes as an async iterator of bounded chunks.

    Iterate it exactly once; the underlying handle closes when iteration ends or on ``aclose``.
    """

    def __init__(
        self,
        size: int,
        chunks: AsyncIterator[bytes],
        close: Callable[[], Awaitable[None]],
    ) -> None:
        self.size = size
        self._chunks = chunks
        self._close = close
        self._closed = False

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._chunks:
                yield chunk
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            await self._close()


@runtime_checkable
class ArtifactStorage(Protocol):
    """What the artifact API needs from a backend. Missing files raise ``ResourceNotFound``."""

    supports_multipart: bool

    async def put(self, path: ArtifactPath, chunks: AsyncIterable[bytes]) -> int:
        """Store the streamed body at ``path`` atomically; return the number of bytes written."""
        ...

    async def open(self, path: ArtifactPath) -> ArtifactReader:
        """Open a file for streaming; a missing file or a directory is ``ResourceNotFound``."""
        ...

    async def list(self, path: ArtifactPath) -> list[ArtifactEntry]:
        """One directory level, sorted by name; a missing directory or a file lists as ``[]``."""
        ...

    async def delete(self, path: ArtifactPath) -> None:
        """Delete a file or everything under a directory prefix; missing paths are a no-op."""
        ...

    async def stat(self, path: ArtifactPath) -> ArtifactStat | None:
        """A file's size, or ``is_dir`` for a directory; ``None`` when nothing is there."""
        ...

    async def create_multipart(self, path: ArtifactPath) -> str:
        """Start a multipart upload to ``path``; return its opaque, unguessable upload id."""
        ...

    async def upload_part(
        self, path: ArtifactPath, upload_id: str, part_number: int, chunks: AsyncIterable[bytes]
    ) -> str:
        """Store one part (1-based number); return its ETag."""
        ...

    async def complete_multipart(
        self, path: ArtifactPath, upload_id: str, parts: Sequence[UploadedPart]
    ) -> None:
        """Assemble the listed parts, in order, into the file at ``path``."""
        ...

    async def abort_multipart(self, path: ArtifactPath, upload_id: str) -> None: ...

    async def snapshot(self, source: ArtifactPath, target: ArtifactPath) -> tuple[int, str]:
        """Copy the file at ``source`` to the new file ``target``; return (size, sha256 hex)
        of the bytes now stored at ``target``.

        The copy is taken atomically (a concurrent replacement of ``source`` is either wholly
        in it or not at all) and the digest is computed from the copy, never from the source,
        so what is stored is exactly what was hashed. A missing source is ``ResourceNotFound``.
        """
        ...

    async def publish_tree(
        self, staged: ArtifactPath, final: ArtifactPath, expected: Mapping[str, tuple[int, str]]
    ) -> None:
        """Move the tree at ``staged`` to ``final``; ``staged`` is gone afterwards.

        ``final`` is content-addressed: if it exists it already holds the same bytes.
        ``expected`` maps each staged file (relative path) to its (size, sha256), for backends
        that must copy rather than rename to check the result.
        """
        ...

    async def sweep_stale_uploads(self, max_age_seconds: float) -> int:
        """Remove what abandoned uploads left behind (temp files, multipart uploads) untouched
        for longer than ``max_age_seconds``; return how many were removed. Safe to run in
        every replica at once: something already gone is skipped."""
        ...

    async def aclose(self) -> None: ...


# mlflow server serves these as text/plain (mlflow/utils/mime_type_utils.py). A name without an
# extension is looked up whole and case-sensitively: "MLmodel" is text, while MLflow's
# "mlproject" entry does not match the "MLproject" file, which therefore goes out as binary.
_TEXT_EXTENSIONS = frozenset(
    [
        "txt",
        "log",
        "err",
        "cfg",
        "conf",
        "cnf",
        "cf",
        "ini",
        "properties",
        "prop",
        "hocon",
        "toml",
        "yaml",
        "yml",
        "xml",
        "json",
        "js",
        "py",
        "py3",
        "csv",
        "tsv",
        "md",
        "rst",
        "ipynb",
        "MLmodel",
        "mlproject",
    ]
)


def guess_media_type(name: str) -> str:
    """The Content-Type of a downloaded artifact: mlflow server's mapping.

    Downloads always go out as attachments with ``nosniff``, so no type (text/html, SVG)
    renders on the server's origin. One deliberate difference: a compressed name
    (``x.tar.gz``) is ``application/octet-stream``, since the bytes are the gzip file and not
    the type MLflow guesses from the inner extension.
    """
    extension = posixpath.splitext(name)[1].replace(".", "") or name
    if extension in _TEXT_EXTENSIONS:
        return "text/plain"
    media_type, encoding = mimetypes.guess_type(name)
    if media_type is None or encoding is not None:
        return "application/octet-stream"
    return media_type


def check_part_number(part_number: int) -> None:
    if not 1 <= part_number <= MAX_PARTS:
        raise InvalidParameter(f"part_number must be between 1 and {MAX_PARTS}, got {part_number}.")


def check_parts(parts: Sequence[UploadedPart]) -> None:
    if not parts:
        raise InvalidParameter("A multipart upload needs at least one part to complete.")
    numbers = [p.part_number for p in parts]
    for n in numbers:
        check_part_number(n)
    if numbers != sorted(set(numbers)):
        raise InvalidParameter("Parts must be listed once each, in ascending part_number order.")
