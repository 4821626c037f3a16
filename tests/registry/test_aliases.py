"""Aliases: set, move, delete, resolve, and MLflow's naming rules."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from registry import service
from tests.registry.factories import ACTOR, make_model, make_version
from tracking.core.errors import InvalidParameter, ResourceNotFound


async def test_alias_resolves_and_moves(session: AsyncSession) -> None:
    name = await make_model(session)
    await make_version(session, name)
    await make_version(session, name)
    await service.set_alias(session, name, "champion", "1", actor=ACTOR)
    got = await service.get_version_by_alias(session, name, "champion")
    assert got.version == "1" and got.aliases == ["champion"]
    await service.set_alias(session, name, "champion", 2, actor=ACTOR)
    assert (await service.get_version_by_alias(session, name, "champion")).version == "2"
    model = await service.get_registered_model(session, name)
    assert [(a.alias, a.version) for a in model.aliases] == [("champion", "2")]


async def test_unknown_alias_is_invalid_parameter_not_404(session: AsyncSession) -> None:
    name = await make_model(session)
    with pytest.raises(InvalidParameter) as err:
        await service.get_version_by_alias(session, name, "nope")
    assert err.value.error_code == "INVALID_PARAMETER_VALUE" and err.value.status_code == 400


async def test_latest_alias_is_the_highest_version(session: AsyncSession) -> None:
    name = await make_model(session)
    with pytest.raises(ResourceNotFound):
        await service.get_version_by_alias(session, name, "latest")
    await make_version(session, name, stage="Archived")
    await make_version(session, name)
    assert (await service.get_version_by_alias(session, name, "LATEST")).version == "2"


@pytest.mark.parametrize("alias", ["latest", "Latest", "v1", "V12", "bad alias", "a/b", "x" * 256])
async def test_reserved_and_malformed_aliases_are_refused(
    session: AsyncSession, alias: str
) -> None:
    name = await make_model(session)
    await make_version(session, name)
    with pytest.raises(InvalidParameter):
        await service.set_alias(session, name, alias, "1", actor=ACTOR)


async def test_alias_to_missing_version_is_not_found(session: AsyncSession) -> None:
    name = await make_model(session)
    with pytest.raises(ResourceNotFound):
        await service.set_alias(session, name, "champion", "3", actor=ACTOR)


async def test_delete_alias_and_deleting_a_missing_alias_is_a_no_op(
    session: AsyncSession,
) -> None:
    name = await make_model(session)
    await make_version(session, name)
    await service.set_alias(session, name, "champion", "1", actor=ACTOR)
    await service.delete_alias(session, name, "champion", actor=ACTOR)
    await service.delete_alias(session, name, "champion", actor=ACTOR)
    with pytest.raises(InvalidParameter):
        await service.get_version_by_alias(session, name, "champion")


async def test_deleting_a_version_removes_its_aliases(session: AsyncSession) -> None:
    name = await make_model(session)
    await make_version(session, name)
    await make_version(session, name)
    await service.set_alias(session, name, "champion", "1", actor=ACTOR)
    await service.set_alias(session, name, "challenger", "2", actor=ACTOR)
    await service.delete_model_version(session, name, "1", actor=ACTOR)
    model = await service.get_registered_model(session, name)
    assert [(a.alias, a.version) for a in model.aliases] == [("challenger", "2")]
