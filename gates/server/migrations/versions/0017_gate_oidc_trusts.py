"""gates: OIDC issuers a gate trusts (CI identity without shared secrets), and the verified
identity of an OIDC caller on its decisions

Revision ID: 0017
Revises: 0016
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "gate_oidc_trusts",
        sa.Column("id", _PK, autoincrement=True, nullable=False),
        sa.Column("policy_id", sa.BigInteger(), nullable=False),
        sa.Column("trust_id", sa.String(length=32), nullable=False),
        sa.Column("issuer", sa.String(length=512), nullable=False),
        sa.Column("audience", sa.String(length=256), nullable=False),
        sa.Column("claims", sa.Text(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("created_by", sa.String(length=256), nullable=False),
        sa.Column("revoked_at", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["policy_id"],
            ["gate_policies.id"],
            name=op.f("fk_gate_oidc_trusts_policy_id_gate_policies"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gate_oidc_trusts")),
        sa.UniqueConstraint("trust_id", name=op.f("uq_gate_oidc_trusts_trust_id")),
    )
    op.create_index("ix_gate_oidc_trusts_policy_id", "gate_oidc_trusts", ["policy_id"])
    with op.batch_alter_table("gate_decisions") as batch:
        batch.add_column(sa.Column("verified_identity", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("gate_decisions") as batch:
        batch.drop_column("verified_identity")
    op.drop_index("ix_gate_oidc_trusts_policy_id", table_name="gate_oidc_trusts")
    op.drop_table("gate_oidc_trusts")
