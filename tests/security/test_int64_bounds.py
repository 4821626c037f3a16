"""Integers beyond int64 anywhere on the wire are the client's 400, never a 500 (issue 12, case 8)."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest

from tests.conftest import LiveServer

HUGE = 10**20  # beyond int64 (and uint64): no BIGINT column can hold it
MLGATE = "/api/2.0/mlgate"


def _huge_token(offset: int = HUGE) -> str:
    raw = json.dumps({"offset": offset}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _assert_400(resp: httpx.Response) -> None:
    assert resp.status_code == 400, (resp.request.url, resp.status_code, resp.text)
    body = resp.json()
    assert body["error_code"] == "INVALID_PARAMETER_VALUE", body
    assert body["message"]


def _post(server: LiveServer, path: str, body: Any) -> httpx.Response:
    return httpx.post(server.api(path), json=body, timeout=30)


@pytest.fixture
def run_id(live_server: LiveServer, unique: str) -> str:
    exp = _post(live_server, "experiments/create", {"name": f"int64-{unique}"}).json()
    run = _post(
        live_server, "runs/create", {"experiment_id": exp["experiment_id"], "start_time": 1}
    ).json()
    return str(run["run"]["info"]["run_id"])


@pytest.mark.parametrize("as_text", [False, True], ids=["number", "numeric-string"])
def test_metric_step_and_timestamp_beyond_int64_are_400(
    live_server: LiveServer, run_id: str, as_text: bool
) -> None:
    huge: Any = str(HUGE) if as_text else HUGE
    for field in ("step", "timestamp"):
        metric = {"key": "m", "value": 1.0, "timestamp": 1, "step": 0, field: huge}
        _assert_400(_post(live_server, "runs/log-metric", {"run_id": run_id, **metric}))
        _assert_400(_post(live_server, "runs/log-batch", {"run_id": run_id, "metrics": [metric]}))
        negative = {**metric, field: -HUGE}
        _assert_400(_post(live_server, "runs/log-metric", {"run_id": run_id, **negative}))
    run = httpx.get(live_server.api("runs/get"), params={"run_id": run_id}).json()["run"]
    assert run["data"].get("metrics", []) == []


def test_run_start_and_end_time_beyond_int64_are_400(
    live_server: LiveServer, run_id: str, unique: str
) -> None:
    exp = _post(live_server, "experiments/create", {"name": f"int64-times-{unique}"}).json()
    created = _post(
        live_server, "runs/create", {"experiment_id": exp["experiment_id"], "start_time": HUGE}
    )
    _assert_400(created)
    _assert_400(_post(live_server, "runs/update", {"run_id": run_id, "end_time": HUGE}))
    _assert_400(_post(live_server, "runs/update", {"run_id": run_id, "end_time": str(-HUGE)}))
    # Just inside the range is stored as given.
    ok = _post(live_server, "runs/update", {"run_id": run_id, "end_time": 2**63 - 1})
    assert ok.status_code == 200, ok.text


def test_pointer_at_timestamp_beyond_int64_is_400(live_server: LiveServer, unique: str) -> None:
    name = f"int64-model-{unique}"
    assert _post(live_server, "registered-models/create", {"name": name}).status_code == 200
    resp = httpx.get(
        f"{live_server.url}{MLGATE}/registered-models/pointer-at",
        params={"name": name, "pointer": "Production", "timestamp": str(HUGE)},
    )
    _assert_400(resp)


def test_page_token_with_huge_offset_is_400_on_every_list(
    live_server: LiveServer, run_id: str, unique: str
) -> None:
    name = f"int64-pages-{unique}"
    assert _post(live_server, "registered-models/create", {"name": name}).status_code == 200
    token = _huge_token()
    api = live_server.api
    base = f"{live_server.url}{MLGATE}"
    gets = [
        (api("experiments/search"), {}),
        (api("runs/search"), {"experiment_ids": "0"}),
        (api("metrics/get-history"), {"run_id": run_id, "metric_key": "m"}),
        (api("registered-models/search"), {}),
        (api("model-versions/search"), {}),
        (f"{base}/registered-models/history", {"name": name}),
        (f"{base}/approvals/list", {}),
        (f"{base}/audit", {}),
        (f"{base}/deliveries", {}),
        (f"{base}/subscriptions", {}),
        (f"{base}/gates/list", {}),
        (f"{base}/gates/decisions/list", {}),
        (f"{base}/users/list", {}),
        (f"{base}/grants/list", {}),
    ]
    posts = [
        ("experiments/search", {}),
        ("runs/search", {"experiment_ids": ["0"]}),
        ("logged-models/search", {"experiment_ids": ["0"]}),
    ]
    for url, params in gets:
        _assert_400(httpx.get(url, params={**params, "page_token": token}, timeout=30))
    for path, body in posts:
        _assert_400(_post(live_server, path, {**body, "page_token": token}))
    # The largest offset a token may hold is an empty page (or a 400), never a 500.
    edge = _huge_token(2**63 - 1)
    for url, params in gets:
        resp = httpx.get(url, params={**params, "page_token": edge}, timeout=30)
        assert resp.status_code in (200, 400), (url, resp.status_code, resp.text)
    for path, body in posts:
        resp = _post(live_server, path, {**body, "page_token": edge})
        assert resp.status_code in (200, 400), (path, resp.status_code, resp.text)
