"""Approval tables: one request per decision that needs sign-off, and its actions."""

from __future__ import annotations

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from gates.policies.models import ACTOR_LEN, ID_LEN, NAME_LEN, TARGET_LEN
from tracking.core.db import Base
from tracking.core.types import BigIntPK


class ApprovalRequest(Base):
    __tablename__ = "approval_requests"

    id: Mapped[str] = mapped_column(String(ID_LEN), primary_key=True)
    decision_id: Mapped[str] = mapped_column(String(ID_LEN), ForeignKey("gate_decisions.id"))
    policy_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("gate_policies.id"))
    policy_version_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("gate_policy_versions.id")
    )
    model_name: Mapped[str] = mapped_column(String(NAME_LEN))
    version: Mapped[int] = mapped_column(Integer)
    target: Mapped[str] = mapped_column(String(TARGET_LEN))
    run_id: Mapped[str | None] = mapped_column(String(ID_LEN), nullable=True)
    # The digest the decision saw; the final approval refuses if the bytes changed since.
    digest: Mapped[str | None] = mapped_column(String(128), nullable=True)
    required_approvals: Mapped[int] = mapped_column(Integer)
    # pending | approved | rejected | cancelled | failed (expiry is computed from expires_at).
    status: Mapped[str] = mapped_column(String(16))
    # What the caller claimed (free text in a signed request): shown, never trusted.
    requested_by: Mapped[str] = mapped_column(String(ACTOR_LEN))
    # The authenticated principal that opened the request (a gate secret or a token's user):
    # the one separation of duties compares with.
    requester: Mapped[str | None] = mapped_column(String(ACTOR_LEN), nullable=True)
    run_author: Mapped[str | None] = mapped_column(String(ACTOR_LEN), nullable=True)
    created_at: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[int] = mapped_column(BigInteger)
    resolved_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    resolved_by: Mapped[str | None] = mapped_column(String(ACTOR_LEN), nullable=True)
    resolution: Mapped[str | None] = mapped_column(Text, nullable=True)

    __table_args__ = (
        Index("ix_approval_requests_status_created", "status", "created_at"),
        Index("ix_approval_requests_model_version", "model_name", "version", "target"),
    )


class ApprovalAction(Base):
    """approve | reject | cancel | comment | break_glass, by whom, when; kept forever.

    ``break_glass`` is a database-direct action from ``mlgate approvals ... --break-glass``: it is
    never counted as an approval."""

    __tablename__ = "approval_actions"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(String(ID_LEN), ForeignKey("approval_requests.id"))
    kind: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(ACTOR_LEN))
    comment: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (Index("ix_approval_actions_request_created", "request_id", "created_at"),)


__all__ = ["ApprovalAction", "ApprovalRequest"]
