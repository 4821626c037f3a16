"""Signed checkpoints of the audit chain's head, kept apart from the database.

A checkpoint is the server's Ed25519 signature over ``{seq, head_hash, time, key_id}``. It is
written into the artifact store under the reserved ``_mlgate/`` prefix (which the artifact
proxy refuses to write or delete), optionally into a directory, and served by
``GET /api/2.0/mlgate/audit/checkpoint``. The hash chain alone catches a changed or removed row
*inside* the chain; a checkpoint also catches a cut tail (the newest rows deleted) and a chain
rewritten and re-hashed up to a signed point, because the database no longer reaches the
signed ``seq`` with the signed hash.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gates.audit import service, store
from registry.artifacts.paths import RESERVED_ROOT, ArtifactPath
from registry.artifacts.storage import ArtifactStorage
from tracking.core.background import PollingLoop
from tracking.core.clock import now_ms
from tracking.core.db import Database
from tracking.core.errors import InvalidState, ResourceNotFound
from tracking.core.signing import PublicKey, SigningKey, SigningKeyError, public_key_from_pem

log = logging.getLogger("mlgate.audit.checkpoints")

# The signature's purpose label: a checkpoint signature can never pass as another statement.
PURPOSE = "mlgate.audit-checkpoint.v1"
CHECKPOINTS_DIR = ArtifactPath((RESERVED_ROOT, "audit", "checkpoints"))
LATEST = CHECKPOINTS_DIR.joinpath("latest.json")
KEYS_DIR = ArtifactPath((RESERVED_ROOT, "keys"))
# Bigger than any checkpoint or PEM public key; a bigger file is not ours.
MAX_FILE_BYTES = 64 * 1024


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or parsed (not the same as one that fails to verify)."""


@dataclass(frozen=True)
class Checkpoint:
    seq: int
    head_hash: str
    time: int  # epoch ms when it was signed
    key_id: str
    signature: str

    def statement(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "head_hash": self.head_hash,
            "time": self.time,
            "key_id": self.key_id,
        }

    def to_dict(self) -> dict[str, Any]:
        return {**self.statement(), "signature": self.signature}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def parse(cls, data: bytes | str | dict[str, Any]) -> Checkpoint:
        try:
            obj = data if isinstance(data, dict) else json.loads(data)
        except ValueError as exc:
            raise CheckpointError(f"not JSON: {exc}") from None
        if not isinstance(obj, dict):
            raise CheckpointError("not a JSON object")
        seq, head_hash, at = obj.get("seq"), obj.get("head_hash"), obj.get("time")
        key_id, signature = obj.get("key_id"), obj.get("signature")
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
            raise CheckpointError("'seq' must be a non-negative integer")
        if not isinstance(at, int) or isinstance(at, bool):
            raise CheckpointError("'time' must be an integer (epoch milliseconds)")
        for name, value in (("head_hash", head_hash), ("key_id", key_id), ("signature", signature)):
            if not isinstance(value, str) or not value:
                raise CheckpointError(f"'{name}' must be a non-empty string")
        return cls(seq, str(head_hash), at, str(key_id), str(signature))


def sign_head(key: SigningKey, seq: int, head_hash: str) -> Checkpoint:
    unsigned = Checkpoint(seq, head_hash, now_ms(), key.key_id, "")
    return Checkpoint(
        seq, head_hash, unsigned.time, key.key_id, key.sign(PURPOSE, unsigned.statement())
    )


class ChainDiverged(InvalidState):
    """The database's chain no longer passes through the newest checkpoint: never sign it."""


async def current_head(db: Database, previous: Checkpoint | None = None) -> tuple[int, str]:
    """The chain's head; with ``previous``, only if the chain still passes through it.

    Both are read in one snapshot. Without this check, a cut tail followed by new appends
    would reach past the old checkpoint and get a fresh signature that hides the cut.
    """
    async with db.read() as s:
        head = await store.head(s)
        seq, head_hash = head if head is not None else (0, service.GENESIS_HASH)
        if previous is None or previous.seq == 0:
            return seq, head_hash
        found = await store.hash_at(s, previous.seq)
    if found != previous.head_hash:
        what = "is missing" if found is None else f"hashes to {found}"
        raise ChainDiverged(
            f"The audit chain no longer passes through the newest checkpoint (seq "
            f"{previous.seq}, hash {previous.head_hash}): entry {previous.seq} {what}. "
            "Refusing to sign over it; run `mlgate audit verify --checkpoint store`."
        )
    return seq, head_hash


