"""Every SQL statement of the registry domain. No HTTP and no business rules here."""

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
    case,
    cast,
    delete,
    exists,
    false,
    func,
    insert,
    literal_column,
    null,
    or_,
    select,
    union_all,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from registry.artifacts.paths import ArtifactPath
from registry.models import (
    ModelVersion,
    ModelVersionFile,
    ModelVersionTag,
    PointerEvent,
    RegisteredModel,
    RegisteredModelAlias,
    RegisteredModelTag,
)
from tracking.core.auth import ResourceScope
from tracking.core.db import (
    StatementCache,
    dialect_insert,
    dialect_name,
    id_list_value,
    in_id_list,
)
from tracking.search.sql import fnmatch_match, scope_predicate

_RM = RegisteredModel.__table__
_MV = ModelVersion.__table__


def _rowcount(result: Any) -> int:
    return int(result.rowcount or 0)


# --- registered models -------------------------------------------------------------------------


async def patterns_with_models(
    s: AsyncSession, patterns: Sequence[str], scope: ResourceScope
) -> set[str]:
    """Which fnmatch ``patterns`` match at least one model ``scope`` lets through (one query:
    an EXISTS per pattern)."""
    if not patterns:
        return set()
    checks = [
        exists(
            select(RegisteredModel.id).where(
                fnmatch_match(RegisteredModel.name, pattern),
                scope_predicate(scope, RegisteredModel.name),
            )
        ).label(f"p{index}")
        for index, pattern in enumerate(patterns)
    ]
    row = (await s.execute(select(*checks))).one()
    return {pattern for pattern, hit in zip(patterns, row, strict=True) if hit}


async def insert_registered_model(
    s: AsyncSession, *, name: str, user_id: str, description: str | None, now: int
) -> int | None:
    """Insert a model; None when the name is taken (race-free: ON CONFLICT DO NOTHING)."""
    result = await s.execute(
        dialect_insert(s)(RegisteredModel)
        .values(
            name=name,
            creation_timestamp=now,
            last_updated_timestamp=now,
            user_id=user_id,
            description=description,
            last_version=0,
        )
        .on_conflict_do_nothing(index_elements=[RegisteredModel.name])
        .returning(RegisteredModel.id)
    )
    found = result.scalar_one_or_none()
    return None if found is None else int(found)


async def get_model_row(s: AsyncSession, name: str, *, lock: bool = False) -> Any:
    """The model's row, or None. ``lock`` takes its row lock until commit (PostgreSQL).

    FOR NO KEY UPDATE, not FOR UPDATE: it serialises every pointer change of this model but
    does not block concurrent inserts of child rows (tags, versions), whose foreign-key checks
    take KEY SHARE. SQLite ignores it: its writers are already serialised by BEGIN IMMEDIATE.
    """
    stmt = select(_RM).where(RegisteredModel.name == name)
    if lock:
        stmt = stmt.with_for_update(key_share=True)
    return (await s.execute(stmt)).first()


async def update_registered_model(s: AsyncSession, model_id: int, **values: Any) -> None:
    await s.execute(update(RegisteredModel).where(RegisteredModel.id == model_id).values(**values))


async def rename_registered_model(s: AsyncSession, model_id: int, new_name: str, now: int) -> bool:
    """Rename; False when another model holds ``new_name`` (the unique index decides races)."""
    try:
        async with s.begin_nested():
            await s.execute(
                update(RegisteredModel)
                .where(RegisteredModel.id == model_id)
                .values(name=new_name, last_updated_timestamp=now)
            )
            # MLflow's rename touches every version of the model too.
            await s.execute(
                update(ModelVersion)
                .where(ModelVersion.model_id == model_id)
                .values(last_updated_timestamp=now)
            )
    except IntegrityError:
        return False
    return True


async def delete_registered_model(s: AsyncSession, model_id: int) -> None:
    # Versions, tags and aliases go by ON DELETE CASCADE; history rows keep their model name.
    await s.execute(delete(RegisteredModel).where(RegisteredModel.id == model_id))


