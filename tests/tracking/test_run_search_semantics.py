"""search_runs and search_experiments through the service, as `mlflow server` 3.17 answers.

Filter clauses joined by AND, order_by with missing and NaN values last, opaque page tokens
bound to their query, and the view types (mlflow-rest-contract.md sections 3 and 4).
"""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from tests.tracking.helpers import make_experiment, make_run
from tracking import service
from tracking.core.errors import InvalidParameter
from tracking.errors import ExperimentNotFound
from tracking.schemas import SearchExperiments, SearchRuns, UpdateRun


async def _names(
    s: AsyncSession,
    experiment_id: str,
    flt: str | None = None,
    order: list[str] | None = None,
    view: str | None = None,
) -> list[str]:
    runs, _ = await service.search_runs(
        s,
        SearchRuns(
            experiment_ids=[experiment_id], filter=flt, order_by=order or [], run_view_type=view
        ),
    )
    return [r.info.run_name for r in runs]


@pytest.fixture
async def experiment(session: AsyncSession, unique: str) -> str:
    """Four runs: a (acc 0.9, lr 0.1, team ML), b (acc 0.5, lr 0.01, team ml), c (acc NaN),
    d (no metric, param or tag). Started in the order a, b, c, d."""
    eid = await make_experiment(session, f"search-{unique}")
    await make_run(session, eid, name="a", start_time=1000, metrics={"acc": 0.9},
                   params={"lr": "0.1"}, tags={"team": "ML"})  # fmt: skip
    await make_run(session, eid, name="b", start_time=2000, metrics={"acc": 0.5},
                   params={"lr": "0.01"}, tags={"team": "ml"})  # fmt: skip
    await make_run(session, eid, name="c", start_time=3000, metrics={"acc": float("nan")})
    await make_run(session, eid, name="d", start_time=4000)
    return eid


async def test_default_order_is_newest_start_first(session: AsyncSession, experiment: str) -> None:
    assert await _names(session, experiment) == ["d", "c", "b", "a"]


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        ("metrics.acc > 0.6", ["a"]),
        ("metrics.acc <= 0.9", ["b", "a"]),
        ("metrics.acc != 0.5", ["a"]),  # NaN satisfies no comparison; d has no acc at all
        ("params.lr = '0.1'", ["a"]),
        ("params.lr LIKE '0.%'", ["b", "a"]),
        ("params.lr != '0.1'", ["b"]),  # a run without the param does not match
        ("tags.team LIKE 'M%'", ["a"]),  # LIKE is case-sensitive
        ("tags.team ILIKE 'm%'", ["b", "a"]),
        ("tags.team IS NULL", ["d", "c"]),
        ("attributes.run_name = 'c'", ["c"]),
        ("attributes.status = 'RUNNING'", ["d", "c", "b", "a"]),
        ("metrics.acc > 0 and params.lr = '0.01' AND tags.team = 'ml'", ["b"]),
    ],
)
async def test_filter_clauses_select_matching_runs(
    session: AsyncSession, experiment: str, flt: str, expected: list[str]
) -> None:
    assert await _names(session, experiment, flt) == expected


@pytest.mark.parametrize(
    "flt",
    [
        "metrics.acc > 0.5 OR metrics.acc < 0.1",  # only AND joins clauses
        "(metrics.acc > 0.5)",
        "metrics.acc > 'high'",  # a metric compares with a number
        "params.lr > '0.1'",  # params take string operators only
        "run_name IN ('a', 'b')",  # IN is for run_id
        "bogus.key = 'x'",
        "metrics.acc >",
    ],
)
async def test_a_malformed_filter_is_invalid_parameter(
    session: AsyncSession, experiment: str, flt: str
) -> None:
    with pytest.raises(InvalidParameter):
        await _names(session, experiment, flt)


async def test_run_id_in_list_selects_those_runs(session: AsyncSession, experiment: str) -> None:
    runs, _ = await service.search_runs(session, SearchRuns(experiment_ids=[experiment]))
    ids = {r.info.run_name: r.info.run_id for r in runs}
    flt = f"attributes.run_id IN ('{ids['a']}', '{ids['c']}')"
    assert await _names(session, experiment, flt) == ["c", "a"]


@pytest.mark.parametrize(
    ("order", "expected"),
    [
        # Numbers first in the asked direction, then NaN, then runs without the metric.
        (["metrics.acc ASC"], ["b", "a", "c", "d"]),
        (["metrics.acc DESC"], ["a", "b", "c", "d"]),
        # Runs missing a param or tag go last in either direction.
        (["params.lr ASC"], ["b", "a", "d", "c"]),
        (["params.lr DESC"], ["a", "b", "d", "c"]),
        (["tags.team DESC"], ["b", "a", "d", "c"]),
        (["attributes.start_time ASC"], ["a", "b", "c", "d"]),
        (["run_name DESC"], ["d", "c", "b", "a"]),
    ],
)
async def test_order_by_puts_missing_values_last(
    session: AsyncSession, experiment: str, order: list[str], expected: list[str]
) -> None:
    assert await _names(session, experiment, order=order) == expected


