"""A stage move's statements, prebuilt (tracking.core.driver) for the move's own transaction.

``transition-stage`` and a gate's own move run them on the session's connection
(``session_rows``): the model's row lock, the version, the stage holders, the move itself, the
model's timestamp and the pointer history (the answer's tags and aliases come with the
version's row). Each is the statement
the session path sends (``registry.store``), built once per dialect.
"""

from __future__ import annotations

import functools
from collections import namedtuple
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
from sqlalchemy import String, Text, bindparam, case, cast, func, insert, or_, select, update

from registry.models import ModelVersion, PointerEvent, RegisteredModel
from registry.store import prebuilt
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


def _build_version(dialect: str) -> Any:
    """The moved version's row, the stage holders among the model's other versions (JSON
    ``[[stage, highest version], ...]``), and the version's tags and aliases (for the answer:
    a move changes neither): one statement, sent once the model's row is locked."""
    model_id: Any = bindparam("model_id")
    version: Any = bindparam("version")
    # The highest version in each stage among the model's versions other than the moved one:
    # with the moved version's stage before and after, the holders before and after the move.
    others = (
        select(
            ModelVersion.current_stage.label("stage"), func.max(ModelVersion.version).label("top")
        )
        .where(ModelVersion.model_id == model_id, ModelVersion.version != version)
        .group_by(ModelVersion.current_stage)
        .subquery()
    )
    pairs: Any
    if dialect == "postgresql":
        pairs = cast(func.json_agg(func.json_build_array(others.c.stage, others.c.top)), Text)
    else:
        pairs = func.json_group_array(func.json_array(others.c.stage, others.c.top))
    holders = select(pairs).scalar_subquery().label("holders_json")
    tags, aliases = prebuilt.children_json(dialect)
    return select(*MV.c, holders, tags, aliases).where(
        ModelVersion.model_id == model_id, ModelVersion.version == version
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


def _build_move_touching(archive: bool, dialect: str) -> Any:
    """The move and, on PostgreSQL, the model's timestamp in the same statement (a
    data-modifying CTE runs to completion whether or not the query reads it); elsewhere the
    move alone, and :data:`TOUCH_MODEL` after it."""
    if dialect != "postgresql":
        return _build_move(archive)
    touched = _build_touch_model(dialect).cte("touched")
    moved = _build_move(archive).cte("moved")
    return select(*moved.c).add_cte(touched)


MODEL_FOR_MOVE = Prebuilt(_build_model_for_move)
VERSION = Prebuilt(_build_version)
MOVE_ARCHIVING = Prebuilt(functools.partial(_build_move_touching, True))
MOVE_ONLY = Prebuilt(functools.partial(_build_move_touching, False))
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


@dataclass(frozen=True, slots=True)
class VersionForMove:
    row: Any  # a MovedRow
    # The highest version in each stage among the model's other versions.
    holders: dict[str, int]
    tags: str | None  # JSON text (store.prebuilt.children_json)
    aliases: str | None


async def version_for_move(r: DriverRows, model_id: int, version: int) -> VersionForMove | None:
    """The version to move with what the move needs (None: no such version)."""
    found = await r.first(VERSION, {"model_id": model_id, "version": version})
    if found is None:
        return None
    *columns, holders, tags, aliases = found
    pairs = msgspec.json.decode(holders) if holders is not None else []
    return VersionForMove(
        MovedRow._make(columns), {stage: int(top) for stage, top in pairs}, tags, aliases
    )


async def move(
    r: DriverRows, model_id: int, version: int, stage: str, *, archive_others: bool, now: int
) -> tuple[Any, list[int]]:
    """As ``store.move_to_stage``, also returning the moved version's row after the move; on
    PostgreSQL it also sets the model's ``last_updated_timestamp`` (:func:`touch_model`)."""
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
    """The model's ``last_updated_timestamp`` after a move (:func:`move` did it already on
    PostgreSQL)."""
    if r.dialect != "postgresql":
        await r.all(TOUCH_MODEL, {"model_id": model_id, "now": now})


async def insert_history(r: DriverRows, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        params = {f"{c}_{i}": row[c] for i, row in enumerate(rows) for c in HISTORY_COLUMNS}
        await r.all(_history_insert(len(rows)), params)
