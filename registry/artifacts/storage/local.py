"""Artifacts in a local directory: atomic writes, chunked threaded I/O, no symlink escapes."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import secrets
import shutil
import stat
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from anyio import to_thread

from registry.artifacts.paths import FROZEN_AREA, ArtifactPath
from registry.artifacts.storage.base import (
    IO_CHUNK_BYTES,
    MAX_LIST_ENTRIES,
    MAX_PART_BYTES,
    ArtifactEntry,
    ArtifactReader,
    ArtifactStat,
    UploadedPart,
    check_part_number,
    check_parts,
)
from tracking.core.errors import InvalidParameter, PermissionDenied, ResourceNotFound

T = TypeVar("T")

# Temp files and multipart parts live inside the root (so the final rename never crosses file
# systems, e.g. when the root is a mounted volume) under a name no artifact path may use.
STAGING_DIR = ".mlgate-staging"
_UPLOAD_ID = re.compile(r"^[0-9a-f]{32}$")


async def _run(func: Callable[..., T], *args: Any) -> T:
    return await to_thread.run_sync(func, *args)


class LocalStorage:
    """Files under ``root``; every path is resolved with ``realpath`` and must stay inside it."""

    supports_multipart = True

    def __init__(self, root: Path | str) -> None:
        self.root = os.path.realpath(os.fspath(root))
        self._staging = os.path.join(self.root, STAGING_DIR)
        os.makedirs(self._staging, exist_ok=True)

    # --- path resolution ------------------------------------------------------------------

    def _resolve(self, path: ArtifactPath) -> str:
        """The absolute file name for ``path``, refusing anything that resolves outside root."""
        if not isinstance(path, ArtifactPath):  # only the canonical type may reach the disk
            raise TypeError("storage paths must be ArtifactPath values")
        if path.parts and path.parts[0] == STAGING_DIR:
            raise InvalidParameter(f"Invalid artifact path '{path}': '{STAGING_DIR}' is reserved.")
        candidate = os.path.join(self.root, *path.parts)
        real = os.path.realpath(candidate)
        # A symlink inside the store (planted by hand or by another tool) must not let a request
        # read or write outside it: the same escape as '..', by another route.
        if real != self.root and not real.startswith(self.root + os.sep):
            raise PermissionDenied(f"Artifact path '{path}' resolves outside the artifact store.")
        return candidate

    def _new_temp(self) -> str:
        return os.path.join(self._staging, f"tmp-{secrets.token_hex(16)}")

    # --- single-shot upload ---------------------------------------------------------------

    async def put(self, path: ArtifactPath, chunks: AsyncIterable[bytes]) -> int:
        target = self._resolve(path)
        if path.is_root:
            raise InvalidParameter("An artifact upload needs a file path.")
        temp = self._new_temp()
        size = await self._write_temp(temp, chunks)
        try:
            await _run(self._install, temp, target, path)
        finally:
            await _run(_unlink_quietly, temp)
        return size

    async def _write_temp(
        self,
        temp: str,
        chunks: AsyncIterable[bytes],
        *,
        limit: int | None = None,
        digest: Any = None,
    ) -> int:
        """Stream ``chunks`` into a new temp file in ~1 MiB writes; the temp is removed on error."""
        handle: BinaryIO = await _run(_open_exclusive, temp)
        size = 0
        try:
            buffer = bytearray()
            async for chunk in chunks:
                buffer += chunk
                size += len(chunk)
                if limit is not None and size > limit:
                    raise InvalidParameter(f"A part must not be larger than {limit} bytes.")
                if len(buffer) >= IO_CHUNK_BYTES:
                    await _run(_write, handle, buffer, digest)
                    buffer = bytearray()
            if buffer:
                await _run(_write, handle, buffer, digest)
            await _run(_flush_and_sync, handle)
        except BaseException:
            # Closing flushes what the buffer still holds, which fails again on a full disk:
            # the temp file must go whatever close says (nothing half-written stays behind).
            await _run(_close_quietly, handle)
            await _run(_unlink_quietly, temp)
            raise
        await _run(handle.close)
        return size

    def _install(self, temp: str, target: str, path: ArtifactPath) -> None:
        """Create the parents and atomically rename ``temp`` over ``target`` (blocking)."""
        parent = os.path.dirname(target)
        try:
            os.makedirs(parent, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise InvalidParameter(
                f"Cannot write '{path}': a file exists where a directory is needed."
            ) from None
        # Re-check after creating the parents, in case a symlink appeared on the way.
        self._resolve(path)
        try:
            os.replace(temp, target)
        except IsADirectoryError:
            raise InvalidParameter(f"Cannot write '{path}': it is a directory.") from None
        except OSError as exc:
            if exc.errno in (errno.ENOTDIR, errno.EISDIR, errno.ENOTEMPTY, errno.EEXIST):
                raise InvalidParameter(f"Cannot write '{path}': {exc.strerror}.") from None
            raise

    # --- reads ----------------------------------------------------------------------------

    async def open(self, path: ArtifactPath) -> ArtifactReader:
        target = self._resolve(path)
        handle, size = await _run(_open_regular_file, target, path)

        async def chunks() -> AsyncIterator[bytes]:
            while True:
                data = await _run(handle.read, IO_CHUNK_BYTES)
                if not data:
                    return
                yield data

        async def close() -> None:
            await _run(handle.close)

        return ArtifactReader(size, chunks(), close)

    async def list(self, path: ArtifactPath) -> list[ArtifactEntry]:
        target = self._resolve(path)
        return await _run(_scan_directory, target, path.is_root)

    async def stat(self, path: ArtifactPath) -> ArtifactStat | None:
        target = self._resolve(path)
        return await _run(_stat, target)

    async def delete(self, path: ArtifactPath) -> None:
        target = self._resolve(path)
        if path.is_root:
            raise InvalidParameter("Refusing to delete the whole artifact store.")
        await _run(_remove_tree_or_file, target)

    # --- multipart ------------------------------------------------------------------------

    def _upload_dir(self, path: ArtifactPath, upload_id: str) -> str:
        """The staging folder of an upload, checking the id's shape and that it targets ``path``."""
        if not isinstance(upload_id, str) or not _UPLOAD_ID.match(upload_id):
            # The id becomes a directory name: only our own hex ids are accepted.
            raise ResourceNotFound(f"No multipart upload {upload_id!r} for '{path}'.")
        folder = os.path.join(self._staging, f"mpu-{upload_id}")
        try:
            with open(os.path.join(folder, "target"), encoding="utf-8") as f:
                recorded = f.read()
        except (FileNotFoundError, NotADirectoryError):
            raise ResourceNotFound(f"No multipart upload {upload_id!r} for '{path}'.") from None
        if recorded != path.posix:
            raise ResourceNotFound(f"No multipart upload {upload_id!r} for '{path}'.")
        return folder

    async def create_multipart(self, path: ArtifactPath) -> str:
        self._resolve(path)
        if path.is_root:
            raise InvalidParameter("A multipart upload needs a file path.")
        upload_id = secrets.token_hex(16)
        folder = os.path.join(self._staging, f"mpu-{upload_id}")

        def create() -> None:
            os.mkdir(folder)
            with open(os.path.join(folder, "target"), "w", encoding="utf-8") as f:
                f.write(path.posix)

        await _run(create)
        return upload_id

    async def upload_part(
        self, path: ArtifactPath, upload_id: str, part_number: int, chunks: AsyncIterable[bytes]
    ) -> str:
        check_part_number(part_number)
        folder = await _run(self._upload_dir, path, upload_id)
        temp = self._new_temp()
        # S3-style ETag (MD5 of the part), computed while streaming rather than by a re-read.
        digest = hashlib.md5(usedforsecurity=False)
        await self._write_temp(temp, chunks, limit=MAX_PART_BYTES, digest=digest)
        etag = digest.hexdigest()
        try:
            part = os.path.join(folder, f"part-{part_number:05d}")

            def install() -> None:
                # The ETag file is written after the data, so a listed ETag always has its part.
                os.replace(temp, part)
                with open(f"{part}.etag.tmp", "w", encoding="ascii") as f:
                    f.write(etag)
                os.replace(f"{part}.etag.tmp", f"{part}.etag")

            await _run(install)
        except FileNotFoundError:
            # The upload was completed or aborted while this part was streaming.
            raise ResourceNotFound(f"No multipart upload {upload_id!r} for '{path}'.") from None
        finally:
            await _run(_unlink_quietly, temp)
        return etag

    async def complete_multipart(
        self, path: ArtifactPath, upload_id: str, parts: Sequence[UploadedPart]
    ) -> None:
        check_parts(parts)
        target = self._resolve(path)
        folder = await _run(self._upload_dir, path, upload_id)
        temp = self._new_temp()

        def assemble() -> None:
            files = []
            for p in parts:
                name = os.path.join(folder, f"part-{p.part_number:05d}")
                try:
                    with open(f"{name}.etag", encoding="ascii") as f:
                        stored = f.read()
                except FileNotFoundError:
                    raise InvalidParameter(f"Part {p.part_number} was never uploaded.") from None
                if p.etag.strip('"') != stored:
                    raise InvalidParameter(f"Part {p.part_number} does not match its ETag.")
                files.append(name)
            with _open_exclusive(temp) as out:
                for name in files:
                    with open(name, "rb") as src:
                        shutil.copyfileobj(src, out, IO_CHUNK_BYTES)
                _flush_and_sync(out)
            self._install(temp, target, path)
            shutil.rmtree(folder, ignore_errors=True)

        try:
            await _run(assemble)
        finally:
            await _run(_unlink_quietly, temp)

    async def abort_multipart(self, path: ArtifactPath, upload_id: str) -> None:
        folder = await _run(self._upload_dir, path, upload_id)
        await _run(lambda: shutil.rmtree(folder, ignore_errors=True))

    # --- frozen copies (registry.artifacts.freeze) -----------------------------------------

    async def snapshot(self, source: ArtifactPath, target: ArtifactPath) -> tuple[int, str]:
        src = self._resolve(source)
        dst = self._resolve(target)
        return await _run(self._snapshot, src, dst, source, target)

    def _snapshot(
        self, src: str, dst: str, source: ArtifactPath, target: ArtifactPath
    ) -> tuple[int, str]:
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        self._resolve(target)  # re-check after creating the parents (no symlink on the way)
        try:
            info = os.stat(src, follow_symlinks=False)
        except (FileNotFoundError, NotADirectoryError):
            raise ResourceNotFound(f"Artifact '{source}' does not exist.") from None
        if not stat.S_ISREG(info.st_mode):
            raise ResourceNotFound(f"Artifact '{source}' is not a file.")
        try:
            # A hard link is an atomic snapshot: this store never rewrites a file in place
            # (every upload renames a new file over the old name), so the linked inode's bytes
            # cannot change any more, whatever later happens to the run's folder.
            os.link(src, dst, follow_symlinks=False)
        except (FileNotFoundError, NotADirectoryError):
            raise ResourceNotFound(f"Artifact '{source}' does not exist.") from None
        except OSError as exc:
            if exc.errno not in _NO_HARD_LINK:
                raise
            return _copy_hashing(src, dst, source)
        if not stat.S_ISREG(os.stat(dst, follow_symlinks=False).st_mode):
            # Replaced by something else between the check and the link.
            _unlink_quietly(dst)
            raise ResourceNotFound(f"Artifact '{source}' is not a file.")
        _make_read_only(dst)
        return _hash_local_file(dst)

    async def publish_tree(
        self, staged: ArtifactPath, final: ArtifactPath, expected: Mapping[str, tuple[int, str]]
    ) -> None:
        src = self._resolve(staged)
        dst = self._resolve(final)

        def move() -> None:
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            self._resolve(final)
            if _is_directory(dst):
                # The same digest was frozen before: the bytes are already there, so nothing
                # staged needs to be made durable. A tree is only ever visible here after its
                # publisher fsynced its entries and renamed it in whole; the one step that may
                # not be durable yet is that rename (its publisher may not have reached its
                # fsync of the parent), so that fsync is done here too before answering.
                _fsync_directory(os.path.dirname(dst))
                _remove_tree_or_file(src)
                return
            # The staged files' data is on disk already (uploads are fsynced; so are copies);
            # make their new directory entries durable before the tree becomes visible.
            for folder, _, _ in os.walk(src):
                _fsync_directory(folder)
            try:
                # A rename is atomic: readers see no tree or the whole tree, never part of it.
                os.rename(src, dst)
            except OSError as exc:
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
                # The same digest was frozen before: the bytes are already there.
                _remove_tree_or_file(src)
                return
            _fsync_directory(os.path.dirname(dst))

        await _run(move)

    async def sweep_stale_uploads(self, max_age_seconds: float) -> int:
        cutoff = time.time() - max_age_seconds
        removed = await _run(_sweep_staging, self._staging, cutoff)
        frozen_staging = os.path.join(self.root, FROZEN_AREA, "staging")
        return removed + await _run(_sweep_frozen_staging, frozen_staging, cutoff)

    async def aclose(self) -> None:
        return None