async def upsert_model_tags(s: AsyncSession, model_id: int, tags: dict[str, str]) -> None:
    if not tags:
        return
    ins = dialect_insert(s)(RegisteredModelTag)
    await s.execute(
        ins.on_conflict_do_update(
            index_elements=[RegisteredModelTag.model_id, RegisteredModelTag.key],
            set_={"value": ins.excluded.value},
        ),
        [{"model_id": model_id, "key": k, "value": v} for k, v in tags.items()],
    )


async def model_tag(s: AsyncSession, model_id: int, key: str) -> str | None:
    """The value of one tag of a registered model, or None (one primary-key lookup)."""
    stmt = select(RegisteredModelTag.value).where(
        RegisteredModelTag.model_id == model_id, RegisteredModelTag.key == key
    )
    return (await s.execute(stmt)).scalar_one_or_none()


async def delete_model_tag(s: AsyncSession, model_id: int, key: str) -> int:
    result = await s.execute(
        delete(RegisteredModelTag).where(
            RegisteredModelTag.model_id == model_id, RegisteredModelTag.key == key
        )
    )
    return _rowcount(result)


# --- model versions ----------------------------------------------------------------------------


async def next_version(s: AsyncSession, model_id: int, now: int) -> int | None:
    """Hand out the model's next version number.

    One atomic UPDATE ... RETURNING: on PostgreSQL it row-locks the model until commit, so
    concurrent creates queue and each sees the previous one's number; a rolled-back create
    rolls its number back too. No gaps, no duplicates. None when the model is gone.
    """
    result = await s.execute(
        update(RegisteredModel)
        .where(RegisteredModel.id == model_id)
        .values(last_version=RegisteredModel.last_version + 1, last_updated_timestamp=now)
        .returning(RegisteredModel.last_version)
    )
    number = result.scalar_one_or_none()
    return None if number is None else int(number)


async def insert_version(s: AsyncSession, **values: Any) -> int:
    result = await s.execute(insert(ModelVersion).values(**values).returning(ModelVersion.id))
    return int(result.scalar_one())


async def registered_model_tag(s: AsyncSession, model_id: int, key: str) -> str | None:
    """One tag's value on a registered model (None when unset)."""
    value = await s.scalar(
        select(RegisteredModelTag.value).where(
            RegisteredModelTag.model_id == model_id, RegisteredModelTag.key == key
        )
    )
    return None if value is None else str(value)


async def get_version_row(s: AsyncSession, model_id: int, version: int) -> Any:
    return (
        await s.execute(
            select(_MV).where(ModelVersion.model_id == model_id, ModelVersion.version == version)
        )
    ).first()


async def update_version(s: AsyncSession, version_pk: int, **values: Any) -> None:
    await s.execute(update(ModelVersion).where(ModelVersion.id == version_pk).values(**values))


async def delete_version(s: AsyncSession, version_pk: int) -> None:
    await s.execute(delete(ModelVersion).where(ModelVersion.id == version_pk))


async def upsert_version_tags(s: AsyncSession, version_pk: int, tags: dict[str, str]) -> None:
    if not tags:
        return
    ins = dialect_insert(s)(ModelVersionTag)
    await s.execute(
        ins.on_conflict_do_update(
            index_elements=[ModelVersionTag.version_id, ModelVersionTag.key],
            set_={"value": ins.excluded.value},
        ),
        [{"version_id": version_pk, "key": k, "value": v} for k, v in tags.items()],
    )


async def delete_version_tag(s: AsyncSession, version_pk: int, key: str) -> int:
    result = await s.execute(
        delete(ModelVersionTag).where(
            ModelVersionTag.version_id == version_pk, ModelVersionTag.key == key
        )
    )
    return _rowcount(result)


# --- version files and the artifact write guard ---------------------------------------------------


async def insert_version_files(
    s: AsyncSession, version_pk: int, files: Sequence[tuple[str, int, str]]
) -> None:
    """Store a version's manifest: (relative path, size, sha256) per file."""
    if files:
        await s.execute(
            insert(ModelVersionFile),
            [
                {"version_id": version_pk, "path": path, "size": size, "sha256": sha256}
                for path, size, sha256 in files
            ],
        )


async def version_files(
    s: AsyncSession, version_pk: int, *, offset: int = 0, limit: int | None = None
) -> list[Any]:
    """A version's recorded files (path, size, sha256), in path order."""
    stmt = (
        select(ModelVersionFile.path, ModelVersionFile.size, ModelVersionFile.sha256)
        .where(ModelVersionFile.version_id == version_pk)
        .order_by(ModelVersionFile.path)
        .offset(offset)
    )
    if limit is not None:
        stmt = stmt.limit(limit)
    return list((await s.execute(stmt)).all())


