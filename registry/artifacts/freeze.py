"""Frozen copies of model version files: content-addressed, hashed from the copy, unwritable.

When a version is registered, the registry copies its files out of the run's (or logged
model's) folder into an area of the store that no client request may write or delete (the
artifact proxy refuses every write below :data:`~registry.artifacts.paths.FROZEN_AREA` with
403), and serves the version from there. Whatever happens to the source folder afterwards (a
slow upload finishing, a delete) cannot reach a registered version.

Layout, below the store's root (the same on every backend)::

    mlgate-frozen/sha256/<manifest digest>/<path>   one tree per distinct set of bytes
    mlgate-frozen/empty                             the (always empty) root of a version
                                                    registered over a folder with no files
    mlgate-frozen/staging/<random>/<path>           a freeze in progress

Each file is snapshotted into a fresh staging folder (a hard link locally, where possible, or
a hashed copy; a server-side copy pinned to the source's ETag on S3), and its sha256 is taken
from the snapshot, never from the source: a concurrent upload to the source cannot make the
recorded digest differ from the stored bytes. The staged tree is then published under its
manifest digest (an atomic rename locally; copies checked by ETag or by re-hashing on S3).
Versions with the same bytes share one tree, so a version's delete leaves its tree in place.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from dataclasses import dataclass

from registry.artifacts.manifest import (
    HASH_CONCURRENCY,
    MAX_MANIFEST_FILES,
    ManifestEntry,
    list_files,
    manifest_digest,
)
from registry.artifacts.paths import FROZEN_AREA, ArtifactPath
from registry.artifacts.storage.base import ArtifactStorage
from tracking.core.errors import MlflowError, ResourceNotFound

EMPTY_ROOT = ArtifactPath((FROZEN_AREA, "empty"))


def frozen_root(digest: str | None) -> ArtifactPath:
    """Where the tree with manifest digest ``digest`` is kept (``None``: no files)."""
    return EMPTY_ROOT if digest is None else ArtifactPath((FROZEN_AREA, "sha256", digest))


def tree_root_of(location: ArtifactPath) -> ArtifactPath:
    """The root of the frozen tree a version's ``location`` is in: the location itself, or
    its tree's root when it names the one file of a version registered over a file."""
    parts = location.parts
    if len(parts) > 3 and parts[:2] == (FROZEN_AREA, "sha256"):
        return ArtifactPath(parts[:3])
    return location


@dataclass(frozen=True, slots=True)
class FrozenTree:
    """A frozen copy: its root in the store and the manifest of the bytes stored there.

    ``file`` is set when the source was one file, not a folder: the copy's root then holds
    that file under its own name, and the version is served at ``location`` (the file), as
    MLflow serves a version registered over a file.
    """

    root: ArtifactPath
    files: tuple[ManifestEntry, ...]
    file: str | None = None

    @property
    def digest(self) -> str | None:
        return manifest_digest(self.files)

    @property
    def location(self) -> ArtifactPath:
        return self.root if self.file is None else self.root.joinpath(self.file)


async def freeze_tree(
    storage: ArtifactStorage, source: ArtifactPath, *, max_files: int = MAX_MANIFEST_FILES
) -> FrozenTree:
    """Copy every file under ``source`` into the frozen area; return the copy's manifest.

    A file that disappears between the listing and its copy is left out, like a file that
    appears after the listing: the manifest describes exactly the bytes that were copied.
    """
    files = await list_files(storage, source, max_files)
    single: str | None = None
    if not files and not source.is_root:
        stat = await storage.stat(source)
        if stat is not None and not stat.is_dir:
            # The source is one file (``.../artifacts/model.onnx``): its copy is a tree of
            # that one file, copied like any other.
            single = source.name
            source = source.parent
            files = [ArtifactPath((single,))]
    if not files:
        # Nothing to copy: no staging folder is made, so none is removed (one thread trip
        # fewer for a run without files).
        return FrozenTree(frozen_root(None), ())
    staging = ArtifactPath((FROZEN_AREA, "staging", secrets.token_hex(16)))
    found: list[ManifestEntry] = []
    queue = iter(files)
    published = False

    async def worker() -> None:
        for relative in queue:  # shared iterator: each file goes to exactly one worker
            try:
                size, sha256 = await storage.snapshot(
                    source.joinpath(relative), staging.joinpath(relative)
                )
            except ResourceNotFound:
                continue
            found.append(ManifestEntry(relative.posix, size, sha256))

    try:
        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(min(HASH_CONCURRENCY, len(files))):
                    group.create_task(worker())
        except ExceptionGroup as failed:
            # The first worker's error is the answer (e.g. 503 storage unavailable).
            raise failed.exceptions[0] from None
        entries = tuple(sorted(found, key=lambda e: e.path.encode("utf-8")))
        digest = manifest_digest(entries)
        root = frozen_root(digest)
        if digest is not None:
            expected = {e.path: (e.size, e.sha256) for e in entries}
            await storage.publish_tree(staging, root, expected)
            published = True
    finally:
        # Nothing is left behind by a failed freeze. A published one has no staging left
        # (publish_tree moves or removes it), so it is not asked to delete it again.
        if not published:
            with contextlib.suppress(MlflowError, OSError):
                await storage.delete(staging)
    # (A file that went away before its copy leaves the empty tree, served as a folder.)
    return FrozenTree(root, entries, single if entries else None)
