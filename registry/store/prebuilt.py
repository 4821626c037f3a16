"""The resolve requests' reads as prebuilt statements on the driver (tracking.core.driver).

What ``load_model("models:/name/<stage>")``, ``models:/name@alias`` and serving systems send
most: a version's download location, the latest versions in some stages, an alias's version, a
version by number. Each is one statement for the version rows (the model found by name inside
it) and, when there are versions, one for their tags and aliases. Lists travel as one parameter
(an array on PostgreSQL, JSON text on SQLite), so each statement's SQL never changes.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Sequence
from typing import Any

from sqlalchemy import String, and_, any_, bindparam, func, literal_column, select

from registry.models import ModelVersion, RegisteredModel, RegisteredModelAlias
from registry.store.loading import VersionBundle, _build_tags_and_aliases, _build_version_location
from registry.store.tables import MV, RM
from tracking.core.db import id_list_value
from tracking.core.driver import DriverRows, Prebuilt

# A version row as the driver returns it, with attribute access like an ORM row.
VersionRow = namedtuple("VersionRow", [*(c.name for c in MV.c), "model_name"])  # type: ignore[misc]
Location = namedtuple("Location", ["storage_location", "source", "artifact_root"])

_NAME = bindparam("name", type_=String)


def _model_id() -> Any:
    return select(RegisteredModel.id).where(RegisteredModel.name == _NAME).scalar_subquery()


def _version_rows(ids: Any) -> Any:
    """Version rows with their model's name, for the version ids ``ids`` selects."""
    return (
        select(*MV.c, RegisteredModel.name.label("model_name"))
        .join(RM, RegisteredModel.id == ModelVersion.model_id)
        .where(ModelVersion.id.in_(ids.scalar_subquery()))
        .order_by(ModelVersion.model_id, ModelVersion.version)
    )


def _in_stages(dialect: str) -> Any:
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import ARRAY

        return ModelVersion.current_stage == any_(bindparam("stages", type_=ARRAY(String)))
    return ModelVersion.current_stage.in_(
        select(literal_column("value")).select_from(func.json_each(bindparam("stages")))
    )


def _build_latest_in_stages(dialect: str) -> Any:
    latest = (
        select(ModelVersion.model_id, func.max(ModelVersion.version).label("version"))
        .where(ModelVersion.model_id == _model_id(), _in_stages(dialect))
        .group_by(ModelVersion.model_id, ModelVersion.current_stage)
    ).subquery()
    ids = select(ModelVersion.id).join(
        latest,
        and_(ModelVersion.model_id == latest.c.model_id, ModelVersion.version == latest.c.version),
    )
    return _version_rows(ids)


def _build_alias_target(_dialect: str) -> Any:
    ids = (
        select(ModelVersion.id)
        .join(
            RegisteredModelAlias,
            and_(
                RegisteredModelAlias.model_id == ModelVersion.model_id,
                RegisteredModelAlias.version == ModelVersion.version,
            ),
        )
        .where(
            RegisteredModelAlias.model_id == _model_id(),
            RegisteredModelAlias.alias == bindparam("alias", type_=String),
        )
    )
    return _version_rows(ids)


def _build_highest(_dialect: str) -> Any:
    ids = (
        select(ModelVersion.id)
        .where(ModelVersion.model_id == _model_id())
        .order_by(ModelVersion.version.desc())
        .limit(1)
    )
    return _version_rows(ids)


def _build_by_number(_dialect: str) -> Any:
    return (
        select(*MV.c, RegisteredModel.name.label("model_name"))
        .join(RM, RegisteredModel.id == ModelVersion.model_id)
        .where(RegisteredModel.name == _NAME, ModelVersion.version == bindparam("version"))
    )


VERSION_LOCATION = Prebuilt(_build_version_location)
LATEST_IN_STAGES = Prebuilt(_build_latest_in_stages)
ALIAS_TARGET = Prebuilt(_build_alias_target)
HIGHEST_VERSION = Prebuilt(_build_highest)
VERSION_BY_NUMBER = Prebuilt(_build_by_number)
TAGS_AND_ALIASES = Prebuilt(_build_tags_and_aliases)


async def location_of(r: DriverRows, name: str, version: int) -> Location | None:
    """A version's storage location, source and artifact root (None: no such version)."""
    row = await r.first(VERSION_LOCATION, {"name": name, "version": version})
    return None if row is None else Location._make(row)


async def versions_with_children(
    r: DriverRows, stmt: Prebuilt, params: dict[str, Any]
) -> list[VersionBundle]:
    """The versions ``stmt`` selects (in its order) with their tags and aliases: two statements,
    one when there are none."""
    rows = await r.all(stmt, params)
    if not rows:
        return []
    return await with_children(r, [VersionRow._make(row) for row in rows])


async def with_children(r: DriverRows, made: Sequence[Any]) -> list[VersionBundle]:
    """Version rows (:data:`VersionRow`, at least one) with their tags and aliases, in one
    statement."""
    bundles = {row.id: VersionBundle(row) for row in made}
    # Tags and aliases in one statement (kind 0: a tag, kind 1: an alias, in alias order).
    bind = {"ids": id_list_value(list(bundles), r.dialect)}
    for version_id, kind, key, value in await r.all(TAGS_AND_ALIASES, bind):
        if kind == 0:
            bundles[version_id].tags.append((key, value))
        else:
            bundles[version_id].aliases.append(key)
    return list(bundles.values())


def stages_value(stages: Sequence[str], dialect: str) -> Any:
    """The ``stages`` parameter of :data:`LATEST_IN_STAGES`."""
    if dialect == "postgresql":
        return list(stages)
    import json

    return json.dumps(list(stages))
