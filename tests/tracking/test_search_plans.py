"""Run search at scale keeps its indexes: EXPLAIN on the migrated schema, on both backends.

A migrated database gets RUNS runs in one experiment (and a few in another), seeded in SQL,
then statistics. The searches the indexes exist for must show them in their plans, so a change
to the SQL shape, the index expressions or the migration that loses them fails here. The
results of the same searches are checked against the rows computed in Python.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.pool import NullPool

from tracking import service
from tracking.core.db import async_url
from tracking.schemas import SearchRuns
from tracking.search import run_search_select

RUNS = 20_000
EXPERIMENT = 1
FILTER = "metrics.m1 > 0.5 AND params.model = 'rf' AND tags.team = 'a'"
MODELS = ("rf", "xgb", "lr", "svm")
TEAMS = ("a", "b", "c")


def _m1(i: int) -> float:
    # Spread over [0, 1) and not ordered like the ids; 36 runs in a row share a value, so
    # ties are broken by start_time (two values per group) and then by run id.
    return ((i // 36) * 7919 % 6679) / 6679


def _start(i: int) -> int:
    return 1000 + (i % 36) // 24


def _seed_sql() -> list[str]:
    series = f"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {RUNS}) "
    model = "CASE i % 4 " + " ".join(f"WHEN {k} THEN '{m}'" for k, m in enumerate(MODELS)) + " END"
    team = "CASE i % 3 " + " ".join(f"WHEN {k} THEN '{t}'" for k, t in enumerate(TEAMS)) + " END"
    m1 = "((i / 36) * 7919 % 6679) * 1.0 / 6679"
    return [
        "INSERT INTO experiments (experiment_id, name, artifact_location, lifecycle_stage, "
        "creation_time, last_update_time) VALUES (1, 'big', 'a', 'active', 1, 1), "
        "(2, 'other', 'b', 'active', 1, 1)",
        series + "INSERT INTO runs (id, run_uuid, experiment_id, name, user_id, status, "
        "start_time, lifecycle_stage, artifact_uri) SELECT i, 'r' || i, "
        f"CASE WHEN i % 1000 = 0 THEN 2 ELSE {EXPERIMENT} END, 'run', 'u', 'FINISHED', "
        "1000 + (i % 36) / 24, 'active', 'x' FROM n",
        series + f"INSERT INTO params (run_id, key, value) SELECT i, 'model', {model} FROM n",
        series + "INSERT INTO params (run_id, key, value) SELECT i, 'seed', 'v' || i FROM n",
        series + f"INSERT INTO tags (run_id, key, value) SELECT i, 'team', {team} FROM n",
        series + "INSERT INTO tags (run_id, key, value) SELECT i, 'mlflow.user', 'u' FROM n",
        # Seven runs carry a rare tag, so an index on it is the only sensible way in.
        "INSERT INTO tags (run_id, key, value) SELECT id, 'rare', 'yes' FROM runs "
        "WHERE id % 2857 = 1",
        *_long_value_sql(),
        series + "INSERT INTO latest_metrics (run_id, key, step, timestamp, value, is_nan) "
        f"SELECT i, 'm1', 0, 0, {m1}, false FROM n",
    ]


# Values around the indexed prefix's length (200 characters), in experiment 3.
LONG_VALUES = {
    "short": "x" * 199,
    "exact": "x" * 200,
    "long-a": "x" * 200 + "a",
    "long-b": "x" * 200 + "b",
    "wide": "é" * 199 + "ü",
    "wide-long": "é" * 250,
}


def _long_value_sql() -> list[str]:
    rows = ", ".join(
        f"({40_000 + n}, '{name}', 3, 'run', 'u', 'FINISHED', {n}, 'active', 'x')"
        for n, name in enumerate(LONG_VALUES)
    )
    params = ", ".join(
        f"({40_000 + n}, 'long', '{value}')" for n, value in enumerate(LONG_VALUES.values())
    )
    return [
        "INSERT INTO experiments (experiment_id, name, artifact_location, lifecycle_stage, "
        "creation_time, last_update_time) VALUES (3, 'long', 'c', 'active', 1, 1)",
        "INSERT INTO runs (id, run_uuid, experiment_id, name, user_id, status, start_time, "
        f"lifecycle_stage, artifact_uri) VALUES {rows}",
        f"INSERT INTO params (run_id, key, value) VALUES {params}",
        "INSERT INTO tags (run_id, key, value) SELECT run_id, key, value FROM params "
        "WHERE key = 'long'",
    ]


@pytest.fixture(scope="module")
def plans_database_url(make_database: Callable[[str], str]) -> str:
    # Synchronous: the migrations run their own event loop.
    from gates.server import migrate

    url = make_database("plans")
    migrate.upgrade(url)
    return url


@pytest.fixture(scope="module")
async def engine(plans_database_url: str) -> AsyncIterator[AsyncEngine]:
    url = plans_database_url
    engine = create_async_engine(async_url(url))
    async with engine.begin() as conn:
        for statement in _seed_sql():
            await conn.execute(text(statement))
    async with engine.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        # VACUUM sets the visibility map, as autovacuum does for settled rows: index-only
        # scans need it.
        vacuum = "VACUUM " if engine.dialect.name == "postgresql" else ""
        await conn.execute(text(f"{vacuum}ANALYZE"))
    yield engine
    await engine.dispose()


async def _plan(engine: AsyncEngine, flt: str, order: list[str]) -> str:
    stmt = run_search_select([EXPERIMENT], flt, order, "ACTIVE_ONLY").limit(101)
    async with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            compiled = stmt.compile(engine, compile_kwargs={"literal_binds": True})
            rows = await conn.execute(text(f"EXPLAIN {compiled}"))
            return "\n".join(row[0] for row in rows)
        compiled = stmt.compile(engine, compile_kwargs={"literal_binds": True})
        rows = await conn.execute(text(f"EXPLAIN QUERY PLAN {compiled}"))
        return "\n".join(str(row[-1]) for row in rows)


async def _run_ids(engine: AsyncEngine, flt: str, order: list[str], offset: int = 0) -> list[str]:
    stmt = run_search_select([EXPERIMENT], flt, order, "ACTIVE_ONLY").offset(offset).limit(100)
    async with engine.connect() as conn:
        return [row.run_uuid for row in await conn.execute(stmt)]


def _expected(keep: Callable[[int], bool], key: Callable[[int], tuple]) -> list[str]:
    ids = [i for i in range(1, RUNS + 1) if i % 1000 != 0 and keep(i)]
    return [f"r{i}" for i in sorted(ids, key=key)]


def _three_clause(i: int) -> bool:
    return _m1(i) > 0.5 and MODELS[i % 4] == "rf" and TEAMS[i % 3] == "a"


async def test_filtered_metric_order_walks_the_metric_index_in_order(engine: AsyncEngine) -> None:
    plan = await _plan(engine, FILTER, ["metrics.m1 DESC"])
    assert "ix_latest_metrics_key_value" in plan, plan
    if engine.dialect.name == "postgresql":
        # Read in value order and stopped after the page: no sort of every match.
        assert "Incremental Sort" in plan and "Presorted Key: order_0.value" in plan, plan
        # The index carries run_id and is_nan (0019): no heap page per walked entry.
        assert "Index Only Scan Backward using ix_latest_metrics_key_value" in plan, plan
    else:
        assert "RIGHT PART OF ORDER BY" in plan, plan


async def test_filtered_metric_order_pages_match_mlflow_order(engine: AsyncEngine) -> None:
    # MLflow's order: value DESC, then start_time DESC, then run_id ASC (text order).
    expected = _expected(_three_clause, lambda i: (-_m1(i), -_start(i), f"r{i}"))
    assert len(expected) > 300
    pages = [await _run_ids(engine, FILTER, ["metrics.m1 DESC"], offset) for offset in (0, 100)]
    assert pages == [expected[:100], expected[100:200]]
    ascending = _expected(_three_clause, lambda i: (_m1(i), -_start(i), f"r{i}"))
    assert await _run_ids(engine, FILTER, ["metrics.m1 ASC"]) == ascending[:100]


async def test_rare_param_or_tag_value_is_found_through_its_value_index(
    engine: AsyncEngine,
) -> None:
    plan = await _plan(engine, "tags.rare = 'yes'", [])
    assert "ix_tags_key_value_prefix" in plan, plan
    plan = await _plan(engine, "params.seed = 'v4243'", ["start_time DESC"])
    assert "ix_params_key_value_prefix" in plan, plan
    if engine.dialect.name == "postgresql":
        # Also when the order is a filtered metric: the rare tag is the cheaper way in.
        plan = await _plan(engine, f"{FILTER} AND tags.rare = 'yes'", ["metrics.m1 DESC"])
        assert "ix_tags_key_value_prefix" in plan, plan
    rare = _expected(lambda i: i % 2857 == 1, lambda i: (-_start(i), f"r{i}"))
    assert await _run_ids(engine, "tags.rare = 'yes'", []) == rare
    assert await _run_ids(engine, "params.seed = 'v4243'", []) == ["r4243"]


@pytest.mark.parametrize("kind", ["params", "tags"])
@pytest.mark.parametrize("name", list(LONG_VALUES))
async def test_values_longer_than_the_indexed_prefix_match_exactly(
    engine: AsyncEngine, kind: str, name: str
) -> None:
    value = LONG_VALUES[name]
    async with engine.connect() as conn:
        rows = await conn.execute(run_search_select([3], f"{kind}.long = '{value}'", [], None))
        assert [row.run_uuid for row in rows] == [name]
        rows = await conn.execute(run_search_select([3], f"{kind}.long != '{value}'", [], None))
        assert sorted(row.run_uuid for row in rows) == sorted(n for n in LONG_VALUES if n != name)


async def test_postgresql_plans_every_search_with_its_values(
    engine: AsyncEngine, plans_database_url: str
) -> None:
    # asyncpg prepares each statement text; after five runs of one text PostgreSQL may switch
    # to a generic plan made without the values, which for this search joined every run with
    # the param and the tag (64,000 buffers at 100,000 runs) instead of walking m1's index.
    # The service writes the values into the SQL, so no prepared search has parameters.
    if engine.dialect.name != "postgresql":
        pytest.skip("prepared statements and generic plans are PostgreSQL's")
    req = SearchRuns(experiment_ids=[str(EXPERIMENT)], filter=FILTER, order_by=["metrics.m1 DESC"])
    expected = _expected(_three_clause, lambda i: (-_m1(i), -_start(i), f"r{i}"))
    # A connection of its own: the shared engine's hold other tests' prepared statements.
    own = create_async_engine(async_url(plans_database_url), poolclass=NullPool)
    async with AsyncSession(own) as s:
        for _ in range(7):
            runs, _token = await service.search_runs(s, req)
            assert [r.info.run_id for r in runs] == expected[:1000]
        prepared = (
            await s.execute(
                text(
                    "SELECT parameter_types::text FROM pg_prepared_statements "
                    "WHERE statement LIKE 'SELECT runs.id, runs.run_uuid%JOIN latest_metrics%'"
                )
            )
        ).scalars()
        assert list(prepared) == ["{}"]
    await own.dispose()
