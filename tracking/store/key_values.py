"""The one key/value write of the domain: tags and params of runs, experiments, inputs, models.

Each of these tables is ``(owner, key) -> value`` with ``(owner, key)`` unique, so one batched
``INSERT ... ON CONFLICT (owner, key)`` serves them all, on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncSession

from tracking.core.db import StatementCache, insert_for


class KeyValueTable:
    """A ``(owner, key) -> value`` table and what a write does to a key that already exists.

    ``keep_first``: the stored value stays (``ON CONFLICT DO NOTHING``), MLflow's rule that a
    run's param never changes once logged (the caller reads back to report a change). Otherwise
    the new value replaces it (``ON CONFLICT DO UPDATE``), as for every tag.
    """

    def __init__(self, table: Any, owner: str, *, keep_first: bool = False) -> None:
        self.table: Table = table
        self.owner = owner
        self.keep_first = keep_first
        # Built once per dialect: building an upsert costs more than running it on SQLite.
        self._statement = StatementCache(self.build)

    def build(self, dialect: str) -> Any:
        stmt = insert_for(dialect)(self.table)
        conflict = [self.table.c[self.owner], self.table.c.key]
        if self.keep_first:
            return stmt.on_conflict_do_nothing(index_elements=conflict)
        return stmt.on_conflict_do_update(
            index_elements=conflict, set_={"value": stmt.excluded.value}
        )

    def statement(self, session: AsyncSession) -> Any:
        return self._statement(session)


async def write_key_values(
    s: AsyncSession, kv: KeyValueTable, owner_id: object, values: Mapping[str, str]
) -> None:
    """Write ``values`` for one owner in one batched statement (nothing when empty).

    Keys are unique here (a mapping), so no statement touches one row twice.
    """
    if not values:
        return
    conn = await s.connection()
    await conn.execute(
        kv.statement(s), [{kv.owner: owner_id, "key": k, "value": v} for k, v in values.items()]
    )
