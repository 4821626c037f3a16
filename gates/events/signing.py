"""Webhook signatures (Standard Webhooks and MLflow's variant) and sealed secrets at rest.

Both formats sign ``"<id>.<timestamp>.<body>"`` with HMAC-SHA256 and send ``v1,<base64>``:
- Standard Webhooks (mlgate subscriptions): headers ``webhook-id``, ``webhook-timestamp`` and
  ``webhook-signature``; a ``whsec_<base64>`` secret signs with its decoded bytes (what the
  standardwebhooks libraries expect), any other secret with its UTF-8 bytes. During a
  rotation both secrets sign, space-separated, as the spec allows.
- MLflow 3 (``/api/2.0/mlflow/webhooks``): ``X-MLflow-Delivery-Id``, ``X-MLflow-Timestamp`` and
  ``X-MLflow-Signature``, keyed with the secret's UTF-8 bytes (mlflow/webhooks/delivery.py).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
from collections.abc import Sequence

SIGNATURE_VERSION = "v1"
SECRET_PREFIX = "whsec_"  # noqa: S105 - the Standard Webhooks marker, not a secret

# Standard Webhooks headers (https://www.standardwebhooks.com).
WEBHOOK_ID = "webhook-id"
WEBHOOK_TIMESTAMP = "webhook-timestamp"
WEBHOOK_SIGNATURE = "webhook-signature"
# MLflow 3's headers (mlflow/webhooks/constants.py).
MLFLOW_DELIVERY_ID = "X-MLflow-Delivery-Id"
MLFLOW_TIMESTAMP = "X-MLflow-Timestamp"
MLFLOW_SIGNATURE = "X-MLflow-Signature"


def generate_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def signing_key(secret: str) -> bytes:
    if secret.startswith(SECRET_PREFIX):
        try:
            return base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
        except binascii.Error:
            pass
    return secret.encode("utf-8")


def _sign(key: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode()}"


def standard_signature(
    secrets_: Sequence[str], message_id: str, timestamp: int, body: bytes
) -> str:
    """The ``webhook-signature`` value: one ``v1,<sig>`` per active secret."""
    return " ".join(_sign(signing_key(s), message_id, timestamp, body) for s in secrets_)


def mlflow_signature(secret: str, delivery_id: str, timestamp: int, body: bytes) -> str:
    return _sign(secret.encode("utf-8"), delivery_id, timestamp, body)


def verify_standard_signature(
    secret: str, message_id: str, timestamp: int, body: bytes, header: str
) -> bool:
    """Whether any signature in ``header`` is ``secret``'s (receivers' side; used by tests)."""
    expected = _sign(signing_key(secret), message_id, timestamp, body)
    return any(hmac.compare_digest(expected, sig) for sig in header.split())


# --- secrets at rest -----------------------------------------------------------------------------

_PLAIN = "plain:"
_SEALED = "aesgcm:"


def split_keys(key_material: str) -> list[str]:
    """The keys of ``MLGATE_WEBHOOK_SECRET_KEY``, sealing key first."""
    return [k.strip() for k in key_material.split(",") if k.strip()]


class SecretUnavailable(Exception):
    """A stored secret cannot be opened (sealed with a key this server does not have)."""


class SecretBox:
    """Seals subscription and gate secrets with AES-256-GCM under ``MLGATE_WEBHOOK_SECRET_KEY``.

    The setting is a comma-separated list of keys: the first seals, every one opens, so a key is
    rotated by putting the new one first and keeping the old one after it until every secret
    sealed under it has been rotated. Without a key, secrets are stored marked as unsealed, so
    setting a key later still opens them (new ones are then sealed).
    """

    def __init__(self, key_material: str) -> None:
        self._keys = [hashlib.sha256(k.encode()).digest() for k in split_keys(key_material)]
        self._key = self._keys[0] if self._keys else None

    def seal(self, secret: str) -> str:
        if self._key is None:
            return _PLAIN + secret
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        nonce = os.urandom(12)
        sealed = AESGCM(self._key).encrypt(nonce, secret.encode(), b"mlgate-webhook-secret")
        return _SEALED + base64.b64encode(nonce + sealed).decode()

    def open(self, stored: str) -> str:
        if stored.startswith(_PLAIN):
            return stored[len(_PLAIN) :]
        if not stored.startswith(_SEALED) or self._key is None:
            raise SecretUnavailable(
                "the subscription secret is sealed; set MLGATE_WEBHOOK_SECRET_KEY"
            )
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        raw = base64.b64decode(stored[len(_SEALED) :])
        for key in self._keys:
            try:
                plain = AESGCM(key).decrypt(raw[:12], raw[12:], b"mlgate-webhook-secret")
            except InvalidTag:
                continue
            return plain.decode()
        raise SecretUnavailable(
            "the subscription secret was sealed with a key not in MLGATE_WEBHOOK_SECRET_KEY"
        )
