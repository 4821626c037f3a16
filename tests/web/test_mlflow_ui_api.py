"""MLflow's own UI at /mlflow/: its page and files, the routes it calls (forwarded from the
prefix to the same handlers), its sign-in by session cookie, cross-site write refusal, and the
404 page when the mlflow-ui extra is missing. Driven over HTTP against live servers, with data
logged by the official MLflow client."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from gates.server import migrate
from gates.server.mlflow_ui.bundle import find_bundle
from tests.conftest import LiveServer, start_server, stop_server
from tests.security.auth_world import API, World
from tests.web.support import Browser

BUNDLE = find_bundle()
pytestmark = [
    pytest.mark.compat,
    pytest.mark.skipif(
        BUNDLE is None,
        reason="MLflow's UI bundle is not installed (pip install -e '.[mlflow-ui]'; make test does)",
    ),
]
UI = "/mlflow/ajax-api/2.0/mlflow"
SAME_ORIGIN = {"Sec-Fetch-Site": "same-origin"}


def _log_run(experiment: str, history: int = 20) -> tuple[str, str]:
    import mlflow

    exp = mlflow.set_experiment(experiment)
    with mlflow.start_run() as run:
        mlflow.log_param("lr", 0.1)
        for step in range(history):
            mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
        mlflow.log_text("hello artifacts\n", "notes.txt")
        mlflow.log_dict({"a": 1}, "cfg/config.json")
    return exp.experiment_id, run.info.run_id


# --- the page and its files -------------------------------------------------------------------


def test_ui_page_is_served_under_its_prefix_with_a_strict_csp(live_server: LiveServer) -> None:
    bare = httpx.get(f"{live_server.url}/mlflow", follow_redirects=False)
    assert bare.status_code == 308 and bare.headers["location"] == "/mlflow/"
    page = httpx.get(f"{live_server.url}/mlflow/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self';" in csp and "unsafe-eval" not in csp
    assert "frame-ancestors 'none'" in csp and "connect-src 'self'" in csp
    scripts = re.findall(r'src="(static-files/[^"]+\.js)"', page.text)
    styles = re.findall(r'href="(static-files/[^"]+\.css)"', page.text)
    assert scripts and styles
    js = httpx.get(f"{live_server.url}/mlflow/{scripts[0]}")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    assert js.content == (BUNDLE / scripts[0].removeprefix("static-files/")).read_bytes()
    css = httpx.get(f"{live_server.url}/mlflow/{styles[0]}")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert httpx.get(f"{live_server.url}/mlflow/static-files/../../etc/passwd").status_code in (
        400,
        404,
    )


def _tags_sorted(answer: dict[str, Any]) -> dict[str, Any]:
    """A runs/get answer with its tag lists in key order (MLflow promises no tag order)."""
    data = answer["run"]["data"]
    for field in ("tags", "params"):
        data[field] = sorted(data.get(field, []), key=lambda t: t["key"])
    return answer


def test_ui_calls_under_the_prefix_reach_the_same_handlers(
    live_server: LiveServer, mlflow_tracking: str, unique: str
) -> None:
    _, run_id = _log_run(f"ui-{unique}")
    direct = httpx.get(f"{live_server.url}/api/2.0/mlflow/runs/get", params={"run_id": run_id})
    via_ui = httpx.get(f"{live_server.url}{UI}/runs/get", params={"run_id": run_id})
    assert via_ui.status_code == 200
    assert _tags_sorted(via_ui.json()) == _tags_sorted(direct.json())
    # Forwarded requests are counted under the route that answered them.
    metrics = httpx.get(f"{live_server.url}/metrics").text
    assert 'route="/ajax-api/2.0/mlflow/runs/get"' in metrics
    info = httpx.get(f"{live_server.url}/mlflow/ajax-api/3.0/mlflow/server-info").json()
    assert info["store_type"] == "SqlStore"
    artifact = httpx.get(
        f"{live_server.url}/mlflow/get-artifact", params={"run_uuid": run_id, "path": "notes.txt"}
    )
    assert artifact.status_code == 200 and artifact.text == "hello artifacts\n"
    # MLflow's UI also asks for it under the ajax prefix.
    again = httpx.get(
        f"{live_server.url}{UI}/get-artifact",
        params={"run_uuid": run_id, "path": "cfg/config.json"},
    )
    assert again.status_code == 200 and again.json() == {"a": 1}


# --- the routes only the UI calls --------------------------------------------------------------


def test_bulk_interval_returns_short_histories_whole_and_buckets_long_ones(
    live_server: LiveServer, mlflow_tracking: str, unique: str
) -> None:
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    _, short_run = _log_run(f"bulk-{unique}", history=20)
    _, long_run = _log_run(f"bulk-{unique}", history=1)
    now = int(time.time() * 1000)
    values = [float(step % 97) for step in range(3000)]
    values[1234] = 500.0  # a spike the downsampling must keep
    client = MlflowClient()
    for start in range(0, 3000, 1000):
        client.log_batch(
            long_run,
            metrics=[Metric("loss", values[s], now, s) for s in range(start, start + 1000)],
        )
    url = f"{live_server.url}{UI}/metrics/get-history-bulk-interval"
    body = httpx.get(
        url, params={"run_ids": [short_run, long_run], "metric_key": "loss", "max_results": 320}
    ).json()
    short = [m for m in body["metrics"] if m["run_id"] == short_run]
    long = [m for m in body["metrics"] if m["run_id"] == long_run]
    assert [m.get("step", 0) for m in short] == list(range(20))
    assert all(m["timestamp"] > 0 for m in short)
    assert 2 <= len(long) <= 320
    assert max(m["value"] for m in long) == 500.0 and min(m["value"] for m in long) == 0.0
    window = httpx.get(
        url,
        params={"run_ids": short_run, "metric_key": "loss", "start_step": 5, "end_step": 9},
    ).json()
    assert [m["step"] for m in window["metrics"]] == [5, 6, 7, 8, 9]
    for bad in (
        {"run_ids": short_run},
        {"run_ids": short_run, "metric_key": "loss", "max_results": 2501},
        {"run_ids": short_run, "metric_key": "loss", "start_step": 3},
        {"run_ids": short_run, "metric_key": "loss", "start_step": 9, "end_step": 3},
        {"metric_key": "loss"},
    ):
        refused = httpx.get(url, params=bad)
        assert refused.status_code == 400, bad
        assert refused.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    bulk = httpx.get(
        f"{live_server.url}{UI}/metrics/get-history-bulk",
        params={"run_id": [short_run, long_run], "metric_key": "loss", "max_results": 10},
    ).json()["metrics"]
    assert len([m for m in bulk if m["run_id"] == short_run]) == 10
    assert len([m for m in bulk if m["run_id"] == long_run]) == 10


def test_search_datasets_lists_what_the_runs_used(
    live_server: LiveServer, mlflow_tracking: str, unique: str
) -> None:
    import mlflow
    import pandas as pd

    exp = mlflow.set_experiment(f"datasets-{unique}")
    frame = pd.DataFrame({"x": [1, 2, 3], "y": [0, 1, 0]})
    dataset = mlflow.data.from_pandas(frame, name=f"train-{unique}")
    with mlflow.start_run():
        mlflow.log_input(dataset, context="training")
    answer = httpx.post(
        f"{live_server.url}{UI}/experiments/search-datasets",
        json={"experiment_ids": [exp.experiment_id]},
        headers=SAME_ORIGIN,
    )
    assert answer.status_code == 200
    assert answer.json()["dataset_summaries"] == [
        {
            "experiment_id": exp.experiment_id,
            "name": f"train-{unique}",
            "digest": dataset.digest,
            "context": "training",
        }
    ]
    empty = httpx.post(
        f"{live_server.url}{UI}/experiments/search-datasets",
        json={"experiment_ids": []},
        headers=SAME_ORIGIN,
    )
    assert empty.status_code == 400


def test_artifacts_list_walks_the_run_root(
    live_server: LiveServer, mlflow_tracking: str, unique: str
) -> None:
    _, run_id = _log_run(f"list-{unique}")
    url = f"{live_server.url}{UI}/artifacts/list"
    root = httpx.get(url, params={"run_uuid": run_id}).json()
    assert root["root_uri"].endswith(f"/{run_id}/artifacts")
    assert {(f["path"], f["is_dir"]) for f in root["files"]} == {
        ("cfg", True),
        ("notes.txt", False),
    }
    inner = httpx.get(url, params={"run_uuid": run_id, "path": "cfg"}).json()
    assert inner["files"] == [{"path": "cfg/config.json", "is_dir": False, "file_size": 12}]
    assert httpx.get(url, params={"run_uuid": run_id, "path": "../x"}).status_code == 400
    assert httpx.get(url, params={"run_uuid": "f" * 32}).status_code == 404


def test_logged_model_artifacts_and_upload(
    live_server: LiveServer, mlflow_tracking: str, unique: str
) -> None:
    import mlflow
    from sklearn.linear_model import LogisticRegression

    mlflow.set_experiment(f"models-{unique}")
    with mlflow.start_run() as run:
        info = mlflow.sklearn.log_model(
            LogisticRegression().fit([[0.0], [1.0]], [0, 1]), name="model"
        )
    files = httpx.get(
        f"{live_server.url}{UI}/logged-models/{info.model_id}/artifacts/files",
        params={"artifact_file_path": "MLmodel"},
    )
    assert files.status_code == 200 and "flavors" in files.text
    listing = httpx.get(
        f"{live_server.url}{UI}/logged-models/{info.model_id}/artifacts/directories"
    ).json()
    assert "MLmodel" in {f["path"] for f in listing["files"]}
    upload = f"{live_server.url}/mlflow/ajax-api/2.0/mlflow/upload-artifact"
    sent = httpx.post(
        upload,
        params={"run_uuid": run.info.run_id, "path": "uploaded/note.txt"},
        content=b"from the UI",
        headers={**SAME_ORIGIN, "Content-Type": "application/octet-stream"},
    )
    assert sent.status_code == 200, sent.text
    back = httpx.get(
        f"{live_server.url}/get-artifact",
        params={"run_uuid": run.info.run_id, "path": "uploaded/note.txt"},
    )
    assert back.content == b"from the UI"
    escape = httpx.post(
        upload,
        params={"run_uuid": run.info.run_id, "path": "../../elsewhere.txt"},
        content=b"x",
        headers={**SAME_ORIGIN, "Content-Type": "application/octet-stream"},
    )
    assert escape.status_code == 400
    # A raw-body POST needs no CORS preflight: a page on another site could send one to the
    # unprefixed route too, so it is refused there as well.
    for prefix in ("/mlflow/ajax-api", "/ajax-api"):
        forged = httpx.post(
            f"{live_server.url}{prefix}/2.0/mlflow/upload-artifact",
            params={"run_uuid": run.info.run_id, "path": "forged.txt"},
            content=b"x",
            headers={"Sec-Fetch-Site": "cross-site", "Content-Type": "text/plain"},
        )
        assert forged.status_code == 403, prefix
    missing = httpx.get(
        f"{live_server.url}/get-artifact",
        params={"run_uuid": run.info.run_id, "path": "forged.txt"},
    )
    assert missing.status_code == 404


def test_graphql_answers_the_run_and_experiment_pages(
    live_server: LiveServer, mlflow_tracking: str, unique: str
) -> None:
    experiment_id, run_id = _log_run(f"gql-{unique}")
    url = f"{live_server.url}/mlflow/graphql"
    run = httpx.post(
        url,
        json={"operationName": "GetRun", "variables": {"data": {"runId": run_id}}, "query": "q"},
        headers=SAME_ORIGIN,
    ).json()
    got = run["data"]["mlflowGetRun"]["run"]
    assert run["errors"] is None
    assert got["info"]["runUuid"] == run_id and got["info"]["status"] == "FINISHED"
    assert got["experiment"]["experimentId"] == experiment_id
    assert {"key": "lr", "value": "0.1", "__typename": "MlflowParam"} in got["data"]["params"]
    loss = next(m for m in got["data"]["metrics"] if m["key"] == "loss")
    assert loss["step"] == "19" and isinstance(loss["timestamp"], str)
    experiment = httpx.post(
        url,
        json={
            "operationName": "MlflowGetExperimentQuery",
            "variables": {"input": {"experimentId": experiment_id}},
        },
        headers=SAME_ORIGIN,
    ).json()["data"]["mlflowGetExperiment"]["experiment"]
    assert experiment["name"] == f"gql-{unique}" and experiment["creationTime"].isdigit()
    missing = httpx.post(
        url,
        json={"operationName": "GetRun", "variables": {"data": {"runId": "0" * 32}}},
        headers=SAME_ORIGIN,
    ).json()
    assert missing["data"] == {"mlflowGetRun": None} and missing["errors"]
    other = httpx.post(url, json={"operationName": "SearchTraces"}, headers=SAME_ORIGIN)
    assert other.status_code == 501 and other.json()["error_code"] == "NOT_IMPLEMENTED"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/mlflow/ajax-api/3.0/mlflow/assistant/config"),
        ("POST", "/mlflow/ajax-api/3.0/mlflow/traces/search"),
        ("GET", "/mlflow/ajax-api/2.0/mlflow/gateway-proxy"),
        ("GET", "/mlflow/ajax-api/3.0/mlflow/scorers/list"),
        ("POST", "/mlflow/ajax-api/4.0/mlflow/traces/search"),
    ],
)
def test_genai_routes_say_they_are_not_supported(
    live_server: LiveServer, method: str, path: str
) -> None:
    answer = httpx.request(method, f"{live_server.url}{path}", headers=SAME_ORIGIN, json={})
    assert answer.status_code == 501
    body = answer.json()
    assert body["error_code"] == "NOT_IMPLEMENTED"
    assert "not supported by mlgate" in body["message"]


# --- forgery and sign-in -----------------------------------------------------------------------


def test_cross_site_writes_through_the_ui_prefix_are_refused(
    live_server: LiveServer, mlflow_tracking: str, unique: str
) -> None:
    _, run_id = _log_run(f"csrf-{unique}")
    url = f"{live_server.url}{UI}/runs/set-tag"
    body = {"run_id": run_id, "key": "forged", "value": "yes"}
    for headers in (
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
        {"Origin": "https://evil.example"},
        {},
    ):
        refused = httpx.post(url, json=body, headers=headers)
        assert refused.status_code == 403, headers
        assert refused.json()["error_code"] == "PERMISSION_DENIED"
    tags = httpx.get(f"{live_server.url}{API}/runs/get", params={"run_id": run_id}).json()
    assert "forged" not in {t["key"] for t in tags["run"]["data"]["tags"]}
    accepted = httpx.post(url, json=body, headers={"Origin": live_server.url})
    assert accepted.status_code == 200
    assert httpx.post(url, json=body, headers=SAME_ORIGIN).status_code == 200


def _signed_in(world: World, level: str) -> Browser:
    from tests.security.auth_world import PASSWORD

    browser = Browser(world.server.url)
    assert browser.login(f"{level}-{world.u}", PASSWORD).status_code == 303
    return browser


def test_the_session_cookie_signs_in_ui_calls_only(web_world: World) -> None:
    browser = _signed_in(web_world, "reader")
    run = {"run_id": web_world.run_id}
    assert browser.get(f"{UI}/runs/get", params=run).status_code == 200
    # The same cookie on the plain API prefixes authenticates nothing.
    assert browser.get("/ajax-api/2.0/mlflow/runs/get", params=run).status_code == 401
    assert browser.get("/api/2.0/mlflow/runs/get", params=run).status_code == 401
    # The reader's grants apply: another experiment's run, alone or among visible ones.
    hidden = {"run_id": web_world.hidden_run_id}
    assert browser.get(f"{UI}/runs/get", params=hidden).status_code == 403
    interval = browser.get(
        f"{UI}/metrics/get-history-bulk-interval",
        params={"run_ids": [web_world.run_id, web_world.hidden_run_id], "metric_key": "m"},
    )
    assert interval.status_code == 403
    searched = browser.client.post(
        f"{UI}/runs/search",
        json={"experiment_ids": [web_world.experiment_id, web_world.hidden_experiment_id]},
        headers={**browser._headers(None), **SAME_ORIGIN},
    ).json()
    # Other web tests add runs to the shared world's experiment: only its runs come back.
    found = searched.get("runs", [])
    assert web_world.run_id in {r["info"]["run_id"] for r in found}
    assert web_world.hidden_run_id not in {r["info"]["run_id"] for r in found}
    assert {r["info"]["experiment_id"] for r in found} == {str(web_world.experiment_id)}
    gql = browser.client.post(
        "/mlflow/graphql",
        json={"operationName": "GetRun", "variables": {"data": {"runId": web_world.hidden_run_id}}},
        headers={**browser._headers(None), **SAME_ORIGIN},
    ).json()
    assert gql["data"] == {"mlflowGetRun": None} and "ermission" in gql["errors"][0]
    # A reader cannot write through the UI either.
    tag = browser.client.post(
        f"{UI}/runs/set-tag",
        json={"run_id": web_world.run_id, "key": "k", "value": "v"},
        headers={**browser._headers(None), **SAME_ORIGIN},
    )
    assert tag.status_code == 403


def test_signed_out_visitors_are_sent_to_sign_in(web_world: World) -> None:
    browser = Browser(web_world.server.url)
    page = browser.get("/mlflow/", follow=False)
    assert page.status_code == 303
    # (/mlflow then redirects to /mlflow/ once signed in)
    assert page.headers["location"] in ("/login?next=%2Fmlflow%2F", "/login?next=%2Fmlflow")
    assert browser.get(f"{UI}/experiments/search").status_code == 401


# --- without the extra -------------------------------------------------------------------------


def test_without_the_mlflow_ui_extra_the_prefix_answers_a_404_naming_it(
    make_database, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    # A stand-in "mlflow" package without the UI bundle, first on the server's import path
    # (as mlflow-skinny is: the client, no UI).
    fake = tmp_path / "site" / "mlflow"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    url = make_database("no-mlflow-ui")
    migrate.upgrade(url)
    path = os.pathsep.join([str(fake.parent), os.environ.get("PYTHONPATH", "")])
    server = start_server(url, tmp_path, extra_env={"PYTHONPATH": path})
    try:
        for where in ("/mlflow/", "/mlflow/static-files/static/js/main.js"):
            page = httpx.get(f"{server.url}{where}")
            assert page.status_code == 404
            assert "mlflow-ui" in page.text and "text/html" in page.headers["content-type"]
        assert httpx.get(f"{server.url}/health").status_code == 200
    finally:
        stop_server(server)