def _protecting_select() -> Select:
    # No ORDER BY: any one protecting version will do, and an ordering would tempt the planner
    # to walk another index instead of the artifact_root lookup.
    return (
        select(RegisteredModel.name, ModelVersion.version, ModelVersion.artifact_root)
        .join(_RM, RegisteredModel.id == ModelVersion.model_id)
        .limit(1)
    )


async def version_protecting(s: AsyncSession, path: ArtifactPath) -> Any:
    """A version whose files are at, above or below ``path`` (name, version, root), or None.

    Two index lookups on ``artifact_root``: an exact match on ``path`` or one of its ancestors
    (the path is a root or inside one), then a range scan for roots inside ``path`` (a
    directory delete would take them along). ``[p + '/', p + '0')`` is exactly the strings
    starting with ``p + '/'`` in byte order ('0' follows '/'), which the column's collation
    guarantees on both databases.
    """
    if path.is_root:
        return (await s.execute(_protecting_select())).first()
    ancestors = ["/".join(path.parts[:n]) for n in range(1, len(path.parts) + 1)]
    found = (
        await s.execute(_protecting_select().where(ModelVersion.artifact_root.in_(ancestors)))
    ).first()
    if found is not None:
        return found
    return (
        await s.execute(
            _protecting_select().where(
                ModelVersion.artifact_root >= f"{path.posix}/",
                ModelVersion.artifact_root < f"{path.posix}0",
            )
        )
    ).first()


async def model_names_storing(s: AsyncSession, path: ArtifactPath, limit: int = 100) -> list[str]:
    """Names of models with a version whose files are at or above ``path`` (its root is
    ``path`` or an ancestor of it): one lookup on the ``artifact_root`` index."""
    if path.is_root:
        return []
    ancestors = ["/".join(path.parts[:n]) for n in range(1, len(path.parts) + 1)]
    stmt = (
        select(RegisteredModel.name)
        .join(_MV, ModelVersion.model_id == RegisteredModel.id)
        .where(ModelVersion.artifact_root.in_(ancestors))
        .distinct()
        .order_by(RegisteredModel.name)
        .limit(limit)
    )
    return [str(name) for name in (await s.execute(stmt)).scalars()]


async def stage_holders(s: AsyncSession, model_id: int) -> dict[str, int]:
    """The highest version in each stage: what ``models:/name/<stage>`` resolves to."""
    rows = await s.execute(
        select(ModelVersion.current_stage, func.max(ModelVersion.version))
        .where(ModelVersion.model_id == model_id)
        .group_by(ModelVersion.current_stage)
    )
    return {stage: int(version) for stage, version in rows}


async def move_to_stage(
    s: AsyncSession, model_id: int, version: int, stage: str, *, archive_others: bool, now: int
) -> list[int]:
    """Put ``version`` in ``stage`` and, with ``archive_others``, every other version of the
    stage in Archived, in one statement; returns the versions archived."""
    moved = ModelVersion.version == version
    stmt = update(ModelVersion).where(ModelVersion.model_id == model_id)
    if archive_others:
        stmt = stmt.where(or_(moved, ModelVersion.current_stage == stage)).values(
            current_stage=case((moved, stage), else_="Archived"), last_updated_timestamp=now
        )
    else:
        stmt = stmt.where(moved).values(current_stage=stage, last_updated_timestamp=now)
    result = await s.execute(stmt.returning(ModelVersion.version))
    return sorted(int(v) for v in result.scalars() if int(v) != version)


# --- aliases -----------------------------------------------------------------------------------


async def get_alias_version(s: AsyncSession, model_id: int, alias: str) -> int | None:
    found = (
        await s.execute(
            select(RegisteredModelAlias.version).where(
                RegisteredModelAlias.model_id == model_id, RegisteredModelAlias.alias == alias
            )
        )
    ).scalar_one_or_none()
    return None if found is None else int(found)