# --- blocking helpers (run in worker threads) -----------------------------------------------

# os.link failures that mean "no hard links here" (another file system, a file system without
# links, too many links), answered by a hashed copy instead.
_NO_HARD_LINK = {errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP}


def _hash_local_file(name: str) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with open(name, "rb", buffering=0) as f:
        while data := f.read(IO_CHUNK_BYTES):
            digest.update(data)
            size += len(data)
    return size, digest.hexdigest()


def _copy_hashing(src: str, dst: str, source: ArtifactPath) -> tuple[int, str]:
    """Copy ``src`` to the new file ``dst``, hashing the bytes as they are written."""
    handle, _ = _open_regular_file(src, source)
    digest = hashlib.sha256()
    size = 0
    try:
        with handle, _open_exclusive(dst) as out:
            while data := handle.read(IO_CHUNK_BYTES):
                out.write(data)
                digest.update(data)
                size += len(data)
            _flush_and_sync(out)
    except BaseException:
        _unlink_quietly(dst)
        raise
    _make_read_only(dst)
    return size, digest.hexdigest()


def _make_read_only(name: str) -> None:
    # Belt and braces against an operator's in-place edit; not owning the file is no error.
    with contextlib.suppress(PermissionError):
        os.chmod(name, 0o444)


def _is_directory(name: str) -> bool:
    """Whether ``name`` is a directory itself (a symlink to one is not)."""
    try:
        return stat.S_ISDIR(os.lstat(name).st_mode)
    except (FileNotFoundError, NotADirectoryError):
        return False


