"""Credentials: API token secrets, password hashes and constant-time comparison.

Part of deciding who a caller is (README, "Where authentication lives"): the identity service
issues and checks tokens and passwords with these, and stores only their hashes. The kernel's
``tracking/core/auth.py`` declares what a route needs, ``gates/server/security.py`` enforces
it, and ``gates/server/web/session.py`` carries browser sessions.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

TOKEN_SCHEME = "mlg"  # noqa: S105 - the public marker every token starts with
TOKEN_PREFIX_LEN = 12
_TOKEN_RE = re.compile(rf"^{TOKEN_SCHEME}_([0-9a-f]{{{TOKEN_PREFIX_LEN}}})_([A-Za-z0-9_\-]{{43}})$")


def constant_time_equals(a: str | bytes, b: str | bytes) -> bool:
    left = a.encode() if isinstance(a, str) else a
    right = b.encode() if isinstance(b, str) else b
    return hmac.compare_digest(left, right)


@dataclass(frozen=True, slots=True)
class NewToken:
    """A freshly generated API token: ``secret`` is shown once; only ``digest`` is stored."""

    secret: str
    prefix: str
    digest: str


def hash_token(secret: str) -> str:
    # Tokens carry 256 random bits, so a fast hash is enough: nothing to brute-force.
    return hashlib.sha256(secret.encode()).hexdigest()


def generate_token() -> NewToken:
    prefix = secrets.token_hex(TOKEN_PREFIX_LEN // 2)
    secret = f"{TOKEN_SCHEME}_{prefix}_{secrets.token_urlsafe(32)}"
    return NewToken(secret=secret, prefix=prefix, digest=hash_token(secret))


def token_prefix(secret: str) -> str | None:
    """The public lookup prefix of a well-formed token, or None."""
    found = _TOKEN_RE.match(secret)
    return found.group(1) if found else None


_hasher = PasswordHasher()


@cache
def _dummy_hash() -> str:
    # Verified against when a user does not exist, so timing does not reveal which names exist.
    return _hasher.hash(secrets.token_urlsafe(16))


def hash_password(password: str) -> str:
    """Argon2id (argon2-cffi's defaults). CPU-heavy: call it off the event loop."""
    return _hasher.hash(password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    """Argon2id check; a missing hash still costs one verify. CPU-heavy: off the event loop."""
    try:
        matched = _hasher.verify(stored_hash or _dummy_hash(), password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
    return matched and stored_hash is not None
