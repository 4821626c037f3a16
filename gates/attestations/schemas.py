"""Wire structs of attestations, published keys and the admission oracle (snake_case)."""

from __future__ import annotations

import msgspec


class AttestationOut(msgspec.Struct):
    attestation_id: str
    decision_id: str
    model: str
    version: str
    target: str
    # ``sha256:<hex>``: the version's manifest digest (registry.artifacts.manifest).
    digest: str | None
    key_id: str
    # sha256 of the signed payload (the statement's exact bytes), named by the audit entry.
    payload_sha256: str
    created_at: int
    # The DSSE envelope exactly as stored and signed.
    envelope: msgspec.Raw


class ListAttestations(msgspec.Struct):
    name: str | None = None
    version: str | None = None


class AdmissionQuery(msgspec.Struct):
    target: str | None = None
    digest: str | None = None
    name: str | None = None


class AdmissionOut(msgspec.Struct):
    allowed: bool
    target: str
    reason: str
    checked_at: int
    digest: str | None = None
    model: str | None = None
    version: str | None = None
    attestation: AttestationOut | None = None


class PublishedKey(msgspec.Struct):
    key_id: str
    algorithm: str
    public_key_pem: str
    # Whether this server signs new attestations with it (retired keys only verify).
    active: bool
    first_seen: int


class PublishedKeys(msgspec.Struct):
    keys: list[PublishedKey]