async def upsert_alias(s: AsyncSession, model_id: int, alias: str, version: int) -> None:
    ins = dialect_insert(s)(RegisteredModelAlias)
    await s.execute(
        ins.values(model_id=model_id, alias=alias, version=version).on_conflict_do_update(
            index_elements=[RegisteredModelAlias.model_id, RegisteredModelAlias.alias],
            set_={"version": ins.excluded.version},
        )
    )


async def delete_alias(s: AsyncSession, model_id: int, alias: str) -> int:
    result = await s.execute(
        delete(RegisteredModelAlias).where(
            RegisteredModelAlias.model_id == model_id, RegisteredModelAlias.alias == alias
        )
    )
    return _rowcount(result)


async def aliases_of_model(s: AsyncSession, model_id: int) -> dict[str, int]:
    rows = await s.execute(
        select(RegisteredModelAlias.alias, RegisteredModelAlias.version).where(
            RegisteredModelAlias.model_id == model_id
        )
    )
    return {alias: int(version) for alias, version in rows}


async def delete_aliases_of_version(s: AsyncSession, model_id: int, version: int) -> list[str]:
    result = await s.execute(
        delete(RegisteredModelAlias)
        .where(RegisteredModelAlias.model_id == model_id, RegisteredModelAlias.version == version)
        .returning(RegisteredModelAlias.alias)
    )
    return sorted(result.scalars())


# --- loading for responses -----------------------------------------------------------------------


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
    return select(both).order_by(both.c.kind, case((both.c.kind == 1, both.c.key)))


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
            select(_MV, RegisteredModel.name.label("model_name"))
            .join(_RM, RegisteredModel.id == ModelVersion.model_id)
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
        .join(_RM, RegisteredModel.id == ModelVersion.model_id)
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


def _versions_by_alias() -> Select:
    """Version ids joined with the aliases pointing at them (callers add the WHERE)."""
    return select(ModelVersion.id).join(
        RegisteredModelAlias,
        and_(
            RegisteredModelAlias.model_id == ModelVersion.model_id,
            RegisteredModelAlias.version == ModelVersion.version,
        ),
    )


def alias_target_select(model_id: Any, alias: str) -> Select:
    return _versions_by_alias().where(
        RegisteredModelAlias.model_id == model_id, RegisteredModelAlias.alias == alias
    )


async def load_registered_models(s: AsyncSession, model_ids: Sequence[int]) -> list[ModelBundle]:
    """Models in the order given, each with tags, aliases and latest versions: six queries."""
    if not model_ids:
        return []
    ids = list(model_ids)
    rows = (await s.execute(select(_RM).where(RegisteredModel.id.in_(ids)))).all()
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


# --- pointer history ---------------------------------------------------------------------------


async def insert_pointer_events(s: AsyncSession, events: Sequence[dict[str, Any]]) -> None:
    if events:
        # The same keys in every row, so the rows go in one multi-row statement.
        keys = {k for e in events for k in e}
        table = PointerEvent.__table__  # Core: ORM bulk inserts split rows by NULL columns
        await s.execute(insert(table), [{k: e.get(k) for k in keys} for e in events])  # type: ignore[arg-type]


async def pointer_history(
    s: AsyncSession,
    model_id: int,
    *,
    pointer: tuple[str, str] | None,
    offset: int,
    limit: int,
) -> list[Any]:
    """A model's pointer events, newest first; ``pointer`` narrows to one (kind, name)."""
    stmt = select(PointerEvent.__table__).where(PointerEvent.model_id == model_id)
    if pointer is not None:
        stmt = stmt.where(
            PointerEvent.pointer_kind == pointer[0], PointerEvent.pointer == pointer[1]
        )
    stmt = stmt.order_by(PointerEvent.timestamp.desc(), PointerEvent.id.desc())
    return list((await s.execute(stmt.offset(offset).limit(limit))).all())


async def pointer_event_at(
    s: AsyncSession, model_id: int, kind: str, pointer: str, timestamp: int
) -> Any:
    """The last event of one pointer at or before ``timestamp`` (ms), or None."""
    return (
        await s.execute(
            select(PointerEvent.__table__)
            .where(
                PointerEvent.model_id == model_id,
                PointerEvent.pointer_kind == kind,
                PointerEvent.pointer == pointer,
                PointerEvent.timestamp <= timestamp,
            )
            .order_by(PointerEvent.timestamp.desc(), PointerEvent.id.desc())
            .limit(1)
        )
    ).first()


