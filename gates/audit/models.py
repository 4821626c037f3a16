"""The audit log table: one hash-chained row per recorded action."""

from __future__ import annotations

from sqlalchemy import BigInteger, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from tracking.core.db import Base


class AuditEntry(Base):
    """An append-only record; ``hash = sha256(prev_hash + canonical record)``.

    ``seq`` is assigned by the appender while it holds the chain's lock, so the chain has no
    gaps and no forks; the unique ``prev_hash`` makes a fork impossible even for a writer that
    skipped the lock.
    """

    __tablename__ = "audit_log"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    at: Mapped[int] = mapped_column(BigInteger)  # epoch ms
    actor: Mapped[str] = mapped_column(String(256))
    kind: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(512))
    payload: Mapped[str] = mapped_column(Text)  # canonical JSON (sorted keys, compact)
    prev_hash: Mapped[str] = mapped_column(String(64), unique=True)
    hash: Mapped[str] = mapped_column(String(64))

    __table_args__ = (
        Index("ix_audit_log_kind_seq", "kind", "seq"),
        Index("ix_audit_log_subject_seq", "subject", "seq"),
    )


__all__ = ["AuditEntry"]
