"""Model versions through the service layer: numbering, sources, tags, stage transitions."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from registry import service
from registry.schemas import CreateModelVersion
from tests.registry.factories import ACTOR, make_logged_model, make_model, make_run, make_version
from tracking import service as tracking
from tracking.core.errors import InvalidParameter, ResourceNotFound


async def test_versions_are_numbered_from_one_and_never_reused(session: AsyncSession) -> None:
    name = await make_model(session)
    assert [await make_version(session, name) for _ in range(3)] == ["1", "2", "3"]
    await service.delete_model_version(session, name, "3", actor=ACTOR)
    assert await make_version(session, name) == "4"


async def test_new_version_is_ready_with_run_and_download_uri(session: AsyncSession) -> None:
    name = await make_model(session)
    run_id = await make_run(session)
    version = await make_version(session, name, run_id=run_id, tags={"k": "v"})
    out = await service.get_model_version(session, name, version)
    assert out.status == "READY"
    assert out.current_stage == "None"
    assert out.run_id == run_id
    assert out.source == f"runs:/{run_id}/model"
    assert [(t.key, t.value) for t in out.tags] == [("k", "v")]
    run = await tracking.get_run(session, run_id)
    assert await service.get_download_uri(session, name, version) == (
        f"{run.info.artifact_uri}/model"
    )


async def test_logged_model_source_takes_run_id_from_the_logged_model(
    session: AsyncSession,
) -> None:
    name = await make_model(session)
    run_id = await make_run(session)
    model_id = await make_logged_model(session, run_id)
    out = await service.create_model_version(
        session,
        CreateModelVersion(name=name, source=f"models:/{model_id}", model_id=model_id),
        actor=ACTOR,
    )
    assert out.run_id == run_id and out.model_id == model_id
    logged = await tracking.get_logged_model(session, model_id)
    assert await service.get_download_uri(session, name, out.version) == logged.info.artifact_uri


async def test_runs_source_resolves_to_the_logged_model_the_run_produced(
    session: AsyncSession,
) -> None:
    name = await make_model(session)
    run_id = await make_run(session)
    model_id = await make_logged_model(session, run_id, name="model")
    version = await make_version(session, name, run_id=run_id)
    out = await service.get_model_version(session, name, version)
    assert out.model_id == model_id
    logged = await tracking.get_logged_model(session, model_id)
    assert await service.get_download_uri(session, name, version) == logged.info.artifact_uri


async def test_unknown_model_version_and_bad_numbers(session: AsyncSession) -> None:
    name = await make_model(session)
    with pytest.raises(ResourceNotFound):
        await service.get_model_version(session, name, "1")
    with pytest.raises(ResourceNotFound):
        await make_version(session, f"{name}-missing")
    for bad in ("x", "-1", "1.5", ""):
        with pytest.raises(InvalidParameter):
            await service.get_model_version(session, name, bad)


async def test_update_description_and_tags(session: AsyncSession) -> None:
    name = await make_model(session)
    version = await make_version(session, name)
    out = await service.update_model_version(session, name, version, "notes")
    assert out.description == "notes"
    await service.set_model_version_tag(session, name, version, "a", "1")
    await service.delete_model_version_tag(session, name, version, "a")
    assert (await service.get_model_version(session, name, version)).tags == []
    with pytest.raises(ResourceNotFound):
        await service.delete_model_version_tag(session, name, version, "a")


async def test_transition_with_archive_leaves_one_production_version(
    session: AsyncSession,
) -> None:
    name = await make_model(session)
    for _ in range(3):
        await make_version(session, name, stage="Production")
    moved = await service.transition_stage(
        session, name, "1", "PRODUCTION", True, actor=ACTOR, comment="roll back"
    )
    assert moved.current_stage == "Production"
    stages = {
        v.version: v.current_stage
        for v in [await service.get_model_version(session, name, n) for n in ("1", "2", "3")]
    }
    assert stages == {"1": "Production", "2": "Archived", "3": "Archived"}


async def test_transition_without_archive_keeps_other_versions(session: AsyncSession) -> None:
    name = await make_model(session)
    await make_version(session, name, stage="Staging")
    await make_version(session, name, stage="staging")
    latest = await service.get_latest_versions(session, name, ["Staging"])
    assert [v.version for v in latest] == ["2"]
    assert (await service.get_model_version(session, name, "1")).current_stage == "Staging"


@pytest.mark.parametrize("stage", ["Shipping", "", "Deleted_Internal"])
async def test_unknown_stage_is_invalid_parameter(session: AsyncSession, stage: str) -> None:
    name = await make_model(session)
    version = await make_version(session, name)
    with pytest.raises(InvalidParameter):
        await service.transition_stage(session, name, version, stage, actor=ACTOR)


@pytest.mark.parametrize("stage", ["None", "Archived"])
async def test_archiving_only_applies_to_staging_and_production(
    session: AsyncSession, stage: str
) -> None:
    name = await make_model(session)
    version = await make_version(session, name)
    with pytest.raises(InvalidParameter) as err:
        await service.transition_stage(session, name, version, stage, True, actor=ACTOR)
    assert err.value.status_code == 400


async def test_delete_version_moves_stage_pointer_to_next_highest(session: AsyncSession) -> None:
    name = await make_model(session)
    await make_version(session, name, stage="Production")
    await make_version(session, name, stage="Production")
    await service.delete_model_version(session, name, "2", actor=ACTOR)
    latest = await service.get_latest_versions(session, name, ["Production"])
    assert [v.version for v in latest] == ["1"]
