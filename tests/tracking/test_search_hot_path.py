"""Searching runs and getting a run load the page on the driver with no ORM session, and
answer exactly the bytes the session-based service answers (errors included)."""

from __future__ import annotations

import math
import uuid
from pathlib import Path
from typing import Any

import msgspec
import pytest

from tests.hot_app import HOT_ADMIN, HotApp, hot_app, migrated_database
from tracking import service
from tracking.core.auth import ResourceScope
from tracking.core.errors import MlflowError
from tracking.schemas import SearchRuns

API = "/api/2.0/mlflow"


@pytest.fixture(scope="module")
async def search_url(make_database: Any) -> str:
    return await migrated_database(make_database, "search-hot")


async def _post(app: HotApp, path: str, body: dict[str, Any]) -> Any:
    response = await app.client.post(f"{API}/{path}", json=body)
    assert response.status_code == 200, (path, response.text)
    return response.json()


async def _world(app: HotApp) -> tuple[list[str], list[str]]:
    """Two experiments of runs with params, tags, metrics (NaN and infinities among them),
    dataset inputs with tags and a logged model's links; one run deleted."""
    unique = uuid.uuid4().hex[:8]
    experiments = [
        (await _post(app, "experiments/create", {"name": f"hot-search-{kind}-{unique}"}))[
            "experiment_id"
        ]
        for kind in "ab"
    ]
    values = [0.25, float("nan"), float("inf"), float("-inf"), 3.0, -1.5, 0.5, 2.0]
    runs = []
    for i, value in enumerate(values * 2):
        eid = experiments[i % 2]
        body = {"experiment_id": eid, "run_name": f"r{i}", "start_time": 1000 + i % 5,
                "tags": [{"key": "team", "value": "ab"[i % 2]}]}  # fmt: skip
        run_id = (await _post(app, "runs/create", body))["run"]["info"]["run_id"]
        runs.append(run_id)
        raw = msgspec.json.encode(
            {
                "run_id": run_id,
                "params": [{"key": "model", "value": "rf" if i % 3 else "xgb"}],
                "tags": [{"key": "note", "value": f"n{i}"}],
                "metrics": [
                    {"key": "m", "value": _wire(value), "timestamp": 5, "step": i},
                    {"key": "loss", "value": 1.0 / (i + 1), "timestamp": 6, "step": 0},
                ],
            }
        )
        response = await app.client.post(
            f"{API}/runs/log-batch", content=raw, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 200, response.text
    dataset = {"name": "d", "digest": "abc", "source_type": "local", "source": "/data",
               "schema": '{"cols": 3}'}  # fmt: skip
    inputs = {"run_id": runs[0], "datasets": [
        {"tags": [{"key": "mlflow.data.context", "value": "train"}], "dataset": dataset},
        {"dataset": {**dataset, "name": "e", "profile": "p"}},
    ]}  # fmt: skip
    await _post(app, "runs/log-inputs", inputs)
    model = (
        await _post(
            app, "logged-models", {"experiment_id": experiments[0], "source_run_id": runs[2]}
        )
    )["model"]["info"]["model_id"]
    await _post(app, "runs/log-inputs", {"run_id": runs[4], "models": [{"model_id": model}]})
    await _post(
        app, "runs/outputs", {"run_id": runs[2], "models": [{"model_id": model, "step": 3}]}
    )
    await _post(app, "runs/delete", {"run_id": runs[6]})
    return experiments, runs


def _wire(value: float) -> float | str:
    """NaN and infinities as the MLflow client sends them (protobuf JSON strings)."""
    return (
        value
        if math.isfinite(value)
        else str(value).replace("inf", "Infinity").replace("nan", "NaN")
    )


def _bodies(experiments: list[str]) -> list[dict[str, Any]]:
    both = {"experiment_ids": experiments}
    return [
        both,
        {**both, "max_results": 3},
        {
            **both,
            "filter": "params.model = 'rf' AND tags.team = 'a'",
            "order_by": ["metrics.m DESC"],
        },
        {**both, "filter": "metrics.m > 0", "order_by": ["metrics.m ASC"], "max_results": 4},
        {**both, "order_by": ["metrics.m DESC", "attributes.run_name"]},
        {**both, "order_by": ["params.model", "tags.note DESC"], "max_results": 5},
        {**both, "run_view_type": "ALL"},
        {**both, "run_view_type": "DELETED_ONLY"},
        {"experiment_ids": experiments[:1], "filter": "attributes.run_name LIKE 'r1%'"},
        {**both, "filter": "metrics.nothing > 1"},
        {"experiment_ids": ["999999"]},
        {"experiment_ids": []},
    ]


async def _session_bytes(app: HotApp, body: dict[str, Any], scope: Any = None) -> bytes:
    req = msgspec.convert(body, SearchRuns)
    async with app.db.read() as s:
        runs, token = await service.search_runs(s, req, scope=scope)
    out: dict[str, Any] = {"runs": runs} if runs else {}
    if token:
        out["next_page_token"] = token
    return msgspec.json.encode(out)


async def test_run_searches_answer_the_session_paths_bytes(search_url: str, tmp_path: Path) -> None:
    async with hot_app(search_url, tmp_path) as app:
        experiments, runs = await _world(app)
        for body in _bodies(experiments):
            pages = 0
            while True:
                with app.count() as counted:
                    response = await app.client.post(f"{API}/runs/search", json=body)
                assert response.status_code == 200, (body, response.text)
                assert counted.sessions == 0, body
                assert response.content == await _session_bytes(app, body), body
                pages += 1
                token = response.json().get("next_page_token")
                if not token:
                    break
                body = {**body, "page_token": token}
            assert pages <= 6
        page = (await _post(app, "runs/search", {"experiment_ids": experiments}))["runs"]
        first = next(r for r in page if r["info"]["run_id"] == runs[0])
        assert len(first["inputs"]["dataset_inputs"]) == 2
        assert {m["value"] for r in page for m in r["data"]["metrics"] if m["key"] == "m"} >= {
            "NaN",
            "Infinity",
            "-Infinity",
        }
        # The page's runs: one statement for the query, six to load them (seven with dataset
        # inputs), no session; SQLite reads without BEGIN.
        with app.count() as counted:
            await _post(app, "runs/search", {"experiment_ids": experiments, "max_results": 2})
        assert (counted.sessions, len(counted.statements)) == (0, 7), counted


async def test_scoped_searches_and_refusals_match_the_session_path(
    search_url: str, tmp_path: Path
) -> None:
    async with hot_app(search_url, tmp_path) as app:
        experiments, _ = await _world(app)
        for scope in (
            ResourceScope(ids=frozenset({int(experiments[0])})),
            ResourceScope(patterns=("hot-search-b-*",)),
            ResourceScope(),
        ):
            body = {"experiment_ids": experiments, "order_by": ["metrics.m DESC"]}
            async with app.db.driver_read() as r:
                found = await service.search_runs_at_once(
                    r, msgspec.convert(body, SearchRuns), scope=scope
                )
            assert found is not None
            runs, token = found
            out: dict[str, Any] = {"runs": runs} if runs else {}
            assert token is None
            assert msgspec.json.encode(out) == await _session_bytes(app, body, scope)
        for bad in (
            {"experiment_ids": experiments, "filter": "metrics.m >"},
            {"experiment_ids": experiments, "order_by": ["nothing.x"]},
            {"experiment_ids": experiments, "max_results": 100000},
            {"experiment_ids": experiments, "page_token": "garbage"},
            {"experiment_ids": ["x"]},
        ):
            response = await app.client.post(f"{API}/runs/search", json=bad)
            with pytest.raises(MlflowError) as refused:
                await _session_bytes(app, bad)
            assert response.status_code == refused.value.status_code, bad
            assert response.json() == {
                "error_code": refused.value.error_code,
                "message": str(refused.value),
            }


async def test_get_run_reads_on_the_driver_and_matches_the_session(
    search_url: str, tmp_path: Path
) -> None:
    async with hot_app(search_url, tmp_path) as app:
        _, runs = await _world(app)
        for run_id in (runs[0], runs[2], runs[4], runs[6]):
            with app.count() as counted:
                response = await app.client.get(f"{API}/runs/get", params={"run_id": run_id})
            assert response.status_code == 200, response.text
            assert counted.sessions == 0
            async with app.db.read() as s:
                expected = await service.get_run(s, run_id)
            assert response.content == msgspec.json.encode({"run": expected})
        missing = await app.client.get(f"{API}/runs/get", params={"run_id": "f" * 32})
        assert missing.status_code == 404
        assert missing.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
        assert (await app.client.get(f"{API}/runs/get")).status_code == 400


# Strings msgspec must escape (quotes, backslashes, control characters), non-ASCII text and
# empty values, written by the JSON renderer exactly as the structs' encoder writes them.
_AWKWARD = ['say "hi"', "back\\slash", "tab\there\nnewline\r\x01\x1f\x7f", "é ü 漢字 🚀",
            "\u2028\u2029", "", "</script>", "comma,\"quote\",comma"]  # fmt: skip


async def test_awkward_strings_empty_runs_and_end_times_match_the_session_path(
    search_url: str, tmp_path: Path
) -> None:
    async with hot_app(search_url, tmp_path) as app:
        unique = uuid.uuid4().hex[:8]
        eid = (await _post(app, "experiments/create", {"name": f"hot-awkward-{unique}"}))[
            "experiment_id"
        ]
        awkward_runs = []
        for i, text in enumerate(_AWKWARD):
            body = {"experiment_id": eid, "run_name": f"{text}-{i}", "user_id": text,
                    "start_time": 2000 + i}  # fmt: skip
            run_id = (await _post(app, "runs/create", body))["run"]["info"]["run_id"]
            awkward_runs.append(run_id)
            await _post(app, "runs/log-batch", {
                "run_id": run_id,
                "params": [{"key": f"p{i}", "value": text}, {"key": "empty", "value": ""}],
                "tags": [{"key": f"t{i}", "value": text}],
                "metrics": [{"key": f"m{i}", "value": -0.0 if i % 2 else 1e-7, "timestamp": 0,
                             "step": -3}, {"key": "big", "value": 1.7976931348623157e308,
                             "timestamp": 2**62, "step": 2**40}],
            })  # fmt: skip
        # A run with no params, tags or metrics of its own (only its name tag is deleted), and
        # a finished run with an end time.
        bare = (await _post(app, "runs/create", {"experiment_id": eid, "start_time": 1}))["run"][
            "info"
        ]["run_id"]
        await _post(app, "runs/delete-tag", {"run_id": bare, "key": "mlflow.runName"})
        await _post(
            app,
            "runs/update",
            {"run_id": awkward_runs[0], "status": "FINISHED", "end_time": 2**53 + 1},
        )
        for body in (
            {"experiment_ids": [eid]},
            {"experiment_ids": [eid], "max_results": 2, "order_by": ["attributes.run_name"]},
            {"experiment_ids": [eid], "filter": "params.empty = ''"},
        ):
            while True:
                with app.count() as counted:
                    response = await app.client.post(f"{API}/runs/search", json=body)
                assert response.status_code == 200, response.text
                assert counted.sessions == 0
                assert response.content == await _session_bytes(app, body), body
                token = response.json().get("next_page_token")
                if not token:
                    break
                body = {**body, "page_token": token}
        page = (await _post(app, "runs/search", {"experiment_ids": [eid]}))["runs"]
        by_id = {r["info"]["run_id"]: r for r in page}
        assert by_id[bare]["data"] == {}
        assert by_id[awkward_runs[0]]["info"]["end_time"] == 2**53 + 1
        assert {r["info"]["user_id"] for r in page} >= set(_AWKWARD)
        for run_id in (bare, awkward_runs[0], awkward_runs[2]):
            response = await app.client.get(f"{API}/runs/get", params={"run_id": run_id})
            async with app.db.read() as s:
                expected = await service.get_run(s, run_id)
            assert response.content == msgspec.json.encode({"run": expected})


async def test_a_users_grants_scope_the_driver_search_as_the_session_path(
    make_database: Any, tmp_path: Path
) -> None:
    from gates.identity import service as identity  # the grants' home (tests may cross domains)

    url = await migrated_database(make_database, "search-hot-grants")
    async with hot_app(url, tmp_path, auth=True) as app:
        admin = {"Authorization": "Basic " + _basic(*HOT_ADMIN)}
        unique = uuid.uuid4().hex[:8]
        experiments = []
        for kind in "ab":
            name = f"vis-{kind}-{unique}"
            created = await app.client.post(
                f"{API}/experiments/create", json={"name": name}, headers=admin
            )
            eid = created.json()["experiment_id"]
            experiments.append(eid)
            for i in range(3):
                body = {"experiment_id": eid, "run_name": f"{kind}{i}", "start_time": i}
                made = await app.client.post(f"{API}/runs/create", json=body, headers=admin)
                assert made.status_code == 200, made.text
        async with app.db.write() as s:
            await identity.create_user(s, "vis-user", None, is_admin=False)
            token = await identity.create_token(s, "vis-user", "ci")
            await identity.create_grant(
                s, "vis-user", "experiment", f"vis-a-{unique}*", "reader", actor="t"
            )
        user = {"Authorization": f"Bearer {token.secret}"}
        body = {"experiment_ids": experiments, "max_results": 2}
        scope = ResourceScope(patterns=(f"vis-a-{unique}*",))
        pages = 0
        while True:
            with app.count() as counted:
                response = await app.client.post(f"{API}/runs/search", json=body, headers=user)
            assert response.status_code == 200, response.text
            assert counted.sessions == 0
            assert response.content == await _session_bytes(app, body, scope), body
            runs = response.json().get("runs", [])
            assert {r["info"]["experiment_id"] for r in runs} <= {experiments[0]}
            pages += 1
            token_out = response.json().get("next_page_token")
            if not token_out:
                break
            body = {**body, "page_token": token_out}
        assert pages == 2  # three visible runs, two a page: the hidden ones count for nothing


async def test_a_repeated_search_reuses_its_sql_never_its_rows_nor_another_scope(
    search_url: str, tmp_path: Path
) -> None:
    from tracking.service import runs as run_service

    memo = run_service._SEARCH_SQL
    async with hot_app(search_url, tmp_path) as app:
        experiments, _ = await _world(app)
        body = {
            "experiment_ids": experiments,
            "filter": "params.model = 'rf' AND metrics.m < 50",
            "order_by": ["metrics.m DESC"],
        }
        first = await app.client.post(f"{API}/runs/search", json=body)
        built = memo.built
        again = await app.client.post(f"{API}/runs/search", json=body)
        assert again.content == first.content
        assert memo.built == built  # the same request: its SQL was reused, not built again

        # Rows are never kept: a run logged since appears, and the page still matches the
        # session path's.
        made = await _post(app, "runs/create", {"experiment_id": experiments[0]})
        run_id = made["run"]["info"]["run_id"]
        await _post(app, "runs/log-batch", {
            "run_id": run_id,
            "params": [{"key": "model", "value": "rf"}],
            "metrics": [{"key": "m", "value": 40.0, "timestamp": 1, "step": 0}],
        })  # fmt: skip
        after = await app.client.post(f"{API}/runs/search", json=body)
        assert after.json()["runs"][0]["info"]["run_id"] == run_id
        assert after.content == await _session_bytes(app, body)
        assert memo.built == built

        # The caller's scope is part of the key: a narrow scope after the full one (and the
        # full one again after it) each get their own runs.
        narrow = ResourceScope(ids=frozenset({int(experiments[1])}))
        for scope in (narrow, None, narrow):
            async with app.db.driver_read() as r:
                found = await service.search_runs_at_once(
                    r, msgspec.convert(body, SearchRuns), scope=scope
                )
            assert found is not None
            runs, _token = found
            expected = await _session_bytes(app, body, scope)
            assert msgspec.json.encode({"runs": runs} if runs else {}) == expected
            seen = {msgspec.json.decode(run)["info"]["experiment_id"] for run in runs}
            assert seen == ({experiments[1]} if scope else set(experiments)), seen
        assert memo.built == built + 1  # the narrow scope's own select, built once

        # A refused filter keeps nothing and is refused again the next time.
        bad = {**body, "filter": "metrics.m >"}
        for _ in range(2):
            response = await app.client.post(f"{API}/runs/search", json=bad)
            assert response.status_code == 400, response.text
        assert memo.built == built + 1


def test_built_statements_keep_the_most_recent_and_nothing_that_failed() -> None:
    from sqlalchemy import literal, select
    from sqlalchemy.dialects import sqlite

    from tracking.core.driver import BuiltStatements

    memo, dialect, builds = BuiltStatements(size=2), sqlite.dialect(), []

    def build(n: int) -> Any:
        builds.append(n)
        return select(literal(n))

    for n in (1, 2, 1, 3):  # 1 is used again before 3 arrives, so 2 is the one dropped
        sql, args = memo.args(dialect, n, lambda n=n: build(n))
        assert args == [n] and "SELECT" in sql
    assert builds == [1, 2, 3] and len(memo) == 2
    memo.args(dialect, 3, lambda: build(3))  # kept: not built again
    memo.args(dialect, 2, lambda: build(2))  # dropped: built again, and 1 (now oldest) dropped
    memo.args(dialect, 3, lambda: build(3))
    assert builds == [1, 2, 3, 2] and memo.built == 4

    def refuse() -> Any:
        raise MlflowError("bad filter")

    with pytest.raises(MlflowError):
        memo.args(dialect, "bad", refuse)
    assert len(memo) == 2 and memo.built == 4


def _basic(username: str, password: str) -> str:
    import base64

    return base64.b64encode(f"{username}:{password}".encode()).decode()
