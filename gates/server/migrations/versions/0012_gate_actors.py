"""gates: the authenticated requester of an approval request, and re-opened promotions

Revision ID: 0012
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("approval_requests") as batch:
        batch.add_column(sa.Column("requester", sa.String(length=256), nullable=True))
    # The principal that opened each existing request is the actor of its decision.
    op.execute(
        "UPDATE approval_requests SET requester = (SELECT gate_decisions.actor FROM "
        "gate_decisions WHERE gate_decisions.id = approval_requests.decision_id)"
    )
    with op.batch_alter_table("gate_decisions") as batch:
        batch.add_column(sa.Column("supersedes", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("superseded_by", sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("gate_decisions") as batch:
        batch.drop_column("superseded_by")
        batch.drop_column("supersedes")
    with op.batch_alter_table("approval_requests") as batch:
        batch.drop_column("requester")