async def versions_moved_onto(
    s: AsyncSession, model_id: int, kind: str, pointer: str, versions: Sequence[int]
) -> set[int]:
    """Which of ``versions`` the pointer history shows moved onto (kind, pointer) at some time."""
    if not versions:
        return set()
    moved = PointerEvent.to_version.in_(versions) | (
        PointerEvent.version.in_(versions) & PointerEvent.action.in_(("transition", "set_alias"))
    )
    stmt = select(PointerEvent.to_version, PointerEvent.version).where(
        PointerEvent.model_id == model_id,
        PointerEvent.pointer_kind == kind,
        PointerEvent.pointer == pointer,
        moved,
    )
    wanted = set(versions)
    found: set[int] = set()
    for to_version, version in await s.execute(stmt):
        found.update(v for v in (to_version, version) if v in wanted)
    return found


async def version_ids_of_run(s: AsyncSession, model_id: int, run_id: str, limit: int) -> list[int]:
    """Primary keys of the model's versions registered from ``run_id``, newest first."""
    stmt = (
        select(ModelVersion.id)
        .where(ModelVersion.model_id == model_id, ModelVersion.run_id == run_id)
        .order_by(ModelVersion.version.desc())
        .limit(limit)
    )
    return [int(v) for v in (await s.execute(stmt)).scalars()]


# --- web UI reads (model pages) ------------------------------------------------------------------


def model_versions_select(model_id: int) -> Select:
    """Ids of one model's versions, newest first (the model page's versions table)."""
    return (
        select(ModelVersion.id)
        .where(ModelVersion.model_id == model_id)
        .order_by(ModelVersion.version.desc())
    )


async def model_ids_by_names(s: AsyncSession, names: Sequence[str]) -> dict[str, int]:
    if not names:
        return {}
    rows = await s.execute(
        select(RegisteredModel.name, RegisteredModel.id).where(
            RegisteredModel.name.in_(sorted(set(names)))
        )
    )
    return {str(name): int(pk) for name, pk in rows}


def alias_targets_select(pairs: Sequence[tuple[int, str]]) -> Select:
    """Ids of the versions several (model id, alias) pairs point at, in one statement."""
    wanted = [
        and_(RegisteredModelAlias.model_id == model_id, RegisteredModelAlias.alias == alias)
        for model_id, alias in pairs
    ]
    return _versions_by_alias().where(or_(*wanted) if wanted else false())


async def pointer_names(s: AsyncSession, model_id: int, limit: int) -> list[tuple[str, str]]:
    """The distinct (kind, pointer) pairs a model's history mentions, stages first."""
    stmt = (
        select(PointerEvent.pointer_kind, PointerEvent.pointer)
        .where(PointerEvent.model_id == model_id)
        .group_by(PointerEvent.pointer_kind, PointerEvent.pointer)
        .order_by(PointerEvent.pointer_kind.desc(), PointerEvent.pointer)
        .limit(limit)
    )
    return [(str(kind), str(pointer)) for kind, pointer in await s.execute(stmt)]


async def newest_pointer_event_id(
    s: AsyncSession, model_id: int, kind: str, pointer: str
) -> int | None:
    """The id of the last history row written for one pointer (rows of a model are written
    under its row lock, so a higher id is a later move)."""
    return (
        await s.execute(
            select(func.max(PointerEvent.id)).where(
                PointerEvent.model_id == model_id,
                PointerEvent.pointer_kind == kind,
                PointerEvent.pointer == pointer,
            )
        )
    ).scalar_one_or_none()


async def versions_with_digest(
    s: AsyncSession, digest: str, model_name: str | None, limit: int
) -> list[tuple[str, int]]:
    """(model name, version) of versions whose manifest digest is ``digest``."""
    query = (
        select(RegisteredModel.name, ModelVersion.version)
        .join(RegisteredModel, RegisteredModel.id == ModelVersion.model_id)
        .where(ModelVersion.manifest_digest == digest)
    )
    if model_name is not None:
        query = query.where(RegisteredModel.name == model_name)
    query = query.order_by(RegisteredModel.name, ModelVersion.version).limit(limit)
    return [(name, int(version)) for name, version in (await s.execute(query)).all()]
