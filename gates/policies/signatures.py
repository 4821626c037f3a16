"""Standard Webhooks signatures: HMAC-SHA256 over ``<id>.<timestamp>.<raw body>``.

Headers: ``webhook-id``, ``webhook-timestamp`` (Unix seconds) and ``webhook-signature``, a
space-separated list of ``v1,<base64 MAC>`` (several during a secret rotation). Secrets are
``whsec_<base64 key>``. See https://www.standardwebhooks.com/.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from gates.policies.errors import BadSignature

SECRET_PREFIX = "whsec_"  # noqa: S105 - the public marker of a Standard Webhooks secret
# A signed request is accepted for 5 minutes either side of the server's clock: long enough for
# clock skew and queueing, short enough that a captured request cannot be replayed later.
TOLERANCE_SECONDS = 300
MAX_WEBHOOK_ID_LEN = 256
MAX_SIGNATURES = 8


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def secret_key(secret: str) -> bytes:
    raw = secret[len(SECRET_PREFIX) :] if secret.startswith(SECRET_PREFIX) else secret
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        # A secret that is not base64 is used as raw bytes (other senders' convention).
        return raw.encode()


def _mac(key: bytes, webhook_id: str, timestamp: str, body: bytes) -> bytes:
    signed = webhook_id.encode() + b"." + timestamp.encode() + b"." + body
    return hmac.new(key, signed, hashlib.sha256).digest()


def sign(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    mac = _mac(secret_key(secret), webhook_id, str(timestamp), body)
    return "v1," + base64.b64encode(mac).decode()


def signed_headers(secret: str, webhook_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, webhook_id, timestamp, body),
    }


@dataclass(frozen=True, slots=True)
class SignedRequest:
    webhook_id: str
    timestamp: int
    signatures: tuple[bytes, ...]


def parse_headers(headers: Mapping[str, str]) -> SignedRequest | None:
    """The signature headers, or None when the request carries none (then try a token)."""
    webhook_id = headers.get("webhook-id")
    timestamp = headers.get("webhook-timestamp")
    signature = headers.get("webhook-signature")
    if webhook_id is None and timestamp is None and signature is None:
        return None
    if not webhook_id or not timestamp or not signature:
        raise BadSignature("webhook-id, webhook-timestamp and webhook-signature are all required.")
    if len(webhook_id) > MAX_WEBHOOK_ID_LEN:
        raise BadSignature(f"webhook-id is longer than {MAX_WEBHOOK_ID_LEN} characters.")
    if not timestamp.isdigit() or len(timestamp) > 12:
        raise BadSignature("webhook-timestamp must be Unix seconds.")
    macs: list[bytes] = []
    for part in signature.split(" ")[:MAX_SIGNATURES]:
        version, _, value = part.partition(",")
        if version != "v1" or not value:
            continue  # other schemes (v1a: asymmetric) are not ours; skip them
        try:
            macs.append(base64.b64decode(value, validate=True))
        except (binascii.Error, ValueError):
            continue
    if not macs:
        raise BadSignature("webhook-signature holds no v1 signature.")
    return SignedRequest(webhook_id, int(timestamp), tuple(macs))


def check_timestamp(signed: SignedRequest, now_seconds: int) -> None:
    if abs(now_seconds - signed.timestamp) > TOLERANCE_SECONDS:
        raise BadSignature(
            "webhook-timestamp is outside the 5-minute window (stale or from the future)."
        )


def matching_secret(signed: SignedRequest, secrets_: Sequence[str], body: bytes) -> int | None:
    """The index of the secret that produced one of the signatures, or None.

    Every (secret, signature) pair is compared in constant time, and all pairs are compared, so
    the response time does not tell which secret or which signature came close.
    """
    found: int | None = None
    for index, secret in enumerate(secrets_):
        expected = _mac(secret_key(secret), signed.webhook_id, str(signed.timestamp), body)
        for candidate in signed.signatures:
            if hmac.compare_digest(expected, candidate) and found is None:
                found = index
    return found
