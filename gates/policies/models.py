"""Gate tables: policies and their immutable versions, webhook secrets, receipts and decisions."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from tracking.core.db import Base
from tracking.core.types import BigIntPK

NAME_LEN = 256
TARGET_LEN = 256
ACTOR_LEN = 256
ID_LEN = 32
ISSUER_LEN = 512


class GatePolicy(Base):
    """A named gate. Its rules live in ``gate_policy_versions``; this row says which is current.

    ``model_pattern``/``target`` mirror the current version so the pointer guard finds the
    gates of a target with one indexed query.
    """

    __tablename__ = "gate_policies"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(NAME_LEN), unique=True)
    model_pattern: Mapped[str] = mapped_column(String(NAME_LEN))
    target: Mapped[str] = mapped_column(String(TARGET_LEN))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    current_version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[int] = mapped_column(BigInteger)
    created_by: Mapped[str] = mapped_column(String(ACTOR_LEN))

    __table_args__ = (
        # Two gates binding the same pattern to the same target would make "which gate decides"
        # ambiguous; a different pattern that also matches is resolved by specificity instead.
        UniqueConstraint("model_pattern", "target"),
        Index("ix_gate_policies_target_enabled", "target", "enabled"),
    )


class GatePolicyVersion(Base):
    """One immutable version of a policy's rules; decisions point at the version they used."""

    __tablename__ = "gate_policy_versions"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    policy_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("gate_policies.id"))
    version: Mapped[int] = mapped_column(Integer)
    model_pattern: Mapped[str] = mapped_column(String(NAME_LEN))
    target: Mapped[str] = mapped_column(String(TARGET_LEN))
    # The canonical JSON of the rules (gates.policies.schemas.PolicyRules).
    spec: Mapped[str] = mapped_column(Text)
    # sha256 of the canonical binding + rules: `gates apply` with unchanged rules is a no-op.
    spec_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[int] = mapped_column(BigInteger)
    created_by: Mapped[str] = mapped_column(String(ACTOR_LEN))

    __table_args__ = (UniqueConstraint("policy_id", "version"),)


class GateSecret(Base):
    """A webhook signing secret of one gate; at most two are active (rotation overlap)."""

    __tablename__ = "gate_secrets"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    policy_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("gate_policies.id"))
    secret_id: Mapped[str] = mapped_column(String(ID_LEN), unique=True)
    # HMAC needs the key itself on the server, so it cannot be stored as a one-way hash.
    secret: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[int] = mapped_column(BigInteger)
    created_by: Mapped[str] = mapped_column(String(ACTOR_LEN))
    expires_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    revoked_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)

    __table_args__ = (Index("ix_gate_secrets_policy_id", "policy_id"),)


class GateOidcTrust(Base):
    """An OIDC issuer a gate trusts: tokens it signed for ``audience`` whose claims match every
    rule in ``claims`` (canonical JSON ``{claim: [glob, ...]}``) may call the gate's webhook."""

    __tablename__ = "gate_oidc_trusts"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    policy_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("gate_policies.id"))
    trust_id: Mapped[str] = mapped_column(String(ID_LEN), unique=True)
    issuer: Mapped[str] = mapped_column(String(ISSUER_LEN))
    audience: Mapped[str] = mapped_column(String(NAME_LEN))
    claims: Mapped[str] = mapped_column(Text)
    created_at: Mapped[int] = mapped_column(BigInteger)
    created_by: Mapped[str] = mapped_column(String(ACTOR_LEN))
    revoked_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)

    __table_args__ = (Index("ix_gate_oidc_trusts_policy_id", "policy_id"),)


class WebhookReceipt(Base):
    """A ``webhook-id`` seen inside the replay window; a second delivery of it is refused."""

    __tablename__ = "gate_webhook_receipts"

    webhook_id: Mapped[str] = mapped_column(String(NAME_LEN), primary_key=True)
    received_at: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (Index("ix_gate_webhook_receipts_received_at", "received_at"),)


class GateDecision(Base):
    """What a gate decided about one promotion request, check by check."""

    __tablename__ = "gate_decisions"

    id: Mapped[str] = mapped_column(String(ID_LEN), primary_key=True)
    policy_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("gate_policies.id"))
    policy_version_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("gate_policy_versions.id")
    )
    policy_version: Mapped[int] = mapped_column(Integer)
    model_name: Mapped[str] = mapped_column(String(NAME_LEN))
    target: Mapped[str] = mapped_column(String(TARGET_LEN))
    run_id: Mapped[str | None] = mapped_column(String(ID_LEN), nullable=True)
    version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    digest: Mapped[str | None] = mapped_column(String(128), nullable=True)
    # 'evaluating' only inside the deciding transaction; then passed|failed|pending_approval.
    outcome: Mapped[str] = mapped_column(String(20))
    checks: Mapped[str] = mapped_column(Text)
    actor: Mapped[str] = mapped_column(String(ACTOR_LEN))
    auth_method: Mapped[str] = mapped_column(String(16))
    requested_by: Mapped[str | None] = mapped_column(String(ACTOR_LEN), nullable=True)
    # 'webhook' (a CI call) or 'approval' (the re-evaluation on a final approval).
    trigger: Mapped[str] = mapped_column(String(16))
    dry_run: Mapped[bool] = mapped_column(Boolean, default=False)
    idempotency_key: Mapped[str | None] = mapped_column(String(NAME_LEN), nullable=True)
    request_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    approval_request_id: Mapped[str | None] = mapped_column(String(ID_LEN), nullable=True)
    # A replay with ``reopen`` of a promotion whose approval request closed decides again: the
    # new decision ``supersedes`` the previous one, which points forward with ``superseded_by``
    # (a replay of the key follows these links to the newest decision).
    supersedes: Mapped[str | None] = mapped_column(String(ID_LEN), nullable=True)
    superseded_by: Mapped[str | None] = mapped_column(String(ID_LEN), nullable=True)
    # For an OIDC caller: the verified token's issuer, subject and mapped claims (JSON), what
    # the trust checked; ``actor`` is derived from them, never from the request body.
    verified_identity: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (
        # The idempotency guarantee: a second request with the same key cannot insert a
        # decision, so it cannot create a second version either (NULL keys never collide).
        UniqueConstraint("model_name", "target", "idempotency_key"),
        Index("ix_gate_decisions_model_created", "model_name", "created_at"),
    )


__all__ = [
    "GateDecision",
    "GateOidcTrust",
    "GatePolicy",
    "GatePolicyVersion",
    "GateSecret",
    "WebhookReceipt",
]
