"""Every SQL statement of attestations: envelopes per move, and the signers' public keys."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import bindparam, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from gates.attestations.models import AttestationKey, GateAttestation
from tracking.core.db import dialect_insert, dialect_name, insert_for

# A version is moved onto a target rarely; this caps one listing all the same.
MAX_ATTESTATIONS_LISTED = 1000


_ATTESTATION_COLUMNS = (
    "id", "decision_id", "model_name", "version", "target", "manifest_digest",
    "pointer_event_id", "key_id", "payload_sha256", "envelope", "created_at",
)  # fmt: skip


def _build_insert(dialect: str) -> Any:
    """The key's insert (kept once per key id) and the attestation's, with a parameter per
    value (a_<column>, k_<column>): built once per dialect, since building these inserts cost
    more CPU than running them. PostgreSQL: one statement, the key's insert a data-modifying
    CTE of the attestation's; SQLite: the two statements."""
    keys = AttestationKey.__table__
    key = (
        insert_for(dialect)(keys)
        .values({c: bindparam(f"k_{c}", type_=keys.c[c].type) for c in _KEY_COLUMNS})
        .on_conflict_do_nothing(index_elements=[keys.c.key_id])
    )
    table: Any = GateAttestation.__table__
    attestation = insert(table).values(
        {c: bindparam(f"a_{c}", type_=table.c[c].type) for c in _ATTESTATION_COLUMNS}
    )
    if dialect == "postgresql":
        return (attestation.add_cte(key.cte("attestation_key")),)
    return (key, attestation)


_KEY_COLUMNS = ("key_id", "algorithm", "public_pem", "first_seen")
_INSERTS: dict[str, tuple[Any, ...]] = {}


async def insert_attestation(
    s: AsyncSession, row: GateAttestation, *, algorithm: str, pem: str
) -> None:
    """Store ``row`` and publish its signer's public key (kept once per key id)."""
    dialect = dialect_name(s)
    statements = _INSERTS.get(dialect)
    if statements is None:
        statements = _INSERTS[dialect] = _build_insert(dialect)
    params = {f"a_{c}": getattr(row, c) for c in _ATTESTATION_COLUMNS}
    key: dict[str, Any] = {"key_id": row.key_id, "algorithm": algorithm, "public_pem": pem}
    key["first_seen"] = row.created_at
    params.update({f"k_{c}": v for c, v in key.items()})
    for statement in statements:
        await s.execute(statement, params)


async def attestations_of(
    s: AsyncSession, model: str, version: int | None, limit: int = MAX_ATTESTATIONS_LISTED
) -> Sequence[GateAttestation]:
    query = select(GateAttestation).where(GateAttestation.model_name == model)
    if version is not None:
        query = query.where(GateAttestation.version == version)
    query = query.order_by(GateAttestation.created_at.desc(), GateAttestation.id.desc())
    return (await s.execute(query.limit(limit))).scalars().all()


async def attestation_of_move(
    s: AsyncSession, pointer_event_id: int, model: str, version: int, target: str
) -> GateAttestation | None:
    """The attestation of the gated move that wrote this pointer-history row, if any."""
    return (
        await s.execute(
            select(GateAttestation)
            .where(
                GateAttestation.pointer_event_id == pointer_event_id,
                GateAttestation.model_name == model,
                GateAttestation.version == version,
                GateAttestation.target == target,
            )
            .limit(1)
        )
    ).scalar_one_or_none()


async def remember_key(s: AsyncSession, key_id: str, algorithm: str, pem: str, now: int) -> None:
    await s.execute(
        dialect_insert(s)(AttestationKey)
        .values(key_id=key_id, algorithm=algorithm, public_pem=pem, first_seen=now)
        .on_conflict_do_nothing(index_elements=[AttestationKey.key_id])
    )


async def known_keys(s: AsyncSession, limit: int = 1000) -> Sequence[AttestationKey]:
    return (
        (await s.execute(select(AttestationKey).order_by(AttestationKey.first_seen).limit(limit)))
        .scalars()
        .all()
    )
