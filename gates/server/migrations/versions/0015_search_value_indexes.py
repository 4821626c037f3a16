"""tracking: params and tags indexed by (key, value prefix, run_id) for search at scale

Revision ID: 0015
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0012"
branch_labels = None
depends_on = None

# The same expression as tracking.models.value_prefix: a prefix keeps every entry within a
# PostgreSQL btree's size limit, whatever the length of the value.
_PREFIX = sa.text("substr(value, 1, 200)")


_TABLES = ("params", "tags")


def upgrade() -> None:
    for table in _TABLES:
        op.create_index(f"ix_{table}_key_value_prefix", table, ["key", _PREFIX, "run_id"])
    dialect = op.get_bind().dialect
    if dialect.name == "postgresql" and (dialect.server_version_info or (0,)) >= (14,):
        # The planner would multiply the selectivities of key and value as if independent
        # (a key's share of rows times a value's share across all keys) and so underestimate
        # `key = k AND prefix = v` many times over, then probe every matching run instead of
        # walking a metric's order. Joint most-common-value statistics (PostgreSQL 14+) make
        # the estimate right; ANALYZE (autovacuum) fills them.
        for table in _TABLES:
            op.execute(
                f"CREATE STATISTICS IF NOT EXISTS st_{table}_key_value_prefix (mcv) "
                f"ON key, substr(value, 1, 200) FROM {table}"
            )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in _TABLES:
            op.execute(f"DROP STATISTICS IF EXISTS st_{table}_key_value_prefix")
    op.drop_index("ix_tags_key_value_prefix", table_name="tags")
    op.drop_index("ix_params_key_value_prefix", table_name="params")
