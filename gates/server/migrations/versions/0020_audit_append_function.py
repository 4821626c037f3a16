"""gates: the audit chain's append as one server-side call on PostgreSQL

Revision ID: 0019
Revises: 0018

``mlgate_audit_append`` takes the chain's advisory lock, reads the head in a fresh snapshot
(a VOLATILE function's statements each take one under READ COMMITTED) and inserts the
transaction's entries, hashing each as ``gates.audit.service.entry_hash`` does: one round trip
under the lock instead of three. SQLite needs nothing (its writers are serialised).
"""

from __future__ import annotations

from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None

# Each entry's canonical record is prefix || seq || suffix (seq is known only under the lock);
# its hash is sha256(prev_hash || record) in lowercase hex, prev_hash of the first entry being
# the head's hash (64 zeros for an empty chain). 418581342580 = 0x6175646974 ("audit").
FUNCTION = """
CREATE OR REPLACE FUNCTION mlgate_audit_append(
    p_at bigint[], p_actor text[], p_kind text[], p_subject text[], p_payload text[],
    p_prefix text[], p_suffix text[]
) RETURNS bigint LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_seq bigint;
    v_prev text;
    v_hash text;
BEGIN
    PERFORM pg_advisory_xact_lock(418581342580);
    SELECT seq, hash INTO v_seq, v_prev FROM audit_log ORDER BY seq DESC LIMIT 1;
    IF NOT FOUND THEN
        v_seq := 0;
        v_prev := repeat('0', 64);
    END IF;
    FOR i IN 1 .. coalesce(array_length(p_at, 1), 0) LOOP
        v_seq := v_seq + 1;
        v_hash := encode(
            sha256(convert_to(v_prev || p_prefix[i] || v_seq::text || p_suffix[i], 'UTF8')),
            'hex'
        );
        INSERT INTO audit_log (seq, at, actor, kind, subject, payload, prev_hash, hash)
        VALUES (v_seq, p_at[i], p_actor[i], p_kind[i], p_subject[i], p_payload[i], v_prev, v_hash);
        v_prev := v_hash;
    END LOOP;
    RETURN v_seq;
END
$$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(FUNCTION)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "DROP FUNCTION IF EXISTS mlgate_audit_append("
            "bigint[], text[], text[], text[], text[], text[], text[])"
        )
