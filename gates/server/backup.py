"""A consistent copy of the embedded default, and its restore (``mlgate backup|restore``).

The embedded default is a SQLite database and a local artifact folder. The database is copied
with SQLite's online backup API (one read transaction: a consistent snapshot while the server
keeps writing, WAL included, which a plain file copy is not), then the artifact folder, then a
signed audit checkpoint of exactly the snapshot's chain head. Database first: a registered
version's files are written (and frozen) before its row commits and never change after, so every
version in the snapshot finds its files in the later folder copy; the folder may hold a few files
newer than the snapshot, which nothing references. PostgreSQL and S3 have their own tools
(pg_dump, bucket versioning), see README's Operations section.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tracking.core.settings import Settings

DATABASE_FILE = "mlgate.db"
ARTIFACTS_DIR = "artifacts"
MANIFEST_FILE = "backup.json"
CHECKPOINT_FILE = "audit-checkpoint.json"
# Upload temp files and multipart parts: never part of a registered version.
SKIPPED_DIRS = {".mlgate-staging"}
FORMAT = "mlgate.backup.v1"


class BackupError(ValueError):
    """A backup or restore that cannot be made as asked (the message says why)."""


def sqlite_file(database_url: str) -> Path:
    """The file of a ``sqlite:///`` URL, or BackupError naming what to use instead."""
    for prefix in ("sqlite:///", "sqlite+aiosqlite:///"):
        if database_url.startswith(prefix):
            path = database_url[len(prefix) :].split("?", 1)[0]
            if path and ":memory:" not in path:
                return Path(path)
    raise BackupError(
        "mlgate backup copies the embedded SQLite database; for PostgreSQL use pg_dump "
        "(README, Operations: back up, restore and upgrade)"
    )


def local_folder(destination: str) -> Path:
    destination = destination.strip()
    if destination.startswith("file://"):
        return Path(destination[len("file://") :])
    if "://" in destination:
        raise BackupError(
            f"the artifact store {destination!r} is not a local folder; back up an S3 bucket "
            "with bucket versioning or `aws s3 sync` (README, Operations)"
        )
    return Path(destination)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def snapshot_database(source: Path, target: Path) -> None:
    """Copy a live SQLite database with the online backup API, in one step (one snapshot)."""
    if not source.is_file():
        raise BackupError(f"no database at {source}")
    src = sqlite3.connect(source, timeout=60)
    try:
        dst = sqlite3.connect(target)
        try:
            # pages=-1: the whole database in one read transaction, so the copy is one
            # consistent moment even while writers commit (WAL readers do not block them).
            src.backup(dst, pages=-1)
            dst.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            (result,) = dst.execute("PRAGMA integrity_check").fetchone()
        finally:
            dst.close()
    finally:
        src.close()
    if result != "ok":
        raise BackupError(f"the copied database fails its integrity check: {result}")
    for suffix in ("-wal", "-shm"):
        Path(f"{target}{suffix}").unlink(missing_ok=True)


def copy_folder(source: Path, target: Path) -> tuple[int, int]:
    """Copy every file under ``source`` (staging excluded); (files, bytes). A file removed
    while copying (an upload's temp file) is skipped."""
    files = size = 0
    target.mkdir(parents=True, exist_ok=True)
    for root, dirs, names in os.walk(source):
        dirs[:] = [d for d in dirs if not (Path(root) == source and d in SKIPPED_DIRS)]
        relative = Path(root).relative_to(source)
        (target / relative).mkdir(parents=True, exist_ok=True)
        for name in names:
            try:
                shutil.copy2(Path(root) / name, target / relative / name)
            except FileNotFoundError:
                continue
            files += 1
            size += (target / relative / name).stat().st_size
    return files, size


@dataclass(frozen=True)
class BackupReport:
    output: Path
    audit_seq: int
    audit_head: str
    checkpoint: str  # how the checkpoint was made
    files: int
    bytes: int


