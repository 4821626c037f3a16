"""events: subscriptions record failing runs and why they were disabled automatically

Revision ID: 0010
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("webhook_subscriptions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("failing_since", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("auto_disabled_at", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("disabled_reason", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("webhook_subscriptions", schema=None) as batch_op:
        batch_op.drop_column("disabled_reason")
        batch_op.drop_column("auto_disabled_at")
        batch_op.drop_column("failing_since")
