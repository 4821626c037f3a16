"""mlgate answers as ``mlflow server`` 3.17 does: error wording and the JSON of tracking answers.

Each case is sent to a live mlgate and, in the same test, to a live reference ``mlflow server``.
mlgate's expected text is written out here, so CI checks it even where the reference server (the
full mlflow package, bench extra) is not installed; then only the comparison is skipped.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.compat.mlflow_reference import mlflow_executable, start_reference
from tests.conftest import LiveServer

pytestmark = pytest.mark.compat

HINT = "See the API docs for more information about request parameters."


@pytest.fixture(scope="module")
def reference_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str | None]:
    if mlflow_executable() is None:
        yield None
        return
    with start_reference(tmp_path_factory.mktemp("mlflow-reference")) as url:
        yield url


def _need_reference(url: str | None) -> str:
    if url is None:
        pytest.skip(
            "comparison with the reference skipped: 'mlflow server' (the full mlflow package, "
            "bench extra) is not installed; mlgate's expected answer was checked above"
        )
    return url


def _call(base: str, method: str, path: str, body: dict[str, Any]) -> httpx.Response:
    url = f"{base}/api/2.0/mlflow/{path}"
    if method == "GET":
        return httpx.get(url, params=body, timeout=30)
    return httpx.request(method, url, json=body, timeout=30)


def _wrong_type(value: str, name: str, kind: str) -> str:
    return f"Invalid value {value} for parameter '{name}' supplied:  Hint: Value was of type '{kind}'. {HINT}"


def _missing(name: str) -> str:
    return f"Missing value for required parameter '{name}'. {HINT}"


@dataclass(frozen=True)
class Case:
    id: str
    method: str
    path: str
    body: dict[str, Any]
    message: str
    status: int = 400
    error_code: str = "INVALID_PARAMETER_VALUE"
    # mlflow server's text where mlgate deliberately differs (README, "Differences from MLflow").
    reference_message: str | None = None
    # The tail comes from the system resolver: compare only the head on mlgate alone.
    prefix_only: bool = False


EVENTS = [{"entity": "MODEL_VERSION", "action": "CREATED"}]

CASES = [
    # Request-validation errors: a value of the wrong JSON type.
    Case(
        "int-for-str",
        "POST",
        "experiments/create",
        {"name": 123},
        _wrong_type("123", "name", "int"),
    ),
    Case(
        "str-for-list",
        "POST",
        "experiments/create",
        {"name": "x", "tags": "notalist"},
        _wrong_type('"notalist"', "tags", "str"),
    ),
    Case(
        "object-for-str",
        "POST",
        "registered-models/create",
        {"name": {"a": 1}},
        _wrong_type('{"a":1}', "name", "dict"),
    ),
    Case(
        "list-for-str",
        "POST",
        "experiments/create",
        {"name": ["a"]},
        _wrong_type('["a"]', "name", "list"),
    ),
    Case(
        "bool-for-str",
        "POST",
        "runs/set-tag",
        {"run_id": "r", "key": "k", "value": True},
        _wrong_type("true", "value", "bool"),
    ),
    Case(
        "str-for-int",
        "POST",
        "runs/create",
        {"experiment_id": "0", "start_time": "abc"},
        _wrong_type('"abc"', "start_time", "str"),
    ),
    Case(
        "str-for-double",
        "POST",
        "runs/log-metric",
        {"run_id": "r", "key": "m", "value": "x", "timestamp": 1},
        _wrong_type('"x"', "value", "str"),
    ),
    Case(
        "str-for-repeated",
        "POST",
        "runs/search",
        {"experiment_ids": "0"},
        _wrong_type('"0"', "experiment_ids", "str"),
    ),
    Case(
        "int-for-source",
        "POST",
        "model-versions/create",
        {"name": "x", "source": 5},
        _wrong_type("5", "source", "int"),
    ),
    Case(
        "query-str-for-int",
        "GET",
        "experiments/search",
        {"max_results": "abc"},
        _wrong_type('"abc"', "max_results", "str"),
    ),
    # Missing required parameters.
    Case("missing-name", "POST", "experiments/create", {}, _missing("name")),
    Case("null-name", "POST", "registered-models/create", {"name": None}, _missing("name")),
    Case(
        "missing-timestamp",
        "POST",
        "runs/log-metric",
        {"run_id": "r", "key": "m", "value": 1},
        _missing("timestamp"),
    ),
    Case("missing-experiment-id", "GET", "experiments/get", {}, _missing("experiment_id")),
    Case("missing-run-id", "GET", "runs/get", {}, _missing("run_id")),
    Case(
        "missing-metric-key", "GET", "metrics/get-history", {"run_id": "r"}, _missing("metric_key")
    ),
    Case("list-artifacts-missing-run-id", "GET", "artifacts/list", {}, _missing("run_id")),
    # Range checks.
    Case(
        "max-results-zero",
        "POST",
        "experiments/search",
        {"max_results": 0},
        "Invalid value 0 for parameter 'max_results' supplied. It must be a positive integer",
    ),
    Case(
        "max-results-too-big",
        "POST",
        "experiments/search",
        {"max_results": 50001},
        "Invalid value 50001 for parameter 'max_results' supplied. It must be at most 50000",
    ),
    # Webhook URL validation (MLflow 3 webhooks API).
    Case(
        "webhook-missing-name",
        "POST",
        "webhooks",
        {"url": "https://1.1.1.1/x", "events": EVENTS},
        _missing("name"),
    ),
    Case(
        "webhook-missing-url", "POST", "webhooks", {"name": "w", "events": EVENTS}, _missing("url")
    ),
    Case(
        "webhook-missing-events",
        "POST",
        "webhooks",
        {"name": "w", "url": "https://1.1.1.1/x"},
        _missing("events"),
    ),
    Case(
        "webhook-blank-url",
        "POST",
        "webhooks",
        {"name": "w", "url": "   ", "events": EVENTS},
        "Webhook URL cannot be empty or just whitespace: '   '",
    ),
    Case(
        "webhook-no-hostname",
        "POST",
        "webhooks",
        {"name": "w", "url": "https://", "events": EVENTS},
        "Webhook URL must include a hostname: 'https://'",
    ),
    Case(
        "webhook-bad-ipv6",
        "POST",
        "webhooks",
        {"name": "w", "url": "https://[bad/x", "events": EVENTS},
        "Invalid webhook URL 'https://[bad/x': ValueError('Invalid IPv6 URL')",
    ),
    Case(
        "webhook-private-address",
        "POST",
        "webhooks",
        {"name": "w", "url": "https://10.1.2.3/hook", "events": EVENTS},
        "Webhook URL must not resolve to a non-public IP address. '10.1.2.3' resolves to 10.1.2.3.",
    ),
    Case(
        "webhook-loopback-name",
        "POST",
        "webhooks",
        {"name": "w", "url": "https://localhost/hook", "events": EVENTS},
        "Webhook URL must not resolve to a non-public IP address. 'localhost' resolves to 127.0.0.1.",
    ),
    Case(
        "webhook-unresolvable",
        "POST",
        "webhooks",
        {"name": "w", "url": "https://no-such-host.invalid/x", "events": EVENTS},
        "Cannot resolve Webhook URL hostname 'no-such-host.invalid': ",
        prefix_only=True,
    ),
    Case(
        "webhook-scheme",
        "POST",
        "webhooks",
        {"name": "w", "url": "ftp://example.org/x", "events": EVENTS},
        "Invalid webhook URL scheme: 'ftp'. Allowed schemes are: http, https.",
        # MLflow allows only https unless MLFLOW_WEBHOOK_ALLOWED_SCHEMES says otherwise.
        reference_message="Invalid webhook URL scheme: 'ftp'. Allowed schemes are: https.",
    ),
]


def _error(response: httpx.Response) -> tuple[int, str, str]:
    body = response.json()
    return response.status_code, body.get("error_code"), body.get("message")


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_requests_get_mlflows_wording(
    case: Case, live_server: LiveServer, reference_url: str | None
) -> None:
    status, code, message = _error(_call(live_server.url, case.method, case.path, case.body))
    assert (status, code) == (case.status, case.error_code), message
    if case.prefix_only:
        assert message.startswith(case.message), message
    else:
        assert message == case.message

    reference = _need_reference(reference_url)
    ref_status, ref_code, ref_message = _error(_call(reference, case.method, case.path, case.body))
    assert (ref_status, ref_code) == (status, code)
    assert ref_message == (case.reference_message or message)


# --- the JSON of tracking answers -------------------------------------------------------------


def _shape(value: Any) -> Any:
    """The structure of an answer with its zero/empty values marked; ids and times erased."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in sorted(value.items())}
    if isinstance(value, list):
        return sorted((_shape(v) for v in value), key=lambda v: json.dumps(v, sort_keys=True))
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        return 0 if value == 0 else "number"
    if isinstance(value, str):
        return "" if value == "" else "text"
    return value


