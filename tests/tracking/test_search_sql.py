"""Run and experiment search selects executed on the configured backend (SQLite or PostgreSQL)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
from sqlalchemy import delete, insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from tracking.core.db import async_url
from tracking.models import (
    Dataset,
    DatasetInput,
    DatasetInputTag,
    Experiment,
    ExperimentTag,
    LatestMetric,
    LoggedModel,
    LoggedModelMetric,
    LoggedModelParam,
    LoggedModelTag,
    Param,
    Run,
    Tag,
)
from tracking.search import (
    experiment_search_select,
    logged_model_search_select,
    run_search_select,
)
from tracking.search.logged_models import OrderSpec
from tracking.search.sql import with_values_in_sql

EXPERIMENTS = [1, 2]


def _run(pk: int, uuid: str, experiment: int, name: str, start: int, end: int | None, **kw: str):
    return {
        "id": pk,
        "run_uuid": uuid,
        "experiment_id": experiment,
        "name": name,
        "user_id": kw.get("user", "alice"),
        "status": kw.get("status", "FINISHED"),
        "start_time": start,
        "end_time": end,
        "lifecycle_stage": kw.get("stage", "active"),
        "artifact_uri": f"file:///artifacts/{uuid}",
    }


def _model(model_id: str, name: str, created: int, **kw: str | None):
    return {
        "model_id": model_id,
        "experiment_id": 1,
        "name": name,
        "artifact_location": f"file:///models/{model_id}",
        "creation_timestamp_ms": created,
        "last_updated_timestamp_ms": created,
        "status": kw.get("status", "LOGGED_MODEL_READY"),
        "lifecycle_stage": kw.get("stage", "active"),
        "model_type": kw.get("model_type"),
        "source_run_id": kw.get("source_run_id"),
    }


def _model_metric(model: str, key: str, value: float, step: int, **kw: object):
    return {
        "model_id": model, "key": key, "value": value, "is_nan": kw.get("is_nan", False),
        "timestamp": 0, "step": step, "dataset_name": kw.get("dataset"), "dataset_digest": None,
    }  # fmt: skip


def _metric(run: int, key: str, value: float, is_nan: bool = False):
    return {"run_id": run, "key": key, "step": 0, "timestamp": 0, "value": value, "is_nan": is_nan}


async def _seed(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        # The migrations create the Default experiment (0); these cases know only their own.
        await conn.execute(delete(Experiment).where(Experiment.experiment_id == 0))
        await conn.execute(
            insert(Experiment),
            [
                {"experiment_id": 1, "name": "Alpha", "artifact_location": "a",
                 "lifecycle_stage": "active", "creation_time": 100, "last_update_time": 100},
                {"experiment_id": 2, "name": "beta", "artifact_location": "b",
                 "lifecycle_stage": "active", "creation_time": 200, "last_update_time": 900},
                {"experiment_id": 3, "name": "gamma", "artifact_location": "c",
                 "lifecycle_stage": "deleted", "creation_time": 300, "last_update_time": 300},
            ],
        )  # fmt: skip
        await conn.execute(
            insert(ExperimentTag), [{"experiment_id": 1, "key": "owner", "value": "me"}]
        )
        await conn.execute(
            insert(Run),
            [
                _run(1, "a1", 1, "Train_Run", 1000, 2000, user="alice"),
                _run(2, "b2", 1, "train run", 2000, None, status="RUNNING", user="bob"),
                _run(3, "c3", 1, "other", 3000, 2500, stage="deleted"),
                _run(4, "d4", 2, "fourth", 1500, 1600),
            ],
        )
        await conn.execute(
            insert(LatestMetric),
            [
                _metric(1, "acc", 0.9),
                _metric(1, "loss", 0.0, is_nan=True),
                _metric(2, "acc", 0.5),
                _metric(4, "acc", 0.7),
                _metric(3, "acc", 0.99),
            ],
        )
        await _seed_run_data(conn)
        await _seed_logged_models(conn)


async def _seed_run_data(conn: AsyncConnection) -> None:
    """Params, tags and a dataset input of the seeded runs."""
    await conn.execute(
        insert(Param),
        [
            {"run_id": 1, "key": "lr", "value": "0.1"},
            {"run_id": 1, "key": "path", "value": "C:\\x"},
            {"run_id": 2, "key": "lr", "value": "0.01"},
            # Text that SQL, asyncpg or SQLAlchemy's post-compile step could take for syntax
            # once values are written into the SQL (PostgreSQL's search does that).
            {"run_id": 2, "key": "odd", "value": "it's $1 __[POSTCOMPILE_x] --"},
        ],
    )
    await conn.execute(
        insert(Tag),
        [
            {"run_id": 1, "key": "team", "value": "ML"},
            {"run_id": 1, "key": "note", "value": "50%_off"},
            {"run_id": 2, "key": "team", "value": "ml"},
            {"run_id": 2, "key": "my key", "value": "v"},
            {"run_id": 3, "key": "team", "value": "[x]*?"},
        ],
    )
    await conn.execute(
        insert(Dataset),
        [
            {"dataset_uuid": "u1", "experiment_id": 1, "name": "ds1", "digest": "d1",
             "source_type": "local", "source": "s"},
        ],
    )  # fmt: skip
    await conn.execute(insert(DatasetInput), [{"id": 1, "run_id": 1, "dataset_uuid": "u1"}])
    await conn.execute(
        insert(DatasetInputTag),
        [{"input_id": 1, "key": "mlflow.data.context", "value": "training"}],
    )


async def _seed_logged_models(conn: AsyncConnection) -> None:
    await conn.execute(
        insert(LoggedModel),
        [
            _model("m-1", "model", 10, source_run_id="a1", model_type="sklearn"),
            _model("m-2", "model", 20, source_run_id="b2"),
            _model("m-3", "other", 30, status="LOGGED_MODEL_PENDING"),
            _model("m-4", "model", 40, stage="deleted"),
        ],
    )
    await conn.execute(
        insert(LoggedModelMetric),
        [
            _model_metric("m-1", "acc", 0.1, 0),
            _model_metric("m-1", "acc", 0.8, 1),  # latest
            _model_metric("m-2", "acc", 0.9, 0, dataset="eval"),
            _model_metric("m-2", "acc", 0.0, 1, is_nan=True, dataset="train"),  # latest: NaN
            _model_metric("m-3", "acc", 0.5, 0),
        ],
    )
    await conn.execute(insert(LoggedModelParam), [{"model_id": "m-1", "key": "k", "value": "v"}])
    await conn.execute(insert(LoggedModelTag), [{"model_id": "m-3", "key": "t", "value": "x"}])


@pytest.fixture(scope="module")
def search_database_url(make_database: Callable[[str], str]) -> str:
    # Synchronous on purpose: the factory creates PostgreSQL databases with asyncio.run().
    from gates.server import migrate

    url = make_database("search")
    migrate.upgrade(url)  # the schema as production makes it: the migrations, never create_all
    return url


@pytest.fixture(scope="module")
async def engine(search_database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(async_url(search_database_url))
    await _seed(engine)
    yield engine
    await engine.dispose()


async def _runs(
    engine: AsyncEngine, flt: str | None, order: list[str], view: str = ""
) -> list[str]:
    stmt = run_search_select(EXPERIMENTS, flt, order, view)
    async with engine.connect() as conn:
        found = [row.run_uuid for row in await conn.execute(stmt)]
        if engine.dialect.name == "postgresql":
            # The service runs the search with its values written into the SQL: same answer.
            inlined = [row.run_uuid for row in await conn.execute(with_values_in_sql(stmt))]
            assert inlined == found, (flt, order)
        return found


@pytest.mark.parametrize(
    ("flt", "view", "expected"),
    [
        (None, "", ["b2", "d4", "a1"]),
        ("", "ALL", ["c3", "b2", "d4", "a1"]),
        ("", "DELETED_ONLY", ["c3"]),
        ("metrics.acc > 0.6", "", ["d4", "a1"]),
        ("metrics.acc != 0.5", "", ["d4", "a1"]),
        ("metrics.acc >= 0.5 and metrics.acc <= 0.7", "", ["b2", "d4"]),
        ("metrics.loss > -1", "", []),  # NaN satisfies no comparison
        ("metrics.loss != 5", "", []),
        ("params.lr = '0.1'", "", ["a1"]),
        ("params.lr LIKE '0.%'", "", ["b2", "a1"]),
        ("params.lr != '0.1'", "", ["b2"]),  # a run without the param does not match
        ("params.path = 'C:\\x'", "", ["a1"]),
        ("params.path LIKE 'C:\\%'", "", ["a1"]),  # backslash is literal, not an escape
        ("params.odd = 'it''s $1 __[POSTCOMPILE_x] --'", "", ["b2"]),
        ("params.odd LIKE '%''s $1 __[POSTCOMPILE_%'", "", ["b2"]),
        ("tags.team LIKE 'M%'", "", ["a1"]),  # LIKE is case-sensitive on both backends
        ("tags.team LIKE 'm%'", "", ["b2"]),
        ("tags.team ILIKE 'm%'", "", ["b2", "a1"]),
        ("tags.team = 'ml'", "", ["b2"]),
        ("tags.team LIKE '[x]%'", "ALL", ["c3"]),
        ("tags.team LIKE '%*?'", "ALL", ["c3"]),
        ("tags.team LIKE '_x%'", "ALL", ["c3"]),
        ("tags.team LIKE '[%'", "ALL", ["c3"]),
        ("tags.team LIKE 'M_'", "ALL", ["a1"]),
        ("tags.note LIKE '50%_off'", "", ["a1"]),
        ("tags.team IS NULL", "", ["d4"]),
        ("tags.team IS NOT NULL", "", ["b2", "a1"]),
        ("tags.`my key` = 'v'", "", ["b2"]),
        ('tags."my key" = "v"', "", ["b2"]),
        ("attributes.run_name = 'train run'", "", ["b2"]),
        ("`Run Name` LIKE 'train%'", "", ["b2"]),
        ("run_name ILIKE 'TRAIN%'", "", ["b2", "a1"]),
        ("attributes.run_id IN ('a1', 'd4')", "", ["d4", "a1"]),
        ("run_id NOT IN ('a1', 'd4')", "", ["b2"]),
        ("status = 'RUNNING'", "", ["b2"]),
        ("user_id != 'alice'", "", ["b2"]),
        ("artifact_uri LIKE '%/d4'", "", ["d4"]),
        ("end_time > 1000", "", ["d4", "a1"]),
        ("created >= 1500", "", ["b2", "d4"]),
        ("datasets.name = 'ds1'", "", ["a1"]),
        ("datasets.digest IN ('d1', 'zz')", "", ["a1"]),
        ("datasets.context ILIKE 'TRAIN%'", "", ["a1"]),
        ("datasets.name NOT IN ('ds1')", "", []),
        ("metrics.acc > 0 AND tags.team ILIKE 'ml' AND params.lr = '0.01'", "", ["b2"]),
    ],
)
async def test_run_filter_selects_expected_runs(
    engine: AsyncEngine, flt: str | None, view: str, expected: list[str]
) -> None:
    assert await _runs(engine, flt, [], view) == expected


@pytest.mark.parametrize(
    ("order", "view", "expected"),
    [
        (["metrics.acc DESC"], "", ["a1", "d4", "b2"]),
        (["metrics.acc"], "ALL", ["b2", "d4", "a1", "c3"]),
        (["metrics.acc DESC"], "ALL", ["c3", "a1", "d4", "b2"]),
        (["params.lr"], "", ["b2", "a1", "d4"]),  # missing key last
        (["params.lr DESC"], "", ["a1", "b2", "d4"]),  # ... in both directions
        (["tags.team ASC", "metrics.acc DESC"], "ALL", ["a1", "c3", "b2", "d4"]),
        (["end_time DESC"], "", ["a1", "d4", "b2"]),
        (["end_time"], "", ["d4", "a1", "b2"]),
        (["metrics.loss"], "", ["a1", "b2", "d4"]),  # NaN before missing
        (["start_time"], "", ["a1", "d4", "b2"]),
        (["run_id DESC"], "", ["d4", "b2", "a1"]),
        (["attributes.`Run Name`"], "", ["a1", "d4", "b2"]),  # binary collation
    ],
)
async def test_run_order_by_sorts_missing_keys_last(
    engine: AsyncEngine, order: list[str], view: str, expected: list[str]
) -> None:
    assert await _runs(engine, None, order, view) == expected


async def test_like_patterns_are_not_mixed_up_by_the_statement_cache(engine: AsyncEngine) -> None:
    # The same statement shape with a different pattern must bind the new pattern.
    for _ in range(2):
        assert await _runs(engine, "tags.team LIKE 'M%'", []) == ["a1"]
        assert await _runs(engine, "tags.team LIKE 'm%'", []) == ["b2"]
        assert await _runs(engine, "tags.team LIKE '%'", []) == ["b2", "a1"]


@pytest.mark.parametrize(
    ("flt", "order", "view", "expected"),
    [
        (None, [], "", [2, 1]),
        (None, [], "ALL", [3, 2, 1]),
        (None, [], "DELETED_ONLY", [3]),
        ("name LIKE 'A%'", [], "", [1]),
        ("name LIKE 'a%'", [], "", []),
        ("name ILIKE 'a%'", [], "", [1]),
        ("name != 'beta'", [], "", [1]),
        ("experiment_id IN ('1', 'x')", [], "", [1]),
        ("experiment_id NOT IN ('1', 'x')", [], "", [2]),
        ("experiment_id = 'x'", [], "", []),
        ("experiment_id != 'x'", [], "", [2, 1]),
        ("experiment_id = 2", [], "", [2]),
        ("tags.owner = 'me'", [], "", [1]),
        ("tags.owner IS NULL", [], "", [2]),
        ("creation_time > 100", [], "ALL", [3, 2]),
        ("last_update_time >= 300", [], "ALL", [3, 2]),
        (None, ["name"], "ALL", [1, 2, 3]),
        (None, ["last_update_time DESC"], "ALL", [2, 3, 1]),
        (None, ["experiment_id DESC"], "", [2, 1]),
    ],
)
async def test_experiment_search_selects_expected_experiments(
    engine: AsyncEngine, flt: str | None, order: list[str], view: str, expected: list[int]
) -> None:
    async with engine.connect() as conn:
        rows = await conn.execute(experiment_search_select(flt, order, view))
        assert [row.experiment_id for row in rows] == expected


@pytest.mark.parametrize(
    ("flt", "order", "datasets", "expected"),
    [
        (None, [], [], ["m-3", "m-2", "m-1"]),
        ("name = 'model'", [], [], ["m-2", "m-1"]),
        ("name = 'model' AND source_run_id = 'a1'", [], [], ["m-1"]),
        ("status != 'LOGGED_MODEL_READY'", [], [], ["m-3"]),
        ("model_type LIKE 'sk%'", [], [], ["m-1"]),
        ("creation_timestamp >= 20", [], [], ["m-3", "m-2"]),
        # Any logged point matches, as in MLflow (m-2: 0.9 before its NaN); NaN never does.
        ("metrics.acc > 0.3", [], [], ["m-3", "m-2", "m-1"]),
        ("metrics.acc < 0.2", [], [], ["m-1"]),
        ("metrics.acc < 0.2", [], [("eval", None)], []),
        ("metrics.acc > 0.3", [], [("eval", None)], ["m-2"]),
        # MLflow: without a metric filter, datasets keep the models with a metric on one.
        (None, [], [("eval", None)], ["m-2"]),
        (None, [], [("nope", None), ("train", None)], ["m-2"]),
        (None, [], [("nope", None)], []),
        # An order_by entry's dataset limits the points its metric is read from.
        (None, [("metrics.acc", False, "eval", None)], [], ["m-2", "m-3", "m-1"]),
        ("params.k = 'v'", [], [], ["m-1"]),
        ("tags.t LIKE 'x'", [], [], ["m-3"]),
        (None, [("metrics.acc", False)], [], ["m-1", "m-3", "m-2"]),  # NaN/missing last
        (None, [("metrics.acc", True)], [], ["m-3", "m-1", "m-2"]),
        (None, [("name", True), ("creation_timestamp", True)], [], ["m-1", "m-2", "m-3"]),
    ],
)
async def test_logged_model_search(
    engine: AsyncEngine,
    flt: str | None,
    order: list[OrderSpec],
    datasets: list[tuple[str | None, str | None]],
    expected: list[str],
) -> None:
    async with engine.connect() as conn:
        rows = await conn.execute(logged_model_search_select([1], flt, order, datasets))
        assert [row.model_id for row in rows] == expected


# --- fnmatch patterns in SQL (gate bindings) ----------------------------------------------------

FNMATCH_PATTERNS = [
    "fraud-*",
    "fraud-?",
    "model-[ab]",
    "m[!x]?",
    "a[b",
    "[]a]z",
    "a.b",
    "p%_q*",
    "[^a]b",
    "x\\y*",
    "C*",
    "*",
    # ranges as fnmatch reads them: reversed ones are empty, '-' first or last is literal
    "m[z-a]*",
    "[!z-a]z",
    "[a-c-e]*",
    "[--b]*",
    "[]-a]*",
    "[^-]*",
    "x[$(|{]*",
]
FNMATCH_NAMES = [
    "fraud-1",
    "fraud-12",
    "fraud-",
    "Fraud-1",
    "model-a",
    "model-c",
    "mqz",
    "mxz",
    "a[b",
    "]z",
    "az",
    "a.b",
    "aXb",
    "p%_q",
    "pabq",
    "^b",
    "bb",
    "x\\yz",
    "c1",
    "C1",
    "mz",
    "-z",
    "d1",
    "e",
    "-",
    "^x",
    "x(",
    "x{1",
    "b",
]


async def test_fnmatch_match_in_sql_agrees_with_fnmatchcase(session) -> None:  # type: ignore[no-untyped-def]
    """Which gates a caller sees is decided in the database: the SQL twin of a gate's
    fnmatch binding must match exactly the names the pointer guard's fnmatch does."""
    import fnmatch

    from sqlalchemy import String, literal, select

    from tracking.search.sql import fnmatch_match

    checks = [
        fnmatch_match(literal(name, String()), pattern).label(f"c{i}")
        for i, (pattern, name) in enumerate((p, n) for p in FNMATCH_PATTERNS for n in FNMATCH_NAMES)
    ]
    row = (await session.execute(select(*checks))).one()
    got = [bool(v) for v in row]
    want = [fnmatch.fnmatchcase(n, p) for p in FNMATCH_PATTERNS for n in FNMATCH_NAMES]
    pairs = [(p, n) for p in FNMATCH_PATTERNS for n in FNMATCH_NAMES]
    assert [pair for pair, g, w in zip(pairs, got, want, strict=True) if g != w] == []