async def sign_current_head(
    db: Database, key: SigningKey, previous: Checkpoint | None = None
) -> Checkpoint:
    seq, head_hash = await current_head(db, previous)
    return sign_head(key, seq, head_hash)


async def checkpoint_now(
    db: Database, storage: ArtifactStorage, key: SigningKey, directory: Path | None
) -> Checkpoint:
    """Sign the head and write it out, if the chain still extends the newest checkpoint."""
    try:
        latest = await read_latest(storage)
    except CheckpointError:
        latest = None
    checkpoint = await sign_current_head(db, key, latest)
    await publish(storage, key, checkpoint, directory)
    return checkpoint


# --- where checkpoints are kept ------------------------------------------------------------------


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _read(storage: ArtifactStorage, path: ArtifactPath) -> bytes | None:
    try:
        reader = await storage.open(path)
    except ResourceNotFound:
        return None
    if reader.size > MAX_FILE_BYTES:
        await reader.aclose()
        raise CheckpointError(f"{path.posix} is larger than any checkpoint")
    out = bytearray()
    async for chunk in reader:
        out.extend(chunk)
    return bytes(out)


def _history_path(checkpoint: Checkpoint) -> ArtifactPath:
    # Zero-padded, so a listing sorts by seq; the hash in the name means a checkpoint of a
    # different chain at the same seq never replaces an earlier one.
    return CHECKPOINTS_DIR.joinpath(f"{checkpoint.seq:020d}-{checkpoint.head_hash[:16]}.json")


async def publish_key(storage: ArtifactStorage, key: SigningKey) -> None:
    """Keep the public key by id in the store, so old checkpoints verify after a rotation."""
    path = KEYS_DIR.joinpath(f"{key.key_id}.pem")
    if await storage.stat(path) is None:
        await storage.put(path, _one(key.public.pem.encode("ascii")))


async def read_latest(storage: ArtifactStorage) -> Checkpoint | None:
    data = await _read(storage, LATEST)
    return None if data is None else Checkpoint.parse(data)


async def write_to_store(storage: ArtifactStorage, checkpoint: Checkpoint) -> None:
    """One file per signed seq, and ``latest.json`` unless a later checkpoint is already there.

    Replicas may write at the same moment; each file is written whole (atomic rename or S3
    PUT), so a reader sees one valid checkpoint or another, never a mix.
    """
    body = checkpoint.to_json().encode("ascii")
    await storage.put(_history_path(checkpoint), _one(body))
    try:
        latest = await read_latest(storage)
    except CheckpointError:
        latest = None  # unreadable: replace it
    if latest is None or latest.seq <= checkpoint.seq:
        await storage.put(LATEST, _one(body))


