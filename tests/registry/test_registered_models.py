"""Registered models through the service layer: names, tags, rename, delete, latest versions."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from registry import service
from registry.schemas import CreateRegisteredModel, KeyValue
from tests.registry.factories import ACTOR, make_model, make_version
from tracking.core.errors import InvalidParameter, ResourceAlreadyExists, ResourceNotFound


async def test_create_returns_the_model_with_tags_and_no_versions(
    session: AsyncSession, unique: str
) -> None:
    out = await service.create_registered_model(
        session,
        CreateRegisteredModel(
            name=f"m-{unique}", tags=[KeyValue("team", "fraud")], description="d"
        ),
        actor=ACTOR,
    )
    assert out.name == f"m-{unique}"
    assert out.description == "d"
    assert out.user_id == ACTOR
    assert [(t.key, t.value) for t in out.tags] == [("team", "fraud")]
    assert out.latest_versions == [] and out.aliases == []


async def test_duplicate_name_is_resource_already_exists(session: AsyncSession) -> None:
    name = await make_model(session)
    with pytest.raises(ResourceAlreadyExists):
        await make_model(session, name)


@pytest.mark.parametrize("bad", ["", "  ", "a/b", "a:b", "..", "a..b", ".", "x" * 257])
async def test_invalid_names_are_refused(session: AsyncSession, bad: str) -> None:
    with pytest.raises(InvalidParameter):
        await make_model(session, bad)


async def test_rename_moves_versions_and_clash_is_already_exists(
    session: AsyncSession, unique: str
) -> None:
    name = await make_model(session)
    other = await make_model(session)
    await make_version(session, name)
    renamed = await service.rename_registered_model(session, name, f"renamed-{unique}")
    assert renamed.name == f"renamed-{unique}"
    assert [v.version for v in renamed.latest_versions] == ["1"]
    with pytest.raises(ResourceNotFound):
        await service.get_registered_model(session, name)
    with pytest.raises(ResourceAlreadyExists):
        await service.rename_registered_model(session, f"renamed-{unique}", other)
    # The failed rename left the transaction usable and the model untouched.
    assert (await service.get_registered_model(session, f"renamed-{unique}")).name


async def test_update_sets_description(session: AsyncSession) -> None:
    name = await make_model(session)
    out = await service.update_registered_model(session, name, "better")
    assert out.description == "better"
    assert out.last_updated_timestamp >= out.creation_timestamp


async def test_delete_removes_versions_tags_and_aliases(session: AsyncSession) -> None:
    name = await make_model(session, tags={"t": "1"})
    version = await make_version(session, name, tags={"k": "v"})
    await service.set_alias(session, name, "champion", version, actor=ACTOR)
    await service.delete_registered_model(session, name, actor=ACTOR)
    with pytest.raises(ResourceNotFound):
        await service.get_model_version(session, name, version)
    # A new model with the same name starts empty, at version 1.
    await make_model(session, name)
    assert await make_version(session, name) == "1"
    assert (await service.get_registered_model(session, name)).aliases == []


async def test_tags_set_overwrite_and_delete(session: AsyncSession) -> None:
    name = await make_model(session)
    await service.set_registered_model_tag(session, name, "a", "1")
    await service.set_registered_model_tag(session, name, "a", "2")
    out = await service.get_registered_model(session, name)
    assert [(t.key, t.value) for t in out.tags] == [("a", "2")]
    await service.delete_registered_model_tag(session, name, "a")
    assert (await service.get_registered_model(session, name)).tags == []
    with pytest.raises(ResourceNotFound):
        await service.delete_registered_model_tag(session, name, "a")
    with pytest.raises(InvalidParameter):
        await service.set_registered_model_tag(session, name, "../x", "1")
    with pytest.raises(InvalidParameter):
        await service.set_registered_model_tag(session, name, "big", "x" * 100_001)


async def test_latest_versions_are_the_highest_per_stage(session: AsyncSession) -> None:
    name = await make_model(session)
    await make_version(session, name, stage="Production")
    await make_version(session, name, stage="Production")
    await make_version(session, name, stage="Staging")
    await make_version(session, name)
    latest = await service.get_latest_versions(session, name, None)
    assert {(v.current_stage, v.version) for v in latest} == {
        ("Production", "2"),
        ("Staging", "3"),
        ("None", "4"),
    }
    only = await service.get_latest_versions(session, name, ["production", "ARCHIVED"])
    assert [(v.current_stage, v.version) for v in only] == [("Production", "2")]
    with pytest.raises(InvalidParameter):
        await service.get_latest_versions(session, name, ["Shipping"])
    model = await service.get_registered_model(session, name)
    assert {v.version for v in model.latest_versions} == {"2", "3", "4"}
