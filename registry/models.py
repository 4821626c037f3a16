"""Registry tables: registered models, versions, tags, aliases and the pointer history."""

from __future__ import annotations

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from registry.artifacts.paths import MAX_PATH_BYTES
from tracking.core.db import Base
from tracking.core.types import BigIntPK

NAME_LEN = 256
TAG_KEY_LEN = 250
ALIAS_LEN = 255
SHA256_HEX_LEN = 64

# Artifact paths compare bytewise on both databases: the write guard's "is a registered root
# under this directory?" is a range scan over this column, which needs byte order. SQLite's
# default (BINARY) is; PostgreSQL's database collation (e.g. en_US) may not be, hence "C".
ArtifactPathString = String(MAX_PATH_BYTES).with_variant(
    String(MAX_PATH_BYTES, collation="C"), "postgresql"
)


class RegisteredModel(Base):
    __tablename__ = "registered_models"

    # A narrow surrogate key: children reference it, so a rename touches one row.
    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(NAME_LEN), unique=True)
    creation_timestamp: Mapped[int] = mapped_column(BigInteger)
    last_updated_timestamp: Mapped[int] = mapped_column(BigInteger)
    user_id: Mapped[str] = mapped_column(String(256), default="")
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    # The highest version number ever handed out. Bumped with an atomic UPDATE ... RETURNING,
    # which also row-locks the model until commit: no gaps, no duplicates, no reuse after delete.
    last_version: Mapped[int] = mapped_column(Integer, default=0)

    __table_args__ = (Index("ix_registered_models_last_updated", "last_updated_timestamp"),)


class RegisteredModelTag(Base):
    __tablename__ = "registered_model_tags"

    model_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("registered_models.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(TAG_KEY_LEN), primary_key=True)
    value: Mapped[str] = mapped_column(Text)

    # Serves the tag filters of search (key = ? AND value ...), incl. the prompt exclusion.
    __table_args__ = (Index("ix_registered_model_tags_key_model", "key", "model_id"),)


class ModelVersion(Base):
    __tablename__ = "model_versions"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    model_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("registered_models.id", ondelete="CASCADE")
    )
    version: Mapped[int] = mapped_column(Integer)
    creation_timestamp: Mapped[int] = mapped_column(BigInteger)
    last_updated_timestamp: Mapped[int] = mapped_column(BigInteger)
    user_id: Mapped[str] = mapped_column(String(256), default="")
    current_stage: Mapped[str] = mapped_column(String(20), default="None")
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    # The canonical source that was validated (runs:/, models:/m-… or mlflow-artifacts:/).
    source: Mapped[str] = mapped_column(String(2000))
    # Where the version's files are, as an mlflow-artifacts:/ URI: the registry's frozen copy
    # (mlgate-frozen/sha256/<digest>, registry.artifacts.freeze), or for versions registered
    # before frozen copies, the location the source resolved to. What get-download-uri returns.
    storage_location: Mapped[str] = mapped_column(String(2000))
    run_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    run_link: Mapped[str | None] = mapped_column(String(2000), nullable=True)
    logged_model_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    status: Mapped[str] = mapped_column(String(20), default="READY")
    status_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    # The canonical store path of the version's files: ``storage_location`` without its scheme.
    # Files at or under it are immutable while the version exists (the frozen area is never
    # client-writable; older versions' roots are refused by the artifact write guard).
    artifact_root: Mapped[str] = mapped_column(ArtifactPathString)
    # sha256 over the version's file manifest (``registry.artifacts.manifest``). NULL when the
    # location held no files at registration, or for versions registered before revision 0003.
    manifest_digest: Mapped[str | None] = mapped_column(String(SHA256_HEX_LEN), nullable=True)

    __table_args__ = (
        UniqueConstraint("model_id", "version"),
        # get-latest-versions and stage moves: the highest version per (model, stage).
        Index("ix_model_versions_model_stage_version", "model_id", "current_stage", "version"),
        Index("ix_model_versions_run_id", "run_id"),
        # The artifact write guard: exact matches on a written path's ancestors, and a range
        # scan for roots under a deleted directory.
        Index("ix_model_versions_artifact_root", "artifact_root"),
        # The admission oracle looks versions up by the digest of their bytes.
        Index("ix_model_versions_manifest_digest", "manifest_digest"),
    )


class ModelVersionFile(Base):
    """One file of a version as fingerprinted at registration: its path under the root."""

    __tablename__ = "model_version_files"

    version_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("model_versions.id", ondelete="CASCADE"), primary_key=True
    )
    # Relative to the version's artifact_root, '/'-separated (a canonical ArtifactPath).
    path: Mapped[str] = mapped_column(ArtifactPathString, primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(SHA256_HEX_LEN))


class ModelVersionTag(Base):
    __tablename__ = "model_version_tags"

    version_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("model_versions.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(TAG_KEY_LEN), primary_key=True)
    value: Mapped[str] = mapped_column(Text)

    __table_args__ = (Index("ix_model_version_tags_key_version", "key", "version_id"),)


class RegisteredModelAlias(Base):
    __tablename__ = "registered_model_aliases"

    model_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("registered_models.id", ondelete="CASCADE"), primary_key=True
    )
    alias: Mapped[str] = mapped_column(String(ALIAS_LEN), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)


class PointerEvent(Base):
    """One change of a stage or alias pointer, written in the transaction that made it.

    ``from_version``/``to_version`` are what the pointer resolved to before and after (for a
    stage: its highest version, i.e. what ``models:/name/Production`` loads; NULL: nothing).
    The row outlives the model: ``model_id`` turns NULL on delete, ``model_name`` stays.
    """

    __tablename__ = "pointer_history"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    model_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("registered_models.id", ondelete="SET NULL"), nullable=True
    )
    model_name: Mapped[str] = mapped_column(String(NAME_LEN))
    pointer_kind: Mapped[str] = mapped_column(String(8))  # 'stage' | 'alias'
    pointer: Mapped[str] = mapped_column(String(ALIAS_LEN))
    from_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    to_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # The version the action was about (the one transitioned, aliased or deleted).
    version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    action: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(256))
    comment: Mapped[str | None] = mapped_column(Text, nullable=True)
    timestamp: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (
        # "Which version held P at T": the newest row for (model, kind, pointer) at or before T.
        Index("ix_pointer_history_lookup", "model_id", "pointer_kind", "pointer", "timestamp"),
        Index("ix_pointer_history_model_time", "model_id", "timestamp"),
    )


__all__ = [
    "ModelVersion",
    "ModelVersionFile",
    "ModelVersionTag",
    "PointerEvent",
    "RegisteredModel",
    "RegisteredModelAlias",
    "RegisteredModelTag",
]
