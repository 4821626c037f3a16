"""Registry list endpoints load children with a fixed number of queries: an N+1 fails here."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession

from registry import service
from registry.schemas import SearchModelVersions, SearchRegisteredModels
from tests.registry.factories import ACTOR, make_model, make_run, make_version


@contextmanager
def count_queries(session: AsyncSession) -> Iterator[list[str]]:
    statements: list[str] = []
    bind: Any = session.bind
    engine = bind.sync_engine if hasattr(bind, "sync_engine") else bind

    def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", before)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", before)


async def _populate(session: AsyncSession, prefix: str, models: int, versions: int) -> None:
    run_id = await make_run(session)
    for m in range(models):
        name = await make_model(session, f"{prefix}-{m}", tags={"team": "fraud", "tier": str(m)})
        for v in range(versions):
            await make_version(
                session, name, run_id=run_id, tags={"k": str(v)}, stage="Production" if v else None
            )
        await service.set_alias(session, name, "champion", "1", actor=ACTOR)


async def _model_search_queries(session: AsyncSession, prefix: str) -> int:
    with count_queries(session) as statements:
        found, _ = await service.search_registered_models(
            session,
            SearchRegisteredModels(
                filter=f"name LIKE '{prefix}-%' AND tags.team = 'fraud'", order_by=["name DESC"]
            ),
        )
    assert found and all(m.latest_versions and m.aliases and m.tags for m in found)
    return len(statements)


async def _version_search_queries(session: AsyncSession, prefix: str) -> int:
    with count_queries(session) as statements:
        found, _ = await service.search_model_versions(
            session, SearchModelVersions(filter=f"name LIKE '{prefix}-%' AND tags.k != 'x'")
        )
    assert found and all(v.tags for v in found)
    return len(statements)


async def test_search_registered_models_query_count_is_independent_of_result_size(
    session: AsyncSession, unique: str
) -> None:
    await _populate(session, f"qs-{unique}", models=1, versions=1)
    await _populate(session, f"qb-{unique}", models=12, versions=3)
    small = await _model_search_queries(session, f"qs-{unique}")
    big = await _model_search_queries(session, f"qb-{unique}")
    assert 0 < small == big
    assert big <= 8


async def test_search_model_versions_query_count_is_independent_of_result_size(
    session: AsyncSession, unique: str
) -> None:
    await _populate(session, f"vs-{unique}", models=1, versions=1)
    await _populate(session, f"vb-{unique}", models=6, versions=5)
    small = await _version_search_queries(session, f"vs-{unique}")
    big = await _version_search_queries(session, f"vb-{unique}")
    assert 0 < small == big
    assert big <= 4


async def test_get_latest_versions_and_get_model_are_constant_too(
    session: AsyncSession, unique: str
) -> None:
    await _populate(session, f"ls-{unique}", models=1, versions=1)
    await _populate(session, f"lb-{unique}", models=1, versions=8)
    counts = []
    for name in (f"ls-{unique}-0", f"lb-{unique}-0"):
        with count_queries(session) as statements:
            await service.get_registered_model(session, name)
            await service.get_latest_versions(session, name, None)
        counts.append(len(statements))
    assert 0 < counts[0] == counts[1]
