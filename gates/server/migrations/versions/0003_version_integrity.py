"""version integrity: artifact roots, file manifests and digests

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27 01:16:47.950231

Versions registered before this revision get their artifact_root from storage_location (always
``mlflow-artifacts:/<path>``), so the write guard protects them too; they have no file rows
and a NULL manifest_digest (``mlgate verify`` reports their files as not fingerprinted).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# Canonical artifact paths compare bytewise ("C") on PostgreSQL; see registry.models.
_PATH = sa.String(length=1024).with_variant(sa.String(length=1024, collation="C"), "postgresql")
_SCHEME_PREFIX = "mlflow-artifacts:/"


def upgrade() -> None:
    op.create_table(
        "model_version_files",
        sa.Column("version_id", sa.BigInteger(), nullable=False),
        sa.Column("path", _PATH, nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["model_versions.id"],
            name=op.f("fk_model_version_files_version_id_model_versions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("version_id", "path", name=op.f("pk_model_version_files")),
    )
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("artifact_root", _PATH, nullable=True))
        batch_op.add_column(sa.Column("manifest_digest", sa.String(length=64), nullable=True))

    # Backfill from the stored download location, then require it.
    op.execute(
        sa.text(
            "UPDATE model_versions SET artifact_root = substr(storage_location, :start)"
        ).bindparams(start=len(_SCHEME_PREFIX) + 1)
    )
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.alter_column("artifact_root", existing_type=_PATH, nullable=False)
        batch_op.create_index("ix_model_versions_artifact_root", ["artifact_root"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.drop_index("ix_model_versions_artifact_root")
        batch_op.drop_column("manifest_digest")
        batch_op.drop_column("artifact_root")

    op.drop_table("model_version_files")
