"""A metric's history is read in one statement on the driver with no ORM session, and answers
exactly the bytes the session-based service answers (errors, empty pages and tokens included)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import msgspec
import pytest

from tests.hot_app import HotApp, hot_app, migrated_database
from tracking import service
from tracking.core.errors import MlflowError

API = "/api/2.0/mlflow"


@pytest.fixture(scope="module")
async def history_url(make_database: Any) -> str:
    return await migrated_database(make_database, "history-hot")


async def _post(app: HotApp, path: str, body: dict[str, Any]) -> Any:
    response = await app.client.post(f"{API}/{path}", json=body)
    assert response.status_code == 200, (path, response.text)
    return response.json()


async def _session_bytes(app: HotApp, params: dict[str, Any]) -> bytes:
    async with app.db.read() as s:
        metrics, token = await service.metric_history(
            s,
            params.get("run_id") or params.get("run_uuid"),
            params.get("metric_key"),
            params.get("max_results"),
            params.get("page_token"),
        )
    out: dict[str, Any] = {"metrics": metrics} if metrics else {}
    if token:
        out["next_page_token"] = token
    return msgspec.json.encode(out)


async def _history_run(app: HotApp) -> str:
    eid = (await _post(app, "experiments/create", {"name": f"hot-hist-{uuid.uuid4().hex[:8]}"}))[
        "experiment_id"
    ]
    run_id = (await _post(app, "runs/create", {"experiment_id": eid}))["run"]["info"]["run_id"]
    values: list[Any] = [0.5, "NaN", "Infinity", "-Infinity", -0.0, 1e-7, 1.7976931348623157e308, 3]
    points = [
        {"key": "m", "value": v, "timestamp": 1_700_000_000_000 + i, "step": i % 3}
        for i, v in enumerate(values)
    ]
    points.append({"key": "m", "value": 2.5, "timestamp": 7, "step": -(2**40),
                   "dataset_name": "d,\"x\"", "dataset_digest": "abc"})  # fmt: skip
    points.append({"key": "é/ü", "value": 1.0, "timestamp": 1, "step": 0})
    await _post(app, "runs/log-batch", {"run_id": run_id, "metrics": points})
    model = (await _post(app, "logged-models", {"experiment_id": eid, "source_run_id": run_id}))[
        "model"
    ]["info"]["model_id"]
    await _post(app, "runs/log-metric", {"run_id": run_id, "key": "m", "value": 9.0,
                                         "timestamp": 3, "step": 1, "model_id": model})  # fmt: skip
    return run_id


async def test_history_pages_are_one_statement_and_the_session_paths_bytes(
    history_url: str, tmp_path: Path
) -> None:
    async with hot_app(history_url, tmp_path) as app:
        run_id = await _history_run(app)
        for first in (
            {"run_id": run_id, "metric_key": "m"},
            {"run_uuid": run_id, "metric_key": "m", "max_results": 3},
            {"run_id": run_id, "metric_key": "é/ü"},
        ):
            params: dict[str, Any] = first
            pages = 0
            while True:
                with app.count() as counted:
                    response = await app.client.get(f"{API}/metrics/get-history", params=params)
                assert response.status_code == 200, response.text
                assert (counted.sessions, len(counted.statements)) == (0, 1), counted
                assert response.content == await _session_bytes(app, params), params
                pages += 1
                token = response.json().get("next_page_token")
                if not token:
                    break
                params = {**params, "page_token": token}
            assert pages <= 4
        everything = (await app.client.get(
            f"{API}/metrics/get-history", params={"run_id": run_id, "metric_key": "m"}
        )).json()["metrics"]  # fmt: skip
        assert {"NaN", "Infinity", "-Infinity"} <= {p["value"] for p in everything}
        assert any(p.get("model_id") for p in everything)
        assert any(p.get("dataset_name") == 'd,"x"' for p in everything)
        # A deleted run's history is still read.
        await _post(app, "runs/delete", {"run_id": run_id})
        params = {"run_id": run_id, "metric_key": "m", "max_results": 2}
        response = await app.client.get(f"{API}/metrics/get-history", params=params)
        assert response.content == await _session_bytes(app, params)


async def test_history_refusals_missing_runs_and_empty_pages_match_the_session_path(
    history_url: str, tmp_path: Path
) -> None:
    async with hot_app(history_url, tmp_path) as app:
        run_id = await _history_run(app)
        async with app.db.read() as s:
            _, token = await service.metric_history(s, run_id, "m", 3, None)
        assert token is not None
        for params in (
            {"run_id": run_id, "metric_key": "nothing"},  # no such metric: {}
            {"run_id": run_id, "metric_key": "m", "page_token": token, "max_results": 100},
            {"run_id": "f" * 32, "metric_key": "m"},  # no such run: 404
            {"run_id": run_id},  # no key
            {"metric_key": "m"},  # no run
            {"run_id": run_id, "metric_key": "m", "max_results": 0},
            {"run_id": run_id, "metric_key": "m", "max_results": 25001},
            {"run_id": run_id, "metric_key": "m", "page_token": "garbage"},
            {"run_id": run_id, "metric_key": "other", "page_token": token},  # another query's
        ):
            response = await app.client.get(f"{API}/metrics/get-history", params=params)
            try:
                expected = await _session_bytes(app, params)
            except MlflowError as refused:
                assert response.status_code == refused.status_code, params
                # The error handler may append MLflow's hint to the message.
                answer = response.json()
                assert answer["error_code"] == refused.error_code, params
                assert answer["message"].startswith(str(refused)), params
            else:
                assert response.status_code == 200, (params, response.text)
                assert response.content == expected, params