def write_to_directory(directory: Path, checkpoint: Checkpoint) -> None:
    """``latest.json`` (replaced atomically), and a line per checkpoint in ``checkpoints.jsonl``."""
    directory.mkdir(parents=True, exist_ok=True)
    line = checkpoint.to_json()
    with (directory / "checkpoints.jsonl").open("a", encoding="ascii") as out:
        out.write(line + "\n")
    latest = directory / "latest.json"
    with contextlib.suppress(OSError, CheckpointError):
        if Checkpoint.parse(latest.read_bytes()).seq > checkpoint.seq:
            return
    fd, tmp = tempfile.mkstemp(prefix=".checkpoint-", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(line + "\n")
        os.replace(tmp, latest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


async def publish(
    storage: ArtifactStorage, key: SigningKey, checkpoint: Checkpoint, directory: Path | None
) -> None:
    await publish_key(storage, key)
    await write_to_store(storage, checkpoint)
    if directory is not None:
        write_to_directory(directory, checkpoint)


async def store_public_keys(storage: ArtifactStorage) -> dict[str, PublicKey]:
    """Every public key kept in the store, by key id (a file not named by its id is ignored)."""
    keys: dict[str, PublicKey] = {}
    for entry in await storage.list(KEYS_DIR):
        if entry.is_dir or not entry.name.endswith(".pem"):
            continue
        data = await _read(storage, KEYS_DIR.joinpath(entry.name))
        if data is None:
            continue
        try:
            public = public_key_from_pem(data)
        except SigningKeyError:
            continue
        if entry.name == f"{public.key_id}.pem":
            keys[public.key_id] = public
    return keys


# --- checking the chain against a checkpoint -----------------------------------------------------


@dataclass(frozen=True)
class CheckpointVerification:
    ok: bool
    message: str


async def verify_against(
    db: Database, checkpoint: Checkpoint, keys: dict[str, PublicKey]
) -> CheckpointVerification:
    """Whether ``checkpoint`` is genuine and the database's chain still reaches it unchanged."""
    key = keys.get(checkpoint.key_id)
    if key is None:
        known = ", ".join(sorted(keys)) or "none"
        return CheckpointVerification(
            False,
            f"checkpoint signed by unknown key id {checkpoint.key_id} (trusted keys: {known})",
        )
    if not key.verify(PURPOSE, checkpoint.statement(), checkpoint.signature):
        return CheckpointVerification(
            False,
            f"checkpoint signature does not verify under key {checkpoint.key_id}: "
            "the checkpoint was forged or modified",
        )
    prev_hash, seq, hash_at_checkpoint = service.GENESIS_HASH, 0, None
    if checkpoint.seq == 0:
        hash_at_checkpoint = service.GENESIS_HASH
    async for row in service.iterate(db):
        reason = service.check_entry(row, seq + 1, prev_hash)
        if reason is not None:
            where = "at or before" if seq + 1 <= checkpoint.seq else "after"
            return CheckpointVerification(
                False,
                f"audit chain BROKEN at seq {seq + 1} ({where} the checkpoint's seq "
                f"{checkpoint.seq}): {reason}",
            )
        prev_hash, seq = row.hash, int(row.seq)
        if seq == checkpoint.seq:
            hash_at_checkpoint = prev_hash
    if seq < checkpoint.seq:
        return CheckpointVerification(
            False,
            f"audit chain TRUNCATED: it ends at seq {seq}, but the checkpoint signed seq "
            f"{checkpoint.seq} (hash {checkpoint.head_hash}); the newest "
            f"{checkpoint.seq - seq} entries were removed",
        )
    if hash_at_checkpoint != checkpoint.head_hash:
        return CheckpointVerification(
            False,
            f"audit chain REWRITTEN: entry {checkpoint.seq} hashes to {hash_at_checkpoint}, "
            f"but the checkpoint signed {checkpoint.head_hash}; entries up to seq "
            f"{checkpoint.seq} were altered and re-hashed",
        )
    return CheckpointVerification(
        True,
        f"audit chain OK against checkpoint seq {checkpoint.seq} (key {checkpoint.key_id}); "
        f"head seq {seq}, hash {prev_hash}",
    )


# --- the background loop -------------------------------------------------------------------------


class CheckpointLoop(PollingLoop):
    """Signs the head whenever it has moved past the store's latest checkpoint.

    Every replica may run it: each round reads the store's ``latest.json`` first, so a head one
    replica already signed is not signed again, and concurrent writes replace whole files.
    """

    task_name = "mlgate-audit-checkpoints"

    def __init__(
        self,
        db: Database,
        storage: ArtifactStorage,
        key: SigningKey,
        interval: float,
        directory: Path | None,
    ) -> None:
        super().__init__(interval, log)
        self.db = db
        self.storage = storage
        self.key = key
        self.directory = directory
        self._reported: str | None = None

    def more_waiting(self, handled: int) -> bool:
        return False

    async def run_once(self) -> int:
        try:
            latest = await read_latest(self.storage)
        except CheckpointError:
            latest = None
        try:
            seq, head_hash = await current_head(self.db, latest)
        except ChainDiverged as exc:
            # Tampering (or a restored backup): keep the evidence, say so once per state.
            if exc.message != self._reported:
                self._reported = exc.message
                self.log.error("%s", exc.message)
            return 0
        self._reported = None
        if latest is not None and latest.seq >= seq:
            return 0  # nothing new
        await publish(self.storage, self.key, sign_head(self.key, seq, head_hash), self.directory)
        return 1
