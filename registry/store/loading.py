"""Loading models and versions for responses, and the selects searches and lookups reuse."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    Select,
    String,
    and_,
    bindparam,
    cast,
    func,
    literal_column,
    null,
    select,
    union_all,
)
from sqlalchemy.ext.asyncio import AsyncSession

from registry.models import (
    ModelVersion,
    ModelVersionTag,
    RegisteredModel,
    RegisteredModelAlias,
    RegisteredModelTag,
)
from registry.store.tables import MV, RM
from tracking.core.db import StatementCache, dialect_name, id_list_value, in_id_list


@dataclass(slots=True)
class VersionBundle:
    """A version's row (with its model's name) plus tags and aliases."""

    row: Any
    tags: list[tuple[str, str]] = field(default_factory=list)
    aliases: list[str] = field(default_factory=list)


@dataclass(slots=True)
class ModelBundle:
    row: Any
    tags: list[tuple[str, str]] = field(default_factory=list)
    aliases: list[tuple[str, int]] = field(default_factory=list)
    latest_versions: list[VersionBundle] = field(default_factory=list)


def _build_tags_and_aliases(dialect: str) -> Any:
    tags: Any = select(
        ModelVersionTag.version_id.label("version_id"),
        literal_column("0").label("kind"),
        ModelVersionTag.key.label("key"),
        ModelVersionTag.value.label("value"),
    ).where(in_id_list(ModelVersionTag.version_id, dialect))
    aliases = (
        select(ModelVersion.id, literal_column("1"), RegisteredModelAlias.alias, null_string())
        .join(
            RegisteredModelAlias,
            and_(
                RegisteredModelAlias.model_id == ModelVersion.model_id,
                RegisteredModelAlias.version == ModelVersion.version,
            ),
        )
        .where(in_id_list(ModelVersion.id, dialect))
    )
    both = union_all(tags, aliases).subquery()
    # Tags and aliases each in key order (the resolve statements of store.prebuilt answer in
    # the same order).
    return select(both).order_by(both.c.kind, both.c.key)


_TAGS_AND_ALIASES = StatementCache(_build_tags_and_aliases)


async def load_versions(s: AsyncSession, versions: Sequence[int] | Select) -> list[VersionBundle]:
    """Versions with tags and aliases: two queries however many there are (no N+1).

    ``versions`` is a list of primary keys (kept in that order) or a select of them (ordered
    by model and version). A select is resolved inside the row query itself, so the choice of
    versions and their stages come from one snapshot even under READ COMMITTED: a reader
    racing a transition sees the state before or after it, never a mix.
    """
    if isinstance(versions, Select):
        chosen: Any = ModelVersion.id.in_(versions.scalar_subquery())
        order: list[Any] = [ModelVersion.model_id, ModelVersion.version]
    else:
        if not versions:
            return []
        chosen, order = ModelVersion.id.in_(list(versions)), []
    rows = (
        await s.execute(
            select(MV, RegisteredModel.name.label("model_name"))
            .join(RM, RegisteredModel.id == ModelVersion.model_id)
            .where(chosen)
            .order_by(*order)
        )
    ).all()
    if not rows:
        return []
    bundles = {r.id: VersionBundle(r) for r in rows}
    ids = list(bundles)
    # Tags and aliases in one statement (kind 0: a tag, kind 1: an alias, in alias order).
    bind = {"ids": id_list_value(ids, dialect_name(s))}
    for version_id, kind, key, value in await s.execute(_TAGS_AND_ALIASES(s), bind):
        if kind == 0:
            bundles[version_id].tags.append((key, value))
        else:
            bundles[version_id].aliases.append(key)
    if isinstance(versions, Select):
        return list(bundles.values())
    return [bundles[i] for i in versions if i in bundles]


def latest_versions_select(model_ids: Sequence[int], stages: Iterable[str] | None = None) -> Select:
    """Ids of the highest version per (model, stage): what ``models:/name/<stage>`` loads."""
    latest = (
        select(
            ModelVersion.model_id,
            func.max(ModelVersion.version).label("version"),
        )
        .where(ModelVersion.model_id.in_(list(model_ids)))
        .group_by(ModelVersion.model_id, ModelVersion.current_stage)
    )
    if stages is not None:
        latest = latest.where(ModelVersion.current_stage.in_(list(stages)))
    grouped = latest.subquery()
    return select(ModelVersion.id).join(
        grouped,
        and_(
            ModelVersion.model_id == grouped.c.model_id,
            ModelVersion.version == grouped.c.version,
        ),
    )


def null_string() -> Any:
    return cast(null(), String)


def model_named(name: str) -> Any:
    """The id of the model called ``name``, as a scalar subquery (one statement with the rest)."""
    return select(RegisteredModel.id).where(RegisteredModel.name == name).scalar_subquery()


def latest_versions_of_select(name: str, stages: Iterable[str]) -> Select:
    """Like ``latest_versions_select`` for one model found by name, in the same statement."""
    latest = (
        select(ModelVersion.model_id, func.max(ModelVersion.version).label("version"))
        .where(ModelVersion.model_id == model_named(name))
        .where(ModelVersion.current_stage.in_(list(stages)))
        .group_by(ModelVersion.model_id, ModelVersion.current_stage)
    ).subquery()
    return select(ModelVersion.id).join(
        latest,
        and_(ModelVersion.model_id == latest.c.model_id, ModelVersion.version == latest.c.version),
    )


def _build_version_location(_dialect: str) -> Any:
    return (
        select(ModelVersion.storage_location, ModelVersion.source, ModelVersion.artifact_root)
        .join(RM, RegisteredModel.id == ModelVersion.model_id)
        .where(RegisteredModel.name == bindparam("name"))
        .where(ModelVersion.version == bindparam("version"))
    )


_VERSION_LOCATION = StatementCache(_build_version_location)


async def version_location(s: AsyncSession, name: str, version: int) -> Any | None:
    """A version's ``storage_location``, ``source`` and ``artifact_root`` by model name and
    number, in one indexed read (None: no such version)."""
    params = {"name": name, "version": version}
    return (await s.execute(_VERSION_LOCATION(s), params)).first()


def highest_version_select(model_id: Any) -> Select:
    return (
        select(ModelVersion.id)
        .where(ModelVersion.model_id == model_id)
        .order_by(ModelVersion.version.desc())
        .limit(1)
    )


def versions_by_alias() -> Select:
    """Version ids joined with the aliases pointing at them (callers add the WHERE)."""
    return select(ModelVersion.id).join(
        RegisteredModelAlias,
        and_(
            RegisteredModelAlias.model_id == ModelVersion.model_id,
            RegisteredModelAlias.version == ModelVersion.version,
        ),
    )


def alias_target_select(model_id: Any, alias: str) -> Select:
    return versions_by_alias().where(
        RegisteredModelAlias.model_id == model_id, RegisteredModelAlias.alias == alias
    )


async def load_registered_models(s: AsyncSession, model_ids: Sequence[int]) -> list[ModelBundle]:
    """Models in the order given, each with tags, aliases and latest versions: six queries."""
    if not model_ids:
        return []
    ids = list(model_ids)
    rows = (await s.execute(select(RM).where(RegisteredModel.id.in_(ids)))).all()
    bundles = {r.id: ModelBundle(r) for r in rows}
    for model_id, key, value in await s.execute(
        select(RegisteredModelTag.model_id, RegisteredModelTag.key, RegisteredModelTag.value).where(
            RegisteredModelTag.model_id.in_(ids)
        )
    ):
        bundles[model_id].tags.append((key, value))
    for model_id, alias, version in await s.execute(
        select(
            RegisteredModelAlias.model_id, RegisteredModelAlias.alias, RegisteredModelAlias.version
        )
        .where(RegisteredModelAlias.model_id.in_(ids))
        .order_by(RegisteredModelAlias.alias)
    ):
        bundles[model_id].aliases.append((alias, int(version)))
    latest: dict[int, list[VersionBundle]] = defaultdict(list)
    for bundle in await load_versions(s, latest_versions_select(ids)):
        latest[bundle.row.model_id].append(bundle)
    for model_id, versions in latest.items():
        bundles[model_id].latest_versions = versions
    return [bundles[i] for i in ids if i in bundles]


async def search_ids(s: AsyncSession, stmt: Select, *, offset: int, limit: int) -> list[int]:
    """Run a search select (first column: primary key) for one page."""
    return [int(row[0]) for row in await s.execute(stmt.offset(offset).limit(limit))]


async def pointer_target(
    s: AsyncSession, model_id: int, *, stage: str | None = None, alias: str | None = None
) -> Any:
    """(version, storage_location, manifest_digest) of what a stage (its highest version) or
    an alias points at, in one statement; None when it points at nothing."""
    ids = (
        latest_versions_select([model_id], [stage])
        if stage is not None
        else alias_target_select(model_id, alias or "")
    )
    stmt = select(
        ModelVersion.version,
        ModelVersion.storage_location,
        ModelVersion.manifest_digest,
    ).where(ModelVersion.id.in_(ids))
    return (await s.execute(stmt)).first()


async def model_names(s: AsyncSession, model_ids: Sequence[int]) -> dict[int, str]:
    """The names of the models with these ids (missing ones are left out)."""
    if not model_ids:
        return {}
    rows = await s.execute(
        select(RegisteredModel.id, RegisteredModel.name).where(
            RegisteredModel.id.in_(list(model_ids))
        )
    )
    return {int(i): str(n) for i, n in rows}