async def _checkpoint_snapshot(
    settings: Settings, database: Path, artifacts: Path, store_latest: Any
) -> tuple[Any, int, str, str]:
    """Sign the snapshot's own head with the server key (when this process can read it), else
    keep the store's newest checkpoint read before the snapshot (the snapshot extends it)."""
    from gates.audit import checkpoints
    from registry.artifacts.storage.local import LocalStorage
    from tracking.core.db import Database
    from tracking.core.signing import SigningKeyError, load_private_key

    db = Database(f"sqlite:///{database.as_posix()}", pool_size=1)
    try:
        seq, head = await checkpoints.current_head(db)
    finally:
        await db.dispose()
    storage = LocalStorage(artifacts)
    try:
        try:
            key = load_private_key(settings.signing_key_path)
        except SigningKeyError:
            key = None
        if key is not None:
            checkpoint = checkpoints.sign_head(key, seq, head)
            await checkpoints.publish_key(storage, key)
            how = f"signed now over the snapshot's head with key {key.key_id}"
        elif store_latest is not None:
            checkpoint = store_latest
            how = "the artifact store's newest checkpoint, taken before the snapshot"
        else:
            return None, seq, head, "none: no signing key readable and no checkpoint in the store"
        body = checkpoint.to_json().encode("ascii")
        await storage.put(checkpoints._history_path(checkpoint), checkpoints._one(body))
        # Forced: the folder copy may hold a later latest.json than the snapshot reaches.
        await storage.put(checkpoints.LATEST, checkpoints._one(body))
    finally:
        await storage.aclose()
    return checkpoint, seq, head, how


async def _store_latest(folder: Path) -> Any:
    from gates.audit import checkpoints
    from registry.artifacts.storage.local import LocalStorage

    storage = LocalStorage(folder)
    try:
        return await checkpoints.read_latest(storage)
    except checkpoints.CheckpointError:
        return None
    finally:
        await storage.aclose()


def _drop_checkpoints_after(artifacts: Path, seq: int) -> None:
    """Checkpoints of entries past the snapshot name a chain the restore does not have."""
    from gates.audit import checkpoints

    for file in artifacts.joinpath(*checkpoints.CHECKPOINTS_DIR.parts).glob("*.json"):
        number = file.name.split("-", 1)[0]
        if number.isdigit() and int(number) > seq:
            file.unlink()


def backup(settings: Settings, output: Path) -> BackupReport:
    database = sqlite_file(settings.database_url)
    folder = local_folder(settings.artifacts_destination)
    if output.exists() and any(output.iterdir()):
        raise BackupError(f"{output} is not empty; back up into a new folder")
    output.mkdir(parents=True, exist_ok=True)
    # Read before the snapshot, so the snapshot's chain reaches (extends) it.
    store_latest = asyncio.run(_store_latest(folder)) if folder.is_dir() else None
    snapshot_database(database, output / DATABASE_FILE)
    files, size = copy_folder(folder, output / ARTIFACTS_DIR) if folder.is_dir() else (0, 0)
    checkpoint, seq, head, how = asyncio.run(
        _checkpoint_snapshot(settings, output / DATABASE_FILE, output / ARTIFACTS_DIR, store_latest)
    )
    _drop_checkpoints_after(output / ARTIFACTS_DIR, seq)
    if checkpoint is not None:
        (output / CHECKPOINT_FILE).write_text(checkpoint.to_json() + "\n", encoding="ascii")
    manifest = {
        "format": FORMAT,
        "created": datetime.now(tz=UTC).isoformat(timespec="seconds"),
        "source_database": str(database),
        "source_artifacts": str(folder),
        "database_sha256": _sha256(output / DATABASE_FILE),
        "audit_head_seq": seq,
        "audit_head_hash": head,
        "audit_checkpoint": how,
        "artifact_files": files,
        "artifact_bytes": size,
    }
    (output / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return BackupReport(output, seq, head, how, files, size)


def restore(source: Path, settings: Settings) -> tuple[Path, Path]:
    """Copy a backup into the (new, empty) database file and artifact folder of ``settings``."""
    try:
        manifest = json.loads((source / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BackupError(f"{source} is not an mlgate backup ({MANIFEST_FILE}: {exc})") from None
    if manifest.get("format") != FORMAT:
        raise BackupError(f"{source}: unknown backup format {manifest.get('format')!r}")
    if _sha256(source / DATABASE_FILE) != manifest.get("database_sha256"):
        raise BackupError(f"{source / DATABASE_FILE} does not match the backup's recorded digest")
    database = sqlite_file(settings.database_url)
    folder = local_folder(settings.artifacts_destination)
    for path in (database, Path(f"{database}-wal")):
        if path.exists():
            raise BackupError(f"{path} exists; restore into a new location, never over a database")
    if folder.exists() and any(folder.iterdir()):
        raise BackupError(f"{folder} is not empty; restore into a new artifact folder")
    database.parent.mkdir(parents=True, exist_ok=True)
    partial = database.with_name(database.name + ".restoring")
    shutil.copyfile(source / DATABASE_FILE, partial)
    os.replace(partial, database)
    if (source / ARTIFACTS_DIR).is_dir():
        copy_folder(source / ARTIFACTS_DIR, folder)
    else:
        folder.mkdir(parents=True, exist_ok=True)
    return database, folder
