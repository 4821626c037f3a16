"""DSSE envelopes around in-toto statements, signed with Ed25519; keys named by sha256.

The envelope format is the DSSE v1 specification (secure-systems-lab/dsse): the signature
covers the pre-authentication encoding ``PAE(payloadType, payload)``, never the JSON of the
envelope, so a verifier needs no canonical JSON. A key id is the lowercase hex sha256 of the
public key's DER SubjectPublicKeyInfo (``openssl pkey -pubin -outform DER | sha256sum``).
Nothing here reads a database: ``mlgate attest verify`` uses it offline.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://mlgate.dev/promotion/v1"
ALGORITHM = "ed25519"


class EnvelopeError(ValueError):
    """An envelope or key that cannot be parsed, or a signature that does not verify."""


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding: ``DSSEv1 SP len(type) SP type SP len(body) SP body``."""
    kind = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def key_id(key: Ed25519PublicKey) -> str:
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def public_pem(key: Ed25519PublicKey) -> str:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


@dataclass(frozen=True)
class VerifyingKey:
    key_id: str
    key: Ed25519PublicKey

    @property
    def pem(self) -> str:
        return public_pem(self.key)


def verifying_key(key: Ed25519PublicKey) -> VerifyingKey:
    return VerifyingKey(key_id(key), key)


def load_public_pem(data: bytes | str) -> VerifyingKey:
    """An Ed25519 public key from PEM (a private key's PEM gives its public half)."""
    raw = data.encode("ascii") if isinstance(data, str) else data
    try:
        if b"PRIVATE KEY" in raw:
            private = serialization.load_pem_private_key(raw, password=None)
            if not isinstance(private, Ed25519PrivateKey):
                raise EnvelopeError("not an Ed25519 key")
            return verifying_key(private.public_key())
        key = serialization.load_pem_public_key(raw)
    except (ValueError, TypeError) as exc:
        raise EnvelopeError(f"not a PEM Ed25519 key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise EnvelopeError("not an Ed25519 public key")
    return verifying_key(key)


@dataclass(frozen=True)
class Signer:
    """The active attestation key: signs PAE bytes and names itself by key id."""

    private: Ed25519PrivateKey
    public: VerifyingKey

    @classmethod
    def from_private(cls, private: Ed25519PrivateKey) -> Signer:
        return cls(private, verifying_key(private.public_key()))

    def envelope(self, statement: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
        """(the DSSE envelope of ``statement``, the exact payload bytes signed)."""
        payload = json.dumps(statement, sort_keys=True, separators=(",", ":")).encode("utf-8")
        sig = self.private.sign(pae(PAYLOAD_TYPE, payload))
        envelope = {
            "payloadType": PAYLOAD_TYPE,
            "payload": base64.b64encode(payload).decode("ascii"),
            "signatures": [
                {"keyid": self.public.key_id, "sig": base64.b64encode(sig).decode("ascii")}
            ],
        }
        return envelope, payload


def _b64(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise EnvelopeError(f"{what} is not a base64 string")
    # DSSE allows either alphabet: read URL-safe as standard, padding restored, strictly.
    standard = value.replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(standard + "=" * (-len(standard) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise EnvelopeError(f"{what} is not base64") from None


def verify_envelope(envelope: object, keys: list[VerifyingKey]) -> tuple[dict[str, Any], str]:
    """Check a DSSE envelope against trusted keys: (the statement, the key id that verified).

    Raises EnvelopeError unless one signature verifies with a trusted key, the payload type
    is in-toto's and the payload is an in-toto Statement v1 object.
    """
    if not isinstance(envelope, dict):
        raise EnvelopeError("the envelope is not a JSON object")
    if envelope.get("payloadType") != PAYLOAD_TYPE:
        raise EnvelopeError(f"payloadType is not {PAYLOAD_TYPE}")
    payload = _b64(envelope.get("payload"), "payload")
    signatures = envelope.get("signatures")
    if not isinstance(signatures, list) or not signatures:
        raise EnvelopeError("the envelope has no signatures")
    signed = pae(PAYLOAD_TYPE, payload)
    verified = None
    for entry in signatures:
        if not isinstance(entry, dict):
            continue
        sig = _b64(entry.get("sig"), "a signature")
        named = entry.get("keyid")
        for key in keys:
            if named and named != key.key_id:
                continue
            try:
                key.key.verify(sig, signed)
            except InvalidSignature:
                continue
            verified = key.key_id
            break
        if verified:
            break
    if verified is None:
        raise EnvelopeError("no signature verifies with a trusted key")
    try:
        statement = json.loads(payload)
    except ValueError:
        raise EnvelopeError("the payload is not JSON") from None
    if not isinstance(statement, dict) or statement.get("_type") != STATEMENT_TYPE:
        raise EnvelopeError(f"the payload is not an in-toto statement ({STATEMENT_TYPE})")
    return statement, verified