async def test_runs_without_an_end_time_sort_last(session: AsyncSession, experiment: str) -> None:
    runs, _ = await service.search_runs(session, SearchRuns(experiment_ids=[experiment]))
    ids = {r.info.run_name: r.info.run_id for r in runs}
    await service.update_run(session, UpdateRun(run_id=ids["b"], end_time=10))
    await service.update_run(session, UpdateRun(run_id=ids["c"], end_time=5))
    for direction in ("ASC", "DESC"):
        names = await _names(session, experiment, order=[f"attributes.end_time {direction}"])
        assert set(names[2:]) == {"a", "d"}
        assert names[:2] == (["c", "b"] if direction == "ASC" else ["b", "c"])


async def test_a_malformed_order_by_is_invalid_parameter(
    session: AsyncSession, experiment: str
) -> None:
    for order in (["metrics.acc SIDEWAYS"], ["nonsense.key"], ["metrics.acc ASC DESC"]):
        with pytest.raises(InvalidParameter):
            await _names(session, experiment, order=order)


async def test_pages_cover_every_run_once_and_the_last_has_no_token(
    session: AsyncSession, experiment: str
) -> None:
    seen: list[str] = []
    token: str | None = None
    pages = 0
    while True:
        req = SearchRuns(experiment_ids=[experiment], max_results=3, page_token=token)
        runs, token = await service.search_runs(session, req)
        seen += [r.info.run_name for r in runs]
        pages += 1
        if token is None:
            break
    assert (seen, pages) == (["d", "c", "b", "a"], 2)
    exact = SearchRuns(experiment_ids=[experiment], max_results=4)
    assert (await service.search_runs(session, exact))[1] is None  # no token without more runs


async def test_a_page_token_works_only_for_its_own_query(
    session: AsyncSession, experiment: str
) -> None:
    first = SearchRuns(experiment_ids=[experiment], max_results=1)
    _, token = await service.search_runs(session, first)
    assert token
    other = SearchRuns(experiment_ids=[experiment], max_results=1, filter="metrics.acc > 0")
    other.page_token = token
    with pytest.raises(InvalidParameter, match="different query"):
        await service.search_runs(session, other)
    with pytest.raises(InvalidParameter, match="Invalid page token"):
        await service.search_runs(
            session, SearchRuns(experiment_ids=[experiment], page_token="not-a-token")
        )


@pytest.mark.parametrize("max_results", [0, -1, 50001])
async def test_max_results_outside_1_to_50000_is_invalid_parameter(
    session: AsyncSession, experiment: str, max_results: int
) -> None:
    with pytest.raises(InvalidParameter, match="max_results"):
        await service.search_runs(
            session, SearchRuns(experiment_ids=[experiment], max_results=max_results)
        )


async def test_run_view_type_selects_active_deleted_or_all(
    session: AsyncSession, experiment: str
) -> None:
    runs, _ = await service.search_runs(session, SearchRuns(experiment_ids=[experiment]))
    ids = {r.info.run_name: r.info.run_id for r in runs}
    await service.delete_run(session, ids["b"])
    assert await _names(session, experiment) == ["d", "c", "a"]
    assert await _names(session, experiment, view="ACTIVE_ONLY") == ["d", "c", "a"]
    assert await _names(session, experiment, view="DELETED_ONLY") == ["b"]
    assert await _names(session, experiment, view="ALL") == ["d", "c", "b", "a"]
    with pytest.raises(InvalidParameter, match="Invalid view type"):
        await _names(session, experiment, view="SOME")


async def test_search_without_experiments_is_empty_and_an_unknown_id_is_not_found(
    session: AsyncSession,
) -> None:
    assert await service.search_runs(session, SearchRuns(experiment_ids=[])) == ([], None)
    with pytest.raises(ExperimentNotFound):
        await service.search_runs(session, SearchRuns(experiment_ids=["not-a-number"]))


async def test_experiment_search_pages_views_and_filters(
    session: AsyncSession, unique: str
) -> None:
    ids = [await make_experiment(session, f"exps-{unique}-{i}") for i in range(3)]
    await service.delete_experiment(session, ids[1])
    mine = f"name LIKE 'exps-{unique}-%'"

    async def names(view: str | None, max_results: int | None = None) -> list[str]:
        out: list[str] = []
        token: str | None = None
        while True:
            req = SearchExperiments(max_results=max_results, filter=mine, view_type=view,
                                    order_by=["name ASC"], page_token=token)  # fmt: skip
            found, token = await service.search_experiments(session, req)
            out += [e.name[-1] for e in found]
            if token is None:
                return out

    assert await names(None) == ["0", "2"]
    assert await names("DELETED_ONLY") == ["1"]
    assert await names("ALL", max_results=1) == ["0", "1", "2"]
    with pytest.raises(InvalidParameter):
        await service.search_experiments(session, SearchExperiments(filter="params.x = 'y'"))
    with pytest.raises(InvalidParameter, match="max_results"):
        await service.search_experiments(session, SearchExperiments(max_results=50001))
