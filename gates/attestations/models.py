"""Attestation tables: the signed statement of each gated move, and every signer's public key."""

from __future__ import annotations

from sqlalchemy import BigInteger, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from tracking.core.db import Base

NAME_LEN = 256
TARGET_LEN = 256
ID_LEN = 32
KEY_ID_LEN = 64


class GateAttestation(Base):
    """The DSSE envelope signed when a gate moved a version onto its target.

    ``pointer_event_id`` is the pointer-history row of that move: the admission oracle answers
    yes only while the newest history row of the target is still this one.
    """

    __tablename__ = "gate_attestations"

    id: Mapped[str] = mapped_column(String(ID_LEN), primary_key=True)
    decision_id: Mapped[str] = mapped_column(String(ID_LEN))
    model_name: Mapped[str] = mapped_column(String(NAME_LEN))
    version: Mapped[int] = mapped_column(Integer)
    target: Mapped[str] = mapped_column(String(TARGET_LEN))
    manifest_digest: Mapped[str | None] = mapped_column(String(64), nullable=True)
    pointer_event_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    key_id: Mapped[str] = mapped_column(String(KEY_ID_LEN))
    # sha256 of the signed payload (the in-toto statement's bytes), named in the audit entry.
    payload_sha256: Mapped[str] = mapped_column(String(64))
    envelope: Mapped[str] = mapped_column(Text)
    created_at: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (
        Index("ix_gate_attestations_model_version", "model_name", "version"),
        Index("ix_gate_attestations_pointer_event", "pointer_event_id"),
    )


class AttestationKey(Base):
    """A public key the server has signed attestations with; kept after rotation."""

    __tablename__ = "gate_attestation_keys"

    key_id: Mapped[str] = mapped_column(String(KEY_ID_LEN), primary_key=True)
    algorithm: Mapped[str] = mapped_column(String(32))
    public_pem: Mapped[str] = mapped_column(Text)
    first_seen: Mapped[int] = mapped_column(BigInteger)


__all__ = ["AttestationKey", "GateAttestation"]
