"""A stage move's statements, prebuilt (tracking.core.driver) for the move's own transaction.

``transition-stage`` and a gate's own move run them on the session's connection
(``session_rows``): the model's row lock, the version, the stage holders, the move itself, the
model's timestamp, the pointer history and the answer's tags and aliases. Each is the statement
the session path sends (``registry.store``), built once per dialect.
"""

from __future__ import annotations

import functools
from collections import namedtuple
from collections.abc import Sequence
from typing import Any

from sqlalchemy import String, bindparam, case, func, insert, or_, select, update

from registry.models import ModelVersion, PointerEvent, RegisteredModel
from registry.store.tables import MV, RM
from tracking.core.driver import DriverRows, Prebuilt

ModelRow = namedtuple("ModelRow", [c.name for c in RM.c])  # type: ignore[misc]
MovedRow = namedtuple("MovedRow", [c.name for c in MV.c])  # type: ignore[misc]

HISTORY_COLUMNS = (
    "model_id",
    "model_name",
    "pointer_kind",
    "pointer",
    "from_version",
    "to_version",
    "version",
    "action",
    "actor",
    "comment",
    "timestamp",
)


def _build_model_for_move(dialect: str) -> Any:
    stmt = select(RM).where(RegisteredModel.name == bindparam("name", type_=String))
    # As get_model_row(lock=True): FOR NO KEY UPDATE on PostgreSQL; SQLite's writer lock is
    # already held (BEGIN IMMEDIATE).
    return stmt.with_for_update(key_share=True) if dialect == "postgresql" else stmt


def _build_version(_dialect: str) -> Any:
    return select(MV).where(
        ModelVersion.model_id == bindparam("model_id"),
        ModelVersion.version == bindparam("version"),
    )


def _build_holders_but(_dialect: str) -> Any:
    # The highest version in each stage among the model's versions other than the moved one:
    # with the moved version's stage before and after, the holders before and after the move.
    return (
        select(ModelVersion.current_stage, func.max(ModelVersion.version))
        .where(
            ModelVersion.model_id == bindparam("model_id"),
            ModelVersion.version != bindparam("version"),
        )
        .group_by(ModelVersion.current_stage)
    )


def _build_move(archive: bool) -> Any:
    moved = ModelVersion.version == bindparam("version")
    stage = bindparam("stage", type_=String)
    stmt = update(ModelVersion).where(ModelVersion.model_id == bindparam("model_id"))
    if archive:
        stmt = stmt.where(or_(moved, ModelVersion.current_stage == stage)).values(
            current_stage=case((moved, stage), else_="Archived"),
            last_updated_timestamp=bindparam("now"),
        )
    else:
        stmt = stmt.where(moved).values(
            current_stage=stage, last_updated_timestamp=bindparam("now")
        )
    return stmt.returning(*MV.c)


def _build_touch_model(_dialect: str) -> Any:
    return (
        update(RegisteredModel)
        .where(RegisteredModel.id == bindparam("model_id"))
        .values(last_updated_timestamp=bindparam("now"))
    )


MODEL_FOR_MOVE = Prebuilt(_build_model_for_move)
VERSION = Prebuilt(_build_version)
HOLDERS_BUT = Prebuilt(_build_holders_but)
MOVE_ARCHIVING = Prebuilt(lambda _d: _build_move(True))
MOVE_ONLY = Prebuilt(lambda _d: _build_move(False))
TOUCH_MODEL = Prebuilt(_build_touch_model)


@functools.cache
def _history_insert(count: int) -> Prebuilt:
    """An INSERT of ``count`` pointer-history rows (a move writes one to three)."""

    def build(_dialect: str) -> Any:
        table = PointerEvent.__table__
        return insert(table).values(  # type: ignore[arg-type]
            [
                {c: bindparam(f"{c}_{i}", type_=table.c[c].type) for c in HISTORY_COLUMNS}
                for i in range(count)
            ]
        )

    return Prebuilt(build)


async def model_for_move(r: DriverRows, name: str) -> Any:
    """The model's row, locked until commit (None: no such model)."""
    row = await r.first(MODEL_FOR_MOVE, {"name": name})
    return None if row is None else ModelRow._make(row)


async def version_row(r: DriverRows, model_id: int, version: int) -> Any:
    row = await r.first(VERSION, {"model_id": model_id, "version": version})
    return None if row is None else MovedRow._make(row)


async def holders_but(r: DriverRows, model_id: int, version: int) -> dict[str, int]:
    rows = await r.all(HOLDERS_BUT, {"model_id": model_id, "version": version})
    return {stage: int(top) for stage, top in rows}


async def move(
    r: DriverRows, model_id: int, version: int, stage: str, *, archive_others: bool, now: int
) -> tuple[Any, list[int]]:
    """As ``store.move_to_stage``, also returning the moved version's row after the move."""
    stmt = MOVE_ARCHIVING if archive_others else MOVE_ONLY
    params = {"model_id": model_id, "version": version, "stage": stage, "now": now}
    moved, archived = None, []
    for row in await r.all(stmt, params):
        made: Any = MovedRow._make(row)
        if made.version == version:
            moved = made
        else:
            archived.append(int(made.version))
    return moved, sorted(archived)


async def touch_model(r: DriverRows, model_id: int, now: int) -> None:
    await r.all(TOUCH_MODEL, {"model_id": model_id, "now": now})


async def insert_history(r: DriverRows, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        params = {f"{c}_{i}": row[c] for i, row in enumerate(rows) for c in HISTORY_COLUMNS}
        await r.all(_history_insert(len(rows)), params)
