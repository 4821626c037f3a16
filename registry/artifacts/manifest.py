"""File manifests of artifact trees: each file's sha256 and size, and one digest over them all.

A model version's manifest is taken when the version is registered and checked again by
``mlgate verify``; systems that do not run Python recompute the digest from the files served
by the resolve endpoint. The format is fixed (it is stored, so it can never change meaning):

**Manifest line**, one per regular file under the version's artifact root::

    "<sha256>  <size>  <path>\\n"

- ``<sha256>``: the 64 lowercase hex digits of the SHA-256 of the file's bytes;
- ``<size>``: the file's length in bytes, in decimal, no sign and no leading zeros;
- ``<path>``: the file's path relative to the root, segments joined by ``/``, UTF-8, with no
  leading ``/`` or ``./`` (artifact paths never contain control characters, so no escaping);
- the three fields are separated by exactly two spaces (0x20 0x20); every line ends in ``\\n``.

**Manifest digest**: the lowercase hex SHA-256 of the lines, UTF-8 encoded, sorted bytewise
(as ``LC_ALL=C sort`` does; the lines start with the file hashes, so this is *not* path order)
and concatenated. A tree with no files has no digest (``None``).

For a local artifact store, this shell pipeline, run in the version's root, prints the same
digest::

    find . -type f | sed 's|^\\./||' | while IFS= read -r f; do
      printf '%s  %s  %s\\n' "$(sha256sum < "$f" | cut -c1-64)" "$(stat -c %s "$f")" "$f"
    done | LC_ALL=C sort | sha256sum | cut -c1-64
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from anyio import to_thread

from registry.artifacts.paths import ArtifactPath
from registry.artifacts.storage.base import ArtifactStorage
from tracking.core.errors import InvalidParameter, ResourceNotFound

# A version with more files than this is refused at registration: the manifest is stored row by
# row and served whole by the resolve endpoint, so it must stay bounded. Model folders hold tens
# of files; a tree of thousands is almost certainly the wrong source.
MAX_MANIFEST_FILES = 10_000
# Files hashed at once: overlaps the round trips of an S3 store without flooding it.
HASH_CONCURRENCY = 4
# Chunks at least this large are hashed on a worker thread (hashlib releases the GIL), so a
# multi-GiB file does not hold the event loop for the seconds its hashing takes.
_THREADED_HASH_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class ManifestEntry:
    """One file: its path relative to the manifest's root, its size and its sha256 (hex)."""

    path: str
    size: int
    sha256: str

    @property
    def line(self) -> str:
        return f"{self.sha256}  {self.size}  {self.path}\n"


def manifest_digest(entries: Iterable[ManifestEntry]) -> str | None:
    """The digest over ``entries`` in the documented format; None for an empty manifest."""
    lines = sorted(entry.line.encode("utf-8") for entry in entries)
    if not lines:
        return None
    digest = hashlib.sha256()
    for line in lines:
        digest.update(line)
    return digest.hexdigest()


async def hash_file(storage: ArtifactStorage, path: ArtifactPath) -> tuple[int, str]:
    """Stream one stored file through SHA-256: (bytes read, hex digest). Never reads it whole."""
    reader = await storage.open(path)
    digest = hashlib.sha256()
    size = 0
    async for chunk in reader:
        size += len(chunk)
        if len(chunk) >= _THREADED_HASH_BYTES:
            await to_thread.run_sync(digest.update, chunk)
        else:
            digest.update(chunk)
    return size, digest.hexdigest()


async def list_files(
    storage: ArtifactStorage, root: ArtifactPath, max_files: int
) -> list[ArtifactPath]:
    """Every file under ``root`` (relative to it), depth first, refusing more than ``max_files``."""
    files: list[ArtifactPath] = []
    pending = [ArtifactPath.root()]
    while pending:
        directory = pending.pop()
        for entry in await storage.list(root.joinpath(directory)):
            child = ArtifactPath((*directory.parts, entry.name))
            if entry.is_dir:
                pending.append(child)
                continue
            files.append(child)
            if len(files) > max_files:
                raise InvalidParameter(
                    f"'{root}' holds more than {max_files} files; a model version can have at "
                    f"most {max_files}."
                )
    return files


async def fingerprint_tree(
    storage: ArtifactStorage, root: ArtifactPath, *, max_files: int = MAX_MANIFEST_FILES
) -> list[ManifestEntry]:
    """The manifest of every file under ``root`` in ``storage``, sorted by path.

    Files are streamed (a few at a time), never read whole. A file that disappears between the
    listing and its read is left out: the manifest describes what could be read.
    """
    files = await list_files(storage, root, max_files)
    found: list[ManifestEntry] = []
    queue = iter(files)

    async def worker() -> None:
        for relative in queue:  # shared iterator: each file goes to exactly one worker
            try:
                size, sha256 = await hash_file(storage, root.joinpath(relative))
            except ResourceNotFound:
                continue
            found.append(ManifestEntry(relative.posix, size, sha256))

    async with asyncio.TaskGroup() as group:
        for _ in range(min(HASH_CONCURRENCY, len(files))):
            group.create_task(worker())
    return sorted(found, key=lambda e: e.path.encode("utf-8"))


FileStatus = Literal["OK", "MISMATCH", "MISSING", "EXTRA"]


@dataclass(frozen=True, slots=True)
class FileCheck:
    """One path's verdict: ``expected`` is the recorded entry, ``actual`` what is stored now."""

    path: str
    status: FileStatus
    expected: ManifestEntry | None = None
    actual: ManifestEntry | None = None


def compare_manifests(
    recorded: Sequence[ManifestEntry], actual: Sequence[ManifestEntry]
) -> list[FileCheck]:
    """Per-path verdicts, sorted by path: OK, MISMATCH (hash or size), MISSING or EXTRA."""
    now = {e.path: e for e in actual}
    was = {e.path: e for e in recorded}
    checks: list[FileCheck] = []
    for path in sorted(now.keys() | was.keys(), key=lambda p: p.encode("utf-8")):
        expected, found = was.get(path), now.get(path)
        if found is None:
            checks.append(FileCheck(path, "MISSING", expected, None))
        elif expected is None:
            checks.append(FileCheck(path, "EXTRA", None, found))
        elif (expected.sha256, expected.size) == (found.sha256, found.size):
            checks.append(FileCheck(path, "OK", expected, found))
        else:
            checks.append(FileCheck(path, "MISMATCH", expected, found))
    return checks
