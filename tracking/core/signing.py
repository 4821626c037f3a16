"""The server's Ed25519 signing key: load or create it, sign statements, verify them by key id.

One key signs everything the server vouches for (audit checkpoints today, promotion
attestations later). Every signature covers a *purpose* label as well as the statement, so a
signature made for one purpose can never be replayed as another. A statement is a flat JSON
object signed in canonical form (sorted keys, compact, ASCII), so any verifier can rebuild the
exact signed bytes from the parsed object.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

# app.state key of the server's SigningKey, loaded at start-up.
SIGNING_KEY_STATE_KEY = "signing_key"


class SigningKeyError(ValueError):
    """A key file that cannot be read, is not an Ed25519 key, or a malformed public key."""


def signed_bytes(purpose: str, statement: dict[str, Any]) -> bytes:
    """The exact bytes a signature covers: ``purpose`` newline canonical JSON."""
    if not purpose or "\n" in purpose:
        raise ValueError("a signing purpose is one non-empty line")
    body = json.dumps(statement, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return purpose.encode("ascii") + b"\n" + body.encode("ascii")


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id_of(key: Ed25519PublicKey) -> str:
    """A stable short name for a public key: the first 16 hex digits of sha256(raw key)."""
    return hashlib.sha256(_raw_public(key)).hexdigest()[:16]


@dataclass(frozen=True)
class PublicKey:
    key_id: str
    key: Ed25519PublicKey

    @property
    def pem(self) -> str:
        return self.key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode("ascii")

    def verify(self, purpose: str, statement: dict[str, Any], signature: str) -> bool:
        try:
            raw = base64.b64decode(signature, validate=True)
        except (binascii.Error, ValueError):
            return False
        try:
            self.key.verify(raw, signed_bytes(purpose, statement))
        except (InvalidSignature, ValueError):
            return False
        return True


def public_key_from_pem(pem: str | bytes) -> PublicKey:
    data = pem.encode("ascii") if isinstance(pem, str) else pem
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise SigningKeyError(f"not a PEM public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise SigningKeyError("not an Ed25519 public key")
    return PublicKey(key_id_of(key), key)


@dataclass(frozen=True)
class SigningKey:
    """The private key and its public half (``key_id`` names it in every signed statement)."""

    private: Ed25519PrivateKey
    public: PublicKey

    @property
    def key_id(self) -> str:
        return self.public.key_id

    def sign(self, purpose: str, statement: dict[str, Any]) -> str:
        """Base64 Ed25519 signature of ``purpose`` + canonical ``statement``."""
        return base64.b64encode(self.private.sign(signed_bytes(purpose, statement))).decode()

    @classmethod
    def from_private(cls, private: Ed25519PrivateKey) -> SigningKey:
        public = private.public_key()
        return cls(private, PublicKey(key_id_of(public), public))

    def private_pem(self) -> bytes:
        return self.private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


def generate() -> SigningKey:
    return SigningKey.from_private(Ed25519PrivateKey.generate())


def is_private_to_owner(path: Path) -> bool:
    """Whether no group or other user may read ``path`` (the key's mode should be 0600)."""
    return path.stat().st_mode & 0o077 == 0


def load_private_key(path: Path) -> SigningKey:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SigningKeyError(f"cannot read signing key {path}: {exc.strerror or exc}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise SigningKeyError(f"{path} is not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"{path} is not an Ed25519 private key")
    return SigningKey.from_private(key)


def load_or_create(path: Path) -> tuple[SigningKey, bool]:
    """The key at ``path``, created (mode 0600) when missing; returns (key, created).

    Several processes may start at once (workers, replicas on one data dir): the new key is
    written to a private temporary file and hard-linked into place, which fails if another
    process won the race, so all of them end up using the one key on disk.
    """
    if path.exists():
        return load_private_key(path), False
    try:
        created = _create(path)
    except OSError as exc:
        raise SigningKeyError(
            f"cannot create the signing key {path}: {exc.strerror or exc} "
            "(set MLGATE_SIGNING_KEY_FILE to an existing Ed25519 PEM key)"
        ) from None
    if created is None:  # another process created it first
        return load_private_key(path), False
    return created, True


def _create(path: Path) -> SigningKey | None:
    path.parent.mkdir(parents=True, exist_ok=True)
    key = generate()
    fd, tmp = tempfile.mkstemp(prefix=".signing-key-", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(key.private_pem())
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return key
