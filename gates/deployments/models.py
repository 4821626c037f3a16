"""Deployment tables: what each deployment follows, and what each of its replicas runs."""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from registry.models import ALIAS_LEN, NAME_LEN, SHA256_HEX_LEN
from tracking.core.db import Base
from tracking.core.types import BigIntPK

DEPLOYMENT_NAME_LEN = 256
REPLICA_ID_LEN = 256


class Deployment(Base):
    """A named deployment bound to one pointer (``models:/name/Stage`` or ``@alias``).

    The binding is made by the first report and never changes, so a caller with rights on
    another model cannot take a deployment over by reporting under its name.
    ``mismatch_since`` and ``drifted`` are the drift sweep's state: since when some replica's
    digest has differed from the pointer's, and whether ``deployment.drift`` was emitted (and
    ``deployment.converged`` not yet). They change only through compare-and-set updates.
    """

    __tablename__ = "deployments"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(DEPLOYMENT_NAME_LEN), unique=True)
    model_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("registered_models.id", ondelete="CASCADE")
    )
    target_kind: Mapped[str] = mapped_column(String(8))  # 'stage' | 'alias'
    target: Mapped[str] = mapped_column(String(ALIAS_LEN))
    created_at: Mapped[int] = mapped_column(BigInteger)
    mismatch_since: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    drifted: Mapped[bool] = mapped_column(Boolean, default=False)

    __table_args__ = (Index("ix_deployments_model", "model_id"),)


class DeploymentReplica(Base):
    """The last report of one replica: the version and digest it says it runs."""

    __tablename__ = "deployment_replicas"

    deployment_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("deployments.id", ondelete="CASCADE"), primary_key=True
    )
    replica_id: Mapped[str] = mapped_column(String(REPLICA_ID_LEN), primary_key=True)
    version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    digest: Mapped[str | None] = mapped_column(String(SHA256_HEX_LEN), nullable=True)
    reported_at: Mapped[int] = mapped_column(BigInteger)
    # The authenticated principal that sent the report (never a claim from the body).
    reported_by: Mapped[str] = mapped_column(String(NAME_LEN))


__all__ = ["Deployment", "DeploymentReplica"]
