"""gates: signed promotion attestations, their signers' public keys, versions by digest

Revision ID: 0016
Revises: 0015
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "gate_attestations",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("decision_id", sa.String(length=32), nullable=False),
        sa.Column("model_name", sa.String(length=256), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("target", sa.String(length=256), nullable=False),
        sa.Column("manifest_digest", sa.String(length=64), nullable=True),
        sa.Column("pointer_event_id", sa.BigInteger(), nullable=True),
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("payload_sha256", sa.String(length=64), nullable=False),
        sa.Column("envelope", sa.Text(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_gate_attestations_model_version", "gate_attestations", ["model_name", "version"]
    )
    op.create_index(
        "ix_gate_attestations_pointer_event", "gate_attestations", ["pointer_event_id"]
    )
    op.create_table(
        "gate_attestation_keys",
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("algorithm", sa.String(length=32), nullable=False),
        sa.Column("public_pem", sa.Text(), nullable=False),
        sa.Column("first_seen", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("key_id"),
    )
    op.create_index("ix_model_versions_manifest_digest", "model_versions", ["manifest_digest"])


def downgrade() -> None:
    op.drop_index("ix_model_versions_manifest_digest", table_name="model_versions")
    op.drop_table("gate_attestation_keys")
    op.drop_index("ix_gate_attestations_pointer_event", table_name="gate_attestations")
    op.drop_index("ix_gate_attestations_model_version", table_name="gate_attestations")
    op.drop_table("gate_attestations")
