"""Creating a run and logging a metric run prebuilt statements on the driver with no ORM
session: one statement on PostgreSQL; on SQLite BEGIN IMMEDIATE and a few statements."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import BACKEND
from tests.hot_app import hot_app, migrated_database

API = "/api/2.0/mlflow"
# create-run: the run with its tags; log-metric: the run's check, history and latest value.
EXPECTED = {"postgres": (1, 1), "sqlite": (3, 4)}[BACKEND]


@pytest.fixture(scope="module")
async def writes_url(make_database: Any) -> str:
    return await migrated_database(make_database, "writes")


async def test_create_run_and_log_metric_are_prebuilt_statements_without_a_session(
    writes_url: str, tmp_path: Path
) -> None:
    async with hot_app(writes_url, tmp_path) as app:
        exp = (await app.client.post(f"{API}/experiments/create", json={"name": "hot"})).json()
        body = {
            "experiment_id": exp["experiment_id"],
            "run_name": "r1",
            "start_time": 5,
            "tags": [{"key": "team", "value": "a"}],
        }
        with app.count() as created:
            response = await app.client.post(f"{API}/runs/create", json=body)
        assert response.status_code == 200, response.text
        assert (created.sessions, len(created.statements)) == (0, EXPECTED[0]), created
        run = response.json()["run"]
        metric = {"run_id": run["info"]["run_id"], "key": "m", "value": 0.5, "timestamp": 7}
        with app.count() as logged:
            response = await app.client.post(f"{API}/runs/log-metric", json=metric)
        assert response.status_code == 200, response.text
        # On PostgreSQL the statement is a group commit's flush (its own task).
        assert (logged.sessions, len(logged.all_statements)) == (0, EXPECTED[1]), logged
        stored = (
            await app.client.get(f"{API}/runs/get", params={"run_id": run["info"]["run_id"]})
        ).json()
        assert stored["run"]["info"] == run["info"]
        assert sorted((t["key"], t["value"]) for t in stored["run"]["data"]["tags"]) == sorted(
            (t["key"], t["value"]) for t in run["data"]["tags"]
        )
        assert ("team", "a") in {(t["key"], t["value"]) for t in run["data"]["tags"]}
        assert stored["run"]["data"]["metrics"] == [
            {"key": "m", "value": 0.5, "timestamp": 7, "step": 0}
        ]
        assert run["info"]["artifact_uri"].endswith(f"/{run['info']['run_id']}/artifacts")


async def test_hot_writes_report_the_full_paths_errors(writes_url: str, tmp_path: Path) -> None:
    async with hot_app(writes_url, tmp_path) as app:
        exp = (await app.client.post(f"{API}/experiments/create", json={"name": "gone"})).json()
        eid = exp["experiment_id"]
        run = (await app.client.post(f"{API}/runs/create", json={"experiment_id": eid})).json()
        run_id = run["run"]["info"]["run_id"]
        await app.client.post(f"{API}/runs/delete", json={"run_id": run_id})
        await app.client.post(f"{API}/experiments/delete", json={"experiment_id": eid})
        cases = [
            ("runs/create", {"experiment_id": "987654321"}, 404, "RESOURCE_DOES_NOT_EXIST"),
            ("runs/create", {"experiment_id": eid}, 400, "INVALID_PARAMETER_VALUE"),
            (
                "runs/log-metric",
                {"run_id": "f" * 32, "key": "m", "value": 1, "timestamp": 1},
                404,
                "RESOURCE_DOES_NOT_EXIST",
            ),
            (
                "runs/log-metric",
                {"run_id": run_id, "key": "m", "value": 1, "timestamp": 1},
                400,
                "INVALID_PARAMETER_VALUE",
            ),
            (
                "runs/log-metric",
                {"run_id": run_id, "key": "", "value": 1, "timestamp": 1},
                400,
                "INVALID_PARAMETER_VALUE",
            ),
        ]
        for path, body, status, code in cases:
            response = await app.client.post(f"{API}/{path}", json=body)
            assert (response.status_code, response.json()["error_code"]) == (status, code), (
                path,
                body,
                response.text,
            )
        db: Any = app.db
        assert db.write_engine.pool.checkedout() == 0


# log-batch of metrics only: the run's check, history and latest values.
BATCH_EXPECTED = {"postgres": 1, "sqlite": 4}[BACKEND]


async def test_a_metrics_only_batch_is_one_prebuilt_statement_without_a_session(
    writes_url: str, tmp_path: Path
) -> None:
    async with hot_app(writes_url, tmp_path) as app:
        exp = (await app.client.post(f"{API}/experiments/create", json={"name": "batch"})).json()
        run = (
            await app.client.post(
                f"{API}/runs/create", json={"experiment_id": exp["experiment_id"]}
            )
        ).json()
        run_id = run["run"]["info"]["run_id"]
        metrics = [
            {"key": f"k{i % 3}", "value": i / 10, "timestamp": 100 + i, "step": i} for i in range(9)
        ] + [{"key": "k0", "value": "NaN", "timestamp": 50, "step": 1}]
        with app.count() as logged:
            response = await app.client.post(
                f"{API}/runs/log-batch", json={"run_id": run_id, "metrics": metrics}
            )
        assert (response.status_code, response.content) == (200, b"{}"), response.text
        assert (logged.sessions, len(logged.all_statements)) == (0, BATCH_EXPECTED), logged
        stored = (await app.client.get(f"{API}/runs/get", params={"run_id": run_id})).json()
        latest = sorted(
            (m["key"], m["value"], m["timestamp"], m["step"])
            for m in stored["run"]["data"]["metrics"]
        )
        assert latest == [("k0", 0.6, 106, 6), ("k1", 0.7, 107, 7), ("k2", 0.8, 108, 8)]
        history = (
            await app.client.get(
                f"{API}/metrics/get-history", params={"run_id": run_id, "metric_key": "k0"}
            )
        ).json()["metrics"]
        assert [(m["step"], m["value"]) for m in history] == [
            (0, 0.0),
            (1, "NaN"),
            (3, 0.3),
            (6, 0.6),
        ]
        # Params or tags in the batch take the session path, as before.
        with app.count() as mixed:
            response = await app.client.post(
                f"{API}/runs/log-batch",
                json={
                    "run_id": run_id,
                    "metrics": metrics[:1],
                    "params": [{"key": "p", "value": "1"}],
                },
            )
        assert response.status_code == 200, response.text
        assert mixed.sessions == 1, mixed


async def test_a_refused_metrics_only_batch_answers_the_full_paths_errors(
    writes_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with hot_app(writes_url, tmp_path) as app:
        exp = (await app.client.post(f"{API}/experiments/create", json={"name": "gone-b"})).json()
        eid = exp["experiment_id"]
        gone = (await app.client.post(f"{API}/runs/create", json={"experiment_id": eid})).json()
        gone_id = gone["run"]["info"]["run_id"]
        await app.client.post(f"{API}/runs/delete", json={"run_id": gone_id})
        live = (await app.client.post(f"{API}/runs/create", json={"experiment_id": eid})).json()
        live_id = live["run"]["info"]["run_id"]
        point = {"key": "m", "value": 1, "timestamp": 1}
        cases = [
            ({"run_id": "f" * 32, "metrics": [point]}, 404, "RESOURCE_DOES_NOT_EXIST"),
            ({"run_id": gone_id, "metrics": [point]}, 400, "INVALID_PARAMETER_VALUE"),
            ({"metrics": [point]}, 400, "INVALID_PARAMETER_VALUE"),
            (
                {"run_id": live_id, "metrics": [{**point, "key": ""}]},
                400,
                "INVALID_PARAMETER_VALUE",
            ),
            (
                {"run_id": live_id, "metrics": [{**point, "value": None}]},
                400,
                "INVALID_PARAMETER_VALUE",
            ),
            ({"run_id": live_id, "metrics": [point] * 1001}, 400, "INVALID_PARAMETER_VALUE"),
            # Past the columns' lengths: a 500 on PostgreSQL (and stored by SQLite) before.
            (
                {"run_id": live_id, "metrics": [{**point, "dataset_name": "d" * 501}]},
                400,
                "INVALID_PARAMETER_VALUE",
            ),
            (
                {"run_id": live_id, "metrics": [{**point, "dataset_digest": "f" * 37}]},
                400,
                "INVALID_PARAMETER_VALUE",
            ),
            (
                {"run_id": live_id, "metrics": [{**point, "model_id": "m-nope"}]},
                404,
                "RESOURCE_DOES_NOT_EXIST",
            ),
            # A later point refused: the first refused point's error, whichever check.
            (
                {"run_id": live_id, "metrics": [point, {**point, "timestamp": -1}]},
                400,
                "INVALID_PARAMETER_VALUE",
            ),
            (
                {"run_id": live_id, "metrics": [point, {"key": "m", "value": 1}]},
                400,
                "INVALID_PARAMETER_VALUE",
            ),
            (
                {
                    "run_id": live_id,
                    "metrics": [
                        point,
                        {**point, "key": "a/../b", "value": None},
                        {**point, "key": ""},
                    ],
                },
                400,
                "INVALID_PARAMETER_VALUE",
            ),
            (
                {"run_id": live_id, "metrics": [point, {**point, "key": "x", "value": None}]},
                400,
                "INVALID_PARAMETER_VALUE",
            ),
            # A logged model named, then a refused point: the refusal, not the model's 404.
            (
                {
                    "run_id": live_id,
                    "metrics": [{**point, "model_id": "m-nope"}, {**point, "key": ""}],
                },
                400,
                "INVALID_PARAMETER_VALUE",
            ),
        ]
        db: Any = app.db
        answers = []
        for body, status, code in cases:
            response = await app.client.post(f"{API}/runs/log-batch", json=body)
            answer = (response.status_code, response.json()["error_code"])
            assert answer == (status, code), (body, response.text)
            assert db.write_engine.pool.checkedout() == 0
            answers.append(response.content)

        # The same bodies through the session path alone answer the same bytes.
        async def never(*_args: Any) -> bool:
            return False

        from tracking import service

        monkeypatch.setattr(service, "log_batch_at_once", never)
        monkeypatch.setattr(service, "log_batch_grouped", never)
        for (body, _status, _code), answer in zip(cases, answers, strict=True):
            response = await app.client.post(f"{API}/runs/log-batch", json=body)
            assert response.content == answer, body
        for field, size in (("dataset_name", 501), ("dataset_digest", 37)):
            metric = {"run_id": live_id, **point, field: "d" * size}
            response = await app.client.post(f"{API}/runs/log-metric", json=metric)
            assert response.status_code == 400, response.text
            assert response.json()["error_code"] == "INVALID_PARAMETER_VALUE"
        stored = (await app.client.get(f"{API}/runs/get", params={"run_id": live_id})).json()
        assert "metrics" not in stored["run"]["data"]
