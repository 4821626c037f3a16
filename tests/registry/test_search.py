"""Registry search: filter and order_by grammar, prompt exclusion, paging."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from registry import service
from registry.schemas import SearchModelVersions, SearchRegisteredModels
from tests.registry.factories import make_model, make_run, make_version
from tracking.core.errors import InvalidParameter

PROMPT = "tag.`mlflow.prompt.is_prompt` != 'true'"


async def _models(session: AsyncSession, filter: str, **kw: object) -> list[str]:
    found, _ = await service.search_registered_models(
        session,
        SearchRegisteredModels(filter=filter, **kw),  # type: ignore[arg-type]
    )
    return [m.name for m in found]


async def _versions(session: AsyncSession, filter: str, **kw: object) -> list[tuple[str, str]]:
    kw.setdefault("order_by", ["name ASC"])  # then version DESC, as every order ends
    found, _ = await service.search_model_versions(
        session,
        SearchModelVersions(filter=filter, **kw),  # type: ignore[arg-type]
    )
    return [(v.name, v.version) for v in found]


async def test_the_clients_prompt_clause_keeps_models_without_the_tag(
    session: AsyncSession, unique: str
) -> None:
    await make_model(session, f"p-{unique}-model")
    await make_model(session, f"p-{unique}-tagged", tags={"mlflow.prompt.is_prompt": "false"})
    await make_model(session, f"p-{unique}-prompt", tags={"mlflow.prompt.is_prompt": "true"})
    like = f"name LIKE 'p-{unique}-%'"
    expected = [f"p-{unique}-model", f"p-{unique}-tagged"]
    assert await _models(session, f"{like} AND {PROMPT}") == expected
    assert await _models(session, like) == expected  # prompts are left out by default too
    assert await _models(session, f"{like} AND tag.`mlflow.prompt.is_prompt` = 'false'") == expected
    prompts = await _models(session, f"{like} AND tags.`mlflow.prompt.is_prompt` = 'true'")
    assert prompts == [f"p-{unique}-prompt"]


async def test_model_filters_on_name_and_tags(session: AsyncSession, unique: str) -> None:
    await make_model(session, f"f-{unique}-a", tags={"team": "fraud", "tier": "1"})
    await make_model(session, f"f-{unique}-b", tags={"team": "growth"})
    await make_model(session, f"F-{unique}-c")
    assert await _models(session, f"name = 'f-{unique}-a'") == [f"f-{unique}-a"]
    assert await _models(session, f"name ILIKE 'f-{unique}-%'") == [
        f"F-{unique}-c",
        f"f-{unique}-a",
        f"f-{unique}-b",
    ]
    # LIKE is case-sensitive on both databases.
    assert await _models(session, f"name LIKE 'f-{unique}-%'") == [f"f-{unique}-a", f"f-{unique}-b"]
    assert await _models(session, f"name LIKE '%{unique}%' AND tags.team = 'fraud'") == [
        f"f-{unique}-a"
    ]
    # A model without the tag does not match != (only the prompt tag is special).
    assert await _models(session, f"name LIKE '%{unique}%' AND tags.team != 'fraud'") == [
        f"f-{unique}-b"
    ]
    assert await _models(session, f"name NOT IN ('f-{unique}-a') AND name LIKE '%{unique}%'") == [
        f"F-{unique}-c",
        f"f-{unique}-b",
    ]


async def test_model_order_by_and_pages(session: AsyncSession, unique: str) -> None:
    names = [await make_model(session, f"o-{unique}-{i}") for i in range(5)]
    like = f"name LIKE 'o-{unique}-%'"
    assert await _models(session, like, order_by=["name DESC"]) == names[::-1]
    found, _ = await service.search_registered_models(
        session, SearchRegisteredModels(filter=like, order_by=["timestamp DESC"])
    )
    # Newest update first; equal timestamps fall back to name ASC.
    assert [m.name for m in found] == [
        m.name for m in sorted(found, key=lambda m: (-m.last_updated_timestamp, m.name))
    ]
    page, token = await service.search_registered_models(
        session, SearchRegisteredModels(filter=like, max_results=2)
    )
    seen = [m.name for m in page]
    while token:
        page, token = await service.search_registered_models(
            session, SearchRegisteredModels(filter=like, max_results=2, page_token=token)
        )
        seen += [m.name for m in page]
    assert seen == names
    last, token = await service.search_registered_models(
        session, SearchRegisteredModels(filter=like, max_results=5)
    )
    assert len(last) == 5 and token is None  # no token when nothing more exists


@pytest.mark.parametrize(
    ("filter", "order_by"),
    [
        ("name = 'a' OR name = 'b'", []),
        ("(name = 'a')", []),
        ("run_id = 'x'", []),
        ("metrics.acc > 1", []),
        ("tags.t IS NULL", []),
        ("name = 3", []),
        ("", ["name", "name DESC"]),
        ("", ["tags.team"]),
        ("", ["version_number"]),
    ],
)
async def test_bad_model_searches_are_invalid_parameter(
    session: AsyncSession, filter: str, order_by: list[str]
) -> None:
    with pytest.raises(InvalidParameter):
        await service.search_registered_models(
            session, SearchRegisteredModels(filter=filter, order_by=order_by)
        )


async def test_max_results_cap_and_bad_token(session: AsyncSession) -> None:
    with pytest.raises(InvalidParameter):
        await service.search_registered_models(session, SearchRegisteredModels(max_results=1001))
    with pytest.raises(InvalidParameter):
        await service.search_model_versions(session, SearchModelVersions(max_results=200_001))
    with pytest.raises(InvalidParameter):
        await service.search_registered_models(session, SearchRegisteredModels(page_token="zz"))


async def test_version_filters(session: AsyncSession, unique: str) -> None:
    a = await make_model(session, f"v-{unique}-a")
    b = await make_model(session, f"v-{unique}-b")
    run_1, run_2 = await make_run(session), await make_run(session)
    await make_version(session, a, run_id=run_1, tags={"env": "prod"})
    await make_version(session, a, run_id=run_2)
    await make_version(session, b, run_id=run_1, tags={"env": "dev"})
    like = f"name LIKE 'v-{unique}-%'"
    assert await _versions(session, like) == [(a, "2"), (a, "1"), (b, "1")]
    # Default order (MLflow's): last_updated_timestamp DESC, then name ASC, version DESC.
    found, _ = await service.search_model_versions(session, SearchModelVersions(filter=like))
    keys = [(-v.last_updated_timestamp, v.name, -int(v.version)) for v in found]
    assert keys == sorted(keys) and len(keys) == 3
    assert await _versions(session, f"run_id = '{run_1}'") == [(a, "1"), (b, "1")]
    assert await _versions(session, f"run_id IN ('{run_1}', '{run_2}') AND name = '{a}'") == [
        (a, "2"),
        (a, "1"),
    ]
    assert await _versions(session, f"{like} AND version_number > 1") == [(a, "2")]
    assert await _versions(session, f"{like} AND version_number = '1'") == [(a, "1"), (b, "1")]
    assert await _versions(session, f"{like} AND tags.env = 'prod'") == [(a, "1")]
    assert await _versions(session, f"source_path = 'runs:/{run_2}/model'") == [(a, "2")]
    assert await _versions(session, like, order_by=["version_number ASC", "name DESC"]) == [
        (b, "1"),
        (a, "1"),
        (a, "2"),
    ]


@pytest.mark.parametrize(
    ("filter", "order_by"),
    [
        ("model_id = 'm-1'", []),
        ("source_path IN ('a')", []),
        ("version_number = 'x'", []),
        ("version_number LIKE '1'", []),
        ("name = 'a' OR name = 'b'", []),
        ("", ["source_path"]),
        ("", ["version_number", "version_number DESC"]),
    ],
)
async def test_bad_version_searches_are_invalid_parameter(
    session: AsyncSession, filter: str, order_by: list[str]
) -> None:
    with pytest.raises(InvalidParameter):
        await service.search_model_versions(
            session, SearchModelVersions(filter=filter, order_by=order_by)
        )