def _tracking_answers(base: str) -> dict[str, Any]:
    """Drive one fixed sequence of tracking calls; every answer body, keyed by step."""
    answers: dict[str, Any] = {}

    def call(step: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        response = _call(base, method, path, body or {})
        assert response.status_code == 200, (step, response.text)
        answers[step] = response.json()
        return answers[step]

    eid = call(
        "create experiment", "POST", "experiments/create", {"name": f"p-{uuid.uuid4().hex}"}
    )["experiment_id"]
    call("get experiment", "GET", "experiments/get", {"experiment_id": eid})
    run = call("create run", "POST", "runs/create", {"experiment_id": eid, "start_time": 1000})
    rid = run["run"]["info"]["run_id"]
    metric = {"run_id": rid, "key": "loss", "value": 0.0, "timestamp": 0, "step": 0}
    call("log metric at step 0", "POST", "runs/log-metric", metric)
    call("log param", "POST", "runs/log-parameter", {"run_id": rid, "key": "p", "value": ""})
    dataset = {"name": "d", "digest": "x", "source_type": "local", "source": "{}"}
    call(
        "log inputs", "POST", "runs/log-inputs", {"run_id": rid, "datasets": [{"dataset": dataset}]}
    )
    call("get run", "GET", "runs/get", {"run_id": rid})
    call("search runs", "POST", "runs/search", {"experiment_ids": [eid]})
    call("metric history", "GET", "metrics/get-history", {"run_id": rid, "metric_key": "loss"})
    model = call("create logged model", "POST", "logged-models", {"experiment_id": eid})
    mid = model["model"]["info"]["model_id"]
    model_metric = {
        **metric,
        "key": "acc",
        "model_id": mid,
        "dataset_name": "d",
        "dataset_digest": "x",
    }
    call("log model metric", "POST", "runs/log-metric", model_metric)
    call("get logged model", "GET", f"logged-models/{mid}")
    call("search logged models", "POST", "logged-models/search", {"experiment_ids": [eid]})
    call(
        "set logged model tags",
        "PATCH",
        f"logged-models/{mid}/tags",
        {"tags": [{"key": "t", "value": "v"}]},
    )
    call("list run artifacts", "GET", "artifacts/list", {"run_id": rid})
    none = {"experiment_ids": [eid], "filter": "params.p = 'nope'"}
    call("search runs, none found", "POST", "runs/search", none)
    call("history, none logged", "GET", "metrics/get-history", {"run_id": rid, "metric_key": "x"})
    return answers


def test_tracking_answers_send_mlflows_zero_and_empty_defaults(live_server: LiveServer) -> None:
    answers = _tracking_answers(live_server.url)
    point = {"key": "loss", "value": 0.0, "timestamp": 0, "step": 0}
    assert answers["get run"]["run"]["data"]["metrics"] == [point]
    assert answers["metric history"] == {"metrics": [point]}
    info = answers["create logged model"]["model"]["info"]
    assert (info["model_type"], info["source_run_id"]) == ("", "")
    assert "lifecycle_stage" not in info
    assert answers["get logged model"]["model"]["data"]["metrics"][0]["step"] == 0
    assert answers["get experiment"]["experiment"]["workspace"] == "default"
    assert "outputs" not in answers["create run"]["run"]
    assert answers["create run"]["run"]["data"].keys() == {"tags"}
    assert answers["set logged model tags"] == {}
    assert answers["search runs, none found"] == {}
    assert answers["history, none logged"] == {}
    assert answers["list run artifacts"].keys() == {"root_uri"}


def test_tracking_answers_have_the_reference_servers_shape(
    live_server: LiveServer, reference_url: str | None
) -> None:
    reference = _need_reference(reference_url)
    ours = _tracking_answers(live_server.url)
    theirs = _tracking_answers(reference)
    for step in theirs:
        assert _shape(ours[step]) == _shape(theirs[step]), step
