"""gates: policies and their versions, webhook secrets and receipts, decisions, approvals

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "gate_policies",
        sa.Column("id", _PK, autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("model_pattern", sa.String(length=256), nullable=False),
        sa.Column("target", sa.String(length=256), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("current_version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.Column("created_by", sa.String(length=256), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gate_policies")),
        sa.UniqueConstraint("name", name=op.f("uq_gate_policies_name")),
        sa.UniqueConstraint(
            "model_pattern", "target", name=op.f("uq_gate_policies_model_pattern_target")
        ),
    )
    op.create_index(
        "ix_gate_policies_target_enabled", "gate_policies", ["target", "enabled"], unique=False
    )
    op.create_table(
        "gate_policy_versions",
        sa.Column("id", _PK, autoincrement=True, nullable=False),
        sa.Column("policy_id", sa.BigInteger(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("model_pattern", sa.String(length=256), nullable=False),
        sa.Column("target", sa.String(length=256), nullable=False),
        sa.Column("spec", sa.Text(), nullable=False),
        sa.Column("spec_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("created_by", sa.String(length=256), nullable=False),
        sa.ForeignKeyConstraint(
            ["policy_id"],
            ["gate_policies.id"],
            name=op.f("fk_gate_policy_versions_policy_id_gate_policies"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gate_policy_versions")),
        sa.UniqueConstraint(
            "policy_id", "version", name=op.f("uq_gate_policy_versions_policy_id_version")
        ),
    )
    op.create_table(
        "gate_secrets",
        sa.Column("id", _PK, autoincrement=True, nullable=False),
        sa.Column("policy_id", sa.BigInteger(), nullable=False),
        sa.Column("secret_id", sa.String(length=32), nullable=False),
        sa.Column("secret", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("created_by", sa.String(length=256), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=True),
        sa.Column("revoked_at", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["policy_id"], ["gate_policies.id"], name=op.f("fk_gate_secrets_policy_id_gate_policies")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gate_secrets")),
        sa.UniqueConstraint("secret_id", name=op.f("uq_gate_secrets_secret_id")),
    )
    op.create_index("ix_gate_secrets_policy_id", "gate_secrets", ["policy_id"], unique=False)
    op.create_table(
        "gate_webhook_receipts",
        sa.Column("webhook_id", sa.String(length=256), nullable=False),
        sa.Column("received_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("webhook_id", name=op.f("pk_gate_webhook_receipts")),
    )
    op.create_index(
        "ix_gate_webhook_receipts_received_at",
        "gate_webhook_receipts",
        ["received_at"],
        unique=False,
    )
    op.create_table(
        "gate_decisions",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("policy_id", sa.BigInteger(), nullable=False),
        sa.Column("policy_version_id", sa.BigInteger(), nullable=False),
        sa.Column("policy_version", sa.Integer(), nullable=False),
        sa.Column("model_name", sa.String(length=256), nullable=False),
        sa.Column("target", sa.String(length=256), nullable=False),
        sa.Column("run_id", sa.String(length=32), nullable=True),
        sa.Column("version", sa.Integer(), nullable=True),
        sa.Column("digest", sa.String(length=128), nullable=True),
        sa.Column("outcome", sa.String(length=20), nullable=False),
        sa.Column("checks", sa.Text(), nullable=False),
        sa.Column("actor", sa.String(length=256), nullable=False),
        sa.Column("auth_method", sa.String(length=16), nullable=False),
        sa.Column("requested_by", sa.String(length=256), nullable=True),
        sa.Column("trigger", sa.String(length=16), nullable=False),
        sa.Column("dry_run", sa.Boolean(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=256), nullable=True),
        sa.Column("request_hash", sa.String(length=64), nullable=True),
        sa.Column("approval_request_id", sa.String(length=32), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["policy_id"],
            ["gate_policies.id"],
            name=op.f("fk_gate_decisions_policy_id_gate_policies"),
        ),
        sa.ForeignKeyConstraint(
            ["policy_version_id"],
            ["gate_policy_versions.id"],
            name=op.f("fk_gate_decisions_policy_version_id_gate_policy_versions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gate_decisions")),
        sa.UniqueConstraint(
            "model_name",
            "target",
            "idempotency_key",
            name=op.f("uq_gate_decisions_model_name_target_idempotency_key"),
        ),
    )
    op.create_index(
        "ix_gate_decisions_model_created",
        "gate_decisions",
        ["model_name", "created_at"],
        unique=False,
    )
    op.create_table(
        "approval_requests",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("decision_id", sa.String(length=32), nullable=False),
        sa.Column("policy_id", sa.BigInteger(), nullable=False),
        sa.Column("policy_version_id", sa.BigInteger(), nullable=False),
        sa.Column("model_name", sa.String(length=256), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("target", sa.String(length=256), nullable=False),
        sa.Column("run_id", sa.String(length=32), nullable=True),
        sa.Column("digest", sa.String(length=128), nullable=True),
        sa.Column("required_approvals", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("requested_by", sa.String(length=256), nullable=False),
        sa.Column("run_author", sa.String(length=256), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.Column("resolved_at", sa.BigInteger(), nullable=True),
        sa.Column("resolved_by", sa.String(length=256), nullable=True),
        sa.Column("resolution", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["decision_id"],
            ["gate_decisions.id"],
            name=op.f("fk_approval_requests_decision_id_gate_decisions"),
        ),
        sa.ForeignKeyConstraint(
            ["policy_id"],
            ["gate_policies.id"],
            name=op.f("fk_approval_requests_policy_id_gate_policies"),
        ),
        sa.ForeignKeyConstraint(
            ["policy_version_id"],
            ["gate_policy_versions.id"],
            name=op.f("fk_approval_requests_policy_version_id_gate_policy_versions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_approval_requests")),
    )
    op.create_index(
        "ix_approval_requests_status_created",
        "approval_requests",
        ["status", "created_at"],
        unique=False,
    )
    op.create_index(
        "ix_approval_requests_model_version",
        "approval_requests",
        ["model_name", "version", "target"],
        unique=False,
    )
    op.create_table(
        "approval_actions",
        sa.Column("id", _PK, autoincrement=True, nullable=False),
        sa.Column("request_id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("actor", sa.String(length=256), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["approval_requests.id"],
            name=op.f("fk_approval_actions_request_id_approval_requests"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_approval_actions")),
    )
    op.create_index(
        "ix_approval_actions_request_created",
        "approval_actions",
        ["request_id", "created_at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_approval_actions_request_created", table_name="approval_actions")
    op.drop_table("approval_actions")
    op.drop_index("ix_approval_requests_model_version", table_name="approval_requests")
    op.drop_index("ix_approval_requests_status_created", table_name="approval_requests")
    op.drop_table("approval_requests")
    op.drop_index("ix_gate_decisions_model_created", table_name="gate_decisions")
    op.drop_table("gate_decisions")
    op.drop_index("ix_gate_webhook_receipts_received_at", table_name="gate_webhook_receipts")
    op.drop_table("gate_webhook_receipts")
    op.drop_index("ix_gate_secrets_policy_id", table_name="gate_secrets")
    op.drop_table("gate_secrets")
    op.drop_table("gate_policy_versions")
    op.drop_index("ix_gate_policies_target_enabled", table_name="gate_policies")
    op.drop_table("gate_policies")