def _fsync_directory(name: str) -> None:
    fd = os.open(name, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _open_exclusive(name: str) -> BinaryIO:
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
    # Buffered: a raw write may be short, BufferedWriter.write always writes everything.
    return os.fdopen(fd, "wb")


def _write(handle: BinaryIO, data: bytearray, digest: Any) -> None:
    handle.write(data)
    if digest is not None:
        digest.update(data)


def _flush_and_sync(handle: BinaryIO) -> None:
    handle.flush()
    os.fsync(handle.fileno())


def _close_quietly(handle: BinaryIO) -> None:
    with contextlib.suppress(OSError):
        handle.close()


def _newest_mtime(entry: os.DirEntry[str]) -> float | None:
    """When ``entry`` (a temp file, or a multipart folder and its parts) last changed."""
    try:
        newest = entry.stat(follow_symlinks=False).st_mtime
        if entry.is_dir(follow_symlinks=False):
            with os.scandir(entry.path) as inner:
                for item in inner:
                    with contextlib.suppress(FileNotFoundError):
                        newest = max(newest, item.stat(follow_symlinks=False).st_mtime)
    except FileNotFoundError:
        return None  # another replica's sweep (or the upload itself) just removed it
    return newest


def _sweep_staging(staging: str, cutoff: float) -> int:
    """Remove temp files and multipart folders in ``staging`` unchanged since ``cutoff``.

    A live upload writes its temp file (or adds parts to its folder) as its body arrives, so
    its modification time is never older than its last chunk: only files nobody has written
    for the whole age go, e.g. those of a server killed mid-upload. Every replica may run this
    at once: each removal tolerates the file being gone already.
    """
    removed = 0
    try:
        iterator = os.scandir(staging)
    except FileNotFoundError:
        return 0
    with iterator:
        entries = [e for e in iterator if e.name.startswith(("tmp-", "mpu-"))]
    for entry in entries:
        newest = _newest_mtime(entry)
        if newest is None or newest >= cutoff:
            continue
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
        else:
            _unlink_quietly(entry.path)
        removed += 1
    return removed


def _sweep_frozen_staging(staging: str, cutoff: float) -> int:
    """Remove freezes a killed server left half-made (``mlgate-frozen/staging/<id>``).

    Hard-linked files keep their source's old mtime, so age is read from the change time of
    every entry (linking a file, or adding one to a folder, updates it): a freeze in progress
    always has an entry changed after it began.
    """
    removed = 0
    try:
        with os.scandir(staging) as iterator:
            entries = [e for e in iterator if e.is_dir(follow_symlinks=False)]
    except FileNotFoundError:
        return 0
    for entry in entries:
        newest = 0.0
        try:
            for folder, dirs, files in os.walk(entry.path):
                for name in [folder, *(os.path.join(folder, n) for n in dirs + files)]:
                    with contextlib.suppress(FileNotFoundError):
                        info = os.lstat(name)
                        newest = max(newest, info.st_ctime, info.st_mtime)
        except FileNotFoundError:
            continue
        if newest and newest < cutoff:
            shutil.rmtree(entry.path, ignore_errors=True)
            removed += 1
    return removed


def _unlink_quietly(name: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(name)


def _open_regular_file(target: str, path: ArtifactPath) -> tuple[BinaryIO, int]:
    # O_NOFOLLOW: the last component must not be a symlink (the resolve check ran just before).
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(target, flags)
    except (FileNotFoundError, NotADirectoryError):
        raise ResourceNotFound(f"Artifact '{path}' does not exist.") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise PermissionDenied(f"Artifact '{path}' is a symbolic link.") from None
        raise
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise ResourceNotFound(f"Artifact '{path}' is not a file.")
    return os.fdopen(fd, "rb", buffering=0), info.st_size


def _scan_directory(target: str, is_root: bool) -> list[ArtifactEntry]:
    entries: list[ArtifactEntry] = []
    try:
        iterator = os.scandir(target)
    except (FileNotFoundError, NotADirectoryError):
        return []
    with iterator:
        for entry in iterator:
            if is_root and entry.name == STAGING_DIR:
                continue
            try:
                ArtifactPath((entry.name,))
            except InvalidParameter:
                continue  # not a name this API could have written, nor could address
            if entry.is_dir(follow_symlinks=False):
                entries.append(ArtifactEntry(entry.name, True))
            elif entry.is_file(follow_symlinks=False):
                size = entry.stat(follow_symlinks=False).st_size
                entries.append(ArtifactEntry(entry.name, False, size))
            else:
                continue  # symlinks, sockets, devices are not artifacts
            if len(entries) > MAX_LIST_ENTRIES:
                raise InvalidParameter(
                    f"The directory has more than {MAX_LIST_ENTRIES} entries; list a subdirectory."
                )
    entries.sort(key=lambda e: e.name)
    return entries


def _stat(target: str) -> ArtifactStat | None:
    try:
        info = os.stat(target, follow_symlinks=False)
    except (FileNotFoundError, NotADirectoryError):
        return None
    if stat.S_ISDIR(info.st_mode):
        return ArtifactStat(is_dir=True)
    if stat.S_ISREG(info.st_mode):
        return ArtifactStat(is_dir=False, size=info.st_size)
    return None


def _remove_tree_or_file(target: str) -> None:
    try:
        info = os.stat(target, follow_symlinks=False)
    except (FileNotFoundError, NotADirectoryError):
        return
    if not stat.S_ISDIR(info.st_mode):
        _unlink_quietly(target)  # a symlink is removed itself, never followed
        return
    # rmtree never follows symlinks; a concurrent delete of the same tree only races on files
    # that are already gone, so retry once before reporting.
    for attempt in (1, 2):
        try:
            shutil.rmtree(target)
            return
        except FileNotFoundError:
            if attempt == 2:
                return
