"""Model versions, their tags, their frozen files (the artifact write guard) and stages."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Select, case, delete, func, insert, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from registry.artifacts.paths import ArtifactPath
from registry.models import (
    ModelVersion,
    ModelVersionFile,
    ModelVersionTag,
    RegisteredModel,
    RegisteredModelTag,
)
from registry.store.tables import MV, RM, rowcount
from tracking.core.db import dialect_insert
from tracking.core.driver import DriverRows, Prebuilt


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


# A new version in one statement (PostgreSQL): its number taken from the model's row (the
# UPDATE row-locks it until commit, as :func:`next_version`), the version row, its tags and its
# file manifest. No row back: the model is gone.
_PG_REGISTER_VERSION = text("""
    WITH numbered AS (
        UPDATE registered_models
        SET last_version = last_version + 1,
            last_updated_timestamp = CAST(:now AS BIGINT)
        WHERE id = CAST(:model_id AS BIGINT)
        RETURNING id, last_version
    ),
    version AS (
        INSERT INTO model_versions (model_id, version, creation_timestamp,
                                    last_updated_timestamp, user_id, current_stage, description,
                                    source, storage_location, run_id, run_link, logged_model_id,
                                    status, artifact_root, manifest_digest)
        SELECT numbered.id, numbered.last_version, CAST(:now AS BIGINT), CAST(:now AS BIGINT),
               CAST(:user_id AS VARCHAR), 'None', CAST(:description AS TEXT),
               CAST(:source AS VARCHAR), CAST(:storage_location AS VARCHAR),
               CAST(:run_id AS VARCHAR), CAST(:run_link AS VARCHAR),
               CAST(:logged_model_id AS VARCHAR), 'READY', CAST(:artifact_root AS VARCHAR),
               CAST(:manifest_digest AS VARCHAR)
        FROM numbered
        RETURNING id, version
    ),
    version_tags AS (
        INSERT INTO model_version_tags (version_id, key, value)
        SELECT version.id, t.key, t.value
        FROM version, unnest(CAST(:tag_keys AS VARCHAR[]), CAST(:tag_values AS TEXT[]))
             AS t(key, value)
    ),
    version_files AS (
        INSERT INTO model_version_files (version_id, path, size, sha256)
        SELECT version.id, f.path, f.size, f.sha256
        FROM version, unnest(CAST(:paths AS VARCHAR[]), CAST(:sizes AS BIGINT[]),
                             CAST(:sha256s AS VARCHAR[]))
             AS f(path, size, sha256)
    )
    SELECT id, version FROM version
""")
PG_REGISTER_VERSION = Prebuilt(lambda _dialect: _PG_REGISTER_VERSION)


async def register_version_on_driver(
    r: DriverRows,
    *,
    model_id: int,
    now: int,
    tags: dict[str, str],
    files: Sequence[tuple[str, int, str]],
    **values: Any,
) -> tuple[int, int] | None:
    """:func:`next_version`, :func:`insert_version`, :func:`upsert_version_tags` (of a new
    version) and :func:`insert_version_files` as one statement on the driver of the caller's
    transaction (PostgreSQL); the version's (row id, number), or None when the model is gone.
    ``values``: the version's other columns (user_id, description, source, storage_location,
    run_id, run_link, logged_model_id, artifact_root, manifest_digest)."""
    row = await r.first(
        PG_REGISTER_VERSION,
        {
            **values,
            "model_id": model_id,
            "now": now,
            "tag_keys": list(tags),
            "tag_values": list(tags.values()),
            "paths": [f[0] for f in files],
            "sizes": [f[1] for f in files],
            "sha256s": [f[2] for f in files],
        },
    )
    return None if row is None else (int(row[0]), int(row[1]))


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
            select(MV).where(ModelVersion.model_id == model_id, ModelVersion.version == version)
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
    return rowcount(result)


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
        .join(RM, RegisteredModel.id == ModelVersion.model_id)
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
        .join(MV, ModelVersion.model_id == RegisteredModel.id)
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
