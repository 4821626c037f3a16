"""The resolve requests' reads as prebuilt statements on the driver (tracking.core.driver).

What ``load_model("models:/name/<stage>")``, ``models:/name@alias`` and serving systems send
most: a version's download location, the latest versions in some stages, an alias's version, a
version by number. Each is ONE statement (the model found by name inside it): the version rows
and, in the same result, their tags and aliases, so an answer comes from one snapshot and one
round trip. Lists travel as one parameter (an array on PostgreSQL, JSON text on SQLite), so
each statement's SQL never changes.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Sequence
from typing import Any

import msgspec
from sqlalchemy import (
    Select,
    String,
    Text,
    and_,
    any_,
    bindparam,
    cast,
    func,
    literal_column,
    select,
)

from registry.models import ModelVersion, ModelVersionTag, RegisteredModel, RegisteredModelAlias
from registry.store.loading import VersionBundle, _build_version_location
from registry.store.tables import MV, RM
from tracking.core.driver import DriverRows, Prebuilt

# A version row as the driver returns it, with attribute access like an ORM row.
VersionRow = namedtuple("VersionRow", [*(c.name for c in MV.c), "model_name"])  # type: ignore[misc]
Location = namedtuple("Location", ["storage_location", "source", "artifact_root"])

_NAME = bindparam("name", type_=String)
_decode_json = msgspec.json.decode


def _model_id() -> Any:
    return select(RegisteredModel.id).where(RegisteredModel.name == _NAME).scalar_subquery()


def _json_list(dialect: str, item: Any, key: Any, source: Any, where: Any) -> Any:
    """JSON text of ``item`` for each row of ``source`` matching ``where`` (correlated with the
    version row), in ``key`` order; NULL when there are none."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import aggregate_order_by

        agg = func.json_agg(aggregate_order_by(item, key))
        return select(cast(agg, Text)).select_from(source).where(where).scalar_subquery()
    # SQLite (3.40 has no ORDER BY inside an aggregate): aggregate an ordered subquery, which
    # SQLite never flattens into an aggregate, so its order is the list's order.
    ordered = (
        select(item.label("item"))
        .select_from(source)
        .where(where)
        .order_by(key)
        .correlate(ModelVersion)
        .subquery()
    )
    return (
        select(func.json_group_array(func.json(ordered.c.item)))
        .having(func.count() > literal_column("0"))
        .scalar_subquery()
    )


def children_json(dialect: str) -> tuple[Any, Any]:
    """A version row's tags (``[[key, value], ...]``) and aliases (``[alias, ...]``) as JSON
    text, each in key order, NULL when none: two scalar subqueries correlated with
    ``model_versions``."""
    tag, alias = ModelVersionTag, RegisteredModelAlias
    array = func.json_build_array if dialect == "postgresql" else func.json_array
    tags = _json_list(
        dialect, array(tag.key, tag.value), tag.key, tag, tag.version_id == ModelVersion.id
    )
    aliases = _json_list(
        dialect,
        func.to_json(alias.alias) if dialect == "postgresql" else func.json_quote(alias.alias),
        alias.alias,
        alias,
        and_(alias.model_id == ModelVersion.model_id, alias.version == ModelVersion.version),
    )
    return tags.label("tags_json"), aliases.label("aliases_json")


def bundle_of(row: Any, tags: str | None, aliases: str | None) -> VersionBundle:
    """A :data:`VersionRow` with the tags and aliases of :func:`children_json`."""
    bundle = VersionBundle(row)
    if tags is not None:
        bundle.tags = [(k, v) for k, v in _decode_json(tags)]
    if aliases is not None:
        bundle.aliases = _decode_json(aliases)
    return bundle


def _version_rows(ids: Any, dialect: str) -> Any:
    """The versions ``ids`` selects (a select of version ids, or a condition on the version and
    its model) by model, then number, with their model's name, tags and aliases: one statement,
    so one snapshot and one round trip (each row: the version's columns, its model's name, then
    :func:`children_json`).
    """
    tags, aliases = children_json(dialect)
    return (
        select(
            *MV.c,
            RegisteredModel.name.label("model_name"),
            tags,
            aliases,
        )
        .join(RM, RegisteredModel.id == ModelVersion.model_id)
        .where(ModelVersion.id.in_(ids.scalar_subquery()) if isinstance(ids, Select) else ids)
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
    return _version_rows(ids, dialect)


def _build_alias_target(dialect: str) -> Any:
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
    return _version_rows(ids, dialect)


def _build_highest(dialect: str) -> Any:
    ids = (
        select(ModelVersion.id)
        .where(ModelVersion.model_id == _model_id())
        .order_by(ModelVersion.version.desc())
        .limit(1)
    )
    return _version_rows(ids, dialect)


def _build_by_number(dialect: str) -> Any:
    found = and_(RegisteredModel.name == _NAME, ModelVersion.version == bindparam("version"))
    return _version_rows(found, dialect)


VERSION_LOCATION = Prebuilt(_build_version_location)
LATEST_IN_STAGES = Prebuilt(_build_latest_in_stages)
ALIAS_TARGET = Prebuilt(_build_alias_target)
HIGHEST_VERSION = Prebuilt(_build_highest)
VERSION_BY_NUMBER = Prebuilt(_build_by_number)


async def location_of(r: DriverRows, name: str, version: int) -> Location | None:
    """A version's storage location, source and artifact root (None: no such version)."""
    row = await r.first(VERSION_LOCATION, {"name": name, "version": version})
    return None if row is None else Location._make(row)


async def versions_with_children(
    r: DriverRows, stmt: Prebuilt, params: dict[str, Any]
) -> list[VersionBundle]:
    """The versions ``stmt`` (a :func:`_version_rows` statement) selects, in its order, with
    their tags and aliases: one statement."""
    rows = await r.all(stmt, params)
    return [bundle_of(VersionRow._make(columns), tags, aliases) for *columns, tags, aliases in rows]


def stages_value(stages: Sequence[str], dialect: str) -> Any:
    """The ``stages`` parameter of :data:`LATEST_IN_STAGES`."""
    if dialect == "postgresql":
        return list(stages)
    import json

    return json.dumps(list(stages))
