"""Serving follows the pointer, against two live servers on one database: the watch long-poll,
report-back, desired versus actual, and drift events that only one replica emits."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.conftest import LiveServer, stop_server
from tests.gates.deployments_support import (
    DRIFT_AFTER,
    MLGATE,
    SETTINGS,
    WATCHERS,
    deployments,
    new_model,
    new_version,
    resolve,
)
from tests.gates.events_support import events_server, migrated_database, mlflow_client, subscribe
from tests.gates.webhook_receiver import Receiver, receiving, wait_until


@pytest.fixture(scope="module")
def servers(make_database: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Any]]:
    """Two replicas on one database, both sweeping for drift and delivering webhooks."""
    url = migrated_database(make_database, "deployments")
    root = tmp_path_factory.mktemp("deployments")
    started = [events_server(url, root / "a", **SETTINGS)]
    started.append(
        events_server(
            url,
            root / "b",
            **SETTINGS,
            # Both replicas store artifacts in one place, as replicas behind a balancer do.
            MLGATE_ARTIFACTS_DESTINATION=str(started[0].artifacts),
        )
    )
    yield started
    for s in started:
        stop_server(s)


def _watch(server: LiveServer, etag: str | None = None, **params: Any) -> httpx.Response:
    headers = {"If-None-Match": etag} if etag else {}
    return httpx.get(f"{server.url}{MLGATE}/watch", params=params, headers=headers, timeout=90)


def _report(server: LiveServer, **body: Any) -> httpx.Response:
    return httpx.post(f"{server.url}{MLGATE}/deployments/report", json=body)


class _Later(threading.Thread):
    """Run ``action`` after ``delay`` seconds; ``join`` re-raises what it raised."""

    def __init__(self, delay: float, action: Any) -> None:
        super().__init__()
        self.delay, self.action = delay, action
        self.error: BaseException | None = None
        self.start()

    def run(self) -> None:
        time.sleep(self.delay)
        try:
            self.action()
        except BaseException as exc:
            self.error = exc

    def join(self, timeout: float | None = None) -> None:
        super().join(timeout)
        if self.error is not None:
            raise self.error


# --- watch ----------------------------------------------------------------------------------------


def test_watch_returns_promptly_when_an_alias_moves_on_another_replica(
    servers: list[LiveServer],
) -> None:
    a, b = servers
    client_b = mlflow_client(b)
    name = new_model(client_b)
    v1, v2 = new_version(client_b, name, "one"), new_version(client_b, name, "two")
    client_b.set_registered_model_alias(name, "champion", v1)
    first = _watch(a, name=name, alias="champion", timeout=5)
    assert first.status_code == 200, first.text
    assert first.json()["version"] == v1
    etag = first.headers["ETag"]
    assert first.json()["etag"] == etag
    # The move is made through replica b; replica a sees it through the database.
    mover = _Later(1.0, lambda: client_b.set_registered_model_alias(name, "champion", v2))
    started = time.monotonic()
    moved = _watch(a, etag, name=name, alias="champion", timeout=30)
    elapsed = time.monotonic() - started
    mover.join()
    assert moved.status_code == 200, moved.text
    assert 0.9 < elapsed < 4.0, elapsed
    body = moved.json()
    resolved = resolve(a, f"models:/{name}@champion")
    assert body["version"] == v2 == resolved["version"]
    assert body["digest"] == resolved["digest"] and len(body["digest"]) == 64
    assert body["download_uri"] == resolved["download_uri"]
    assert body["artifact_url"] == resolved["artifact_url"]
    assert moved.headers["ETag"] == body["etag"] != etag


def test_watch_returns_promptly_when_a_stage_moves(servers: list[LiveServer]) -> None:
    a, _ = servers
    client = mlflow_client(a)
    name = new_model(client)
    v1, v2 = new_version(client, name, "one"), new_version(client, name, "two")
    empty = _watch(a, name=name, stage="production", timeout=0)
    assert empty.status_code == 200
    assert empty.json()["version"] is None and empty.json()["stage"] == "Production"
    mover = _Later(0.5, lambda: client.transition_model_version_stage(name, v1, "Production"))
    moved = _watch(a, empty.headers["ETag"], name=name, stage="Production", timeout=30)
    mover.join()
    assert moved.status_code == 200 and moved.json()["version"] == v1
    # A higher version entering the stage is what models:/name/Production loads next.
    mover = _Later(0.5, lambda: client.transition_model_version_stage(name, v2, "Production"))
    again = _watch(a, moved.headers["ETag"], name=name, stage="Production", timeout=30)
    mover.join()
    assert again.status_code == 200 and again.json()["version"] == v2
    assert again.json()["digest"] == resolve(a, f"models:/{name}/Production")["digest"]


def test_watch_answers_304_with_the_same_etag_when_nothing_moves(
    servers: list[LiveServer],
) -> None:
    a, b = servers
    client = mlflow_client(a)
    name = new_model(client)
    client.set_registered_model_alias(name, "champion", new_version(client, name, "one"))
    etag = _watch(a, name=name, alias="champion", timeout=0).headers["ETag"]
    started = time.monotonic()
    unchanged = _watch(b, etag, name=name, alias="champion", timeout=1.5)
    assert unchanged.status_code == 304
    assert time.monotonic() - started >= 1.4
    assert unchanged.headers["ETag"] == etag and unchanged.content == b""
    # ``since`` carries the token for clients that cannot set If-None-Match.
    by_since = _watch(a, name=name, alias="champion", timeout=0.5, since=etag.strip('"'))
    assert by_since.status_code == 304
    # A token the server never issued (or an old one) answers at once with the current state.
    stale = _watch(a, '"0000"', name=name, alias="champion", timeout=30)
    assert stale.status_code == 200 and stale.headers["ETag"] == etag
    # The same version under another pointer has another token: tokens name the pointer.
    client.set_registered_model_alias(name, "backup", "1")
    assert _watch(a, name=name, alias="backup", timeout=0).headers["ETag"] != etag


def test_watch_refuses_bad_input_with_mlflow_errors(servers: list[LiveServer]) -> None:
    a, _ = servers
    client = mlflow_client(a)
    name = new_model(client)
    cases = [
        ({"name": name}, 400, "INVALID_PARAMETER_VALUE"),
        ({"name": name, "stage": "Production", "alias": "x"}, 400, "INVALID_PARAMETER_VALUE"),
        ({"name": name, "stage": "Prod"}, 400, "INVALID_PARAMETER_VALUE"),
        ({"name": name, "alias": "bad alias"}, 400, "INVALID_PARAMETER_VALUE"),
        ({"name": name, "alias": "a", "timeout": 61}, 400, "INVALID_PARAMETER_VALUE"),
        ({"name": name, "alias": "a", "timeout": -1}, 400, "INVALID_PARAMETER_VALUE"),
        ({"name": name, "alias": "a", "timeout": "soon"}, 400, "INVALID_PARAMETER_VALUE"),
        ({"name": f"{name}-missing", "alias": "a", "timeout": 0}, 404, "RESOURCE_DOES_NOT_EXIST"),
    ]
    for params, status, code in cases:
        r = _watch(a, **params)
        assert (r.status_code, r.json()["error_code"]) == (status, code), (params, r.text)


def test_watch_answers_404_when_the_model_is_deleted_mid_watch(servers: list[LiveServer]) -> None:
    a, _ = servers
    client = mlflow_client(a)
    name = new_model(client)
    etag = _watch(a, name=name, alias="champion", timeout=0).headers["ETag"]
    deleter = _Later(0.5, lambda: client.delete_registered_model(name))
    r = _watch(a, etag, name=name, alias="champion", timeout=30)
    deleter.join()
    assert (r.status_code, r.json()["error_code"]) == (404, "RESOURCE_DOES_NOT_EXIST")


def test_watchers_beyond_the_cap_answer_429_and_others_are_served(
    servers: list[LiveServer],
) -> None:
    a, _ = servers
    client = mlflow_client(a)
    name = new_model(client)
    etag = _watch(a, name=name, alias="champion", timeout=0).headers["ETag"]
    with ThreadPoolExecutor(WATCHERS) as pool:
        holding = [
            pool.submit(_watch, a, etag, name=name, alias="champion", timeout=4)
            for _ in range(WATCHERS)
        ]
        time.sleep(1.0)
        refused = _watch(a, etag, name=name, alias="champion", timeout=1)
        # Ordinary requests are unaffected: the long-polls hold no database connection.
        assert httpx.get(a.api("registered-models/get"), params={"name": name}).status_code == 200
        assert [f.result().status_code for f in holding] == [304] * WATCHERS
    assert refused.status_code == 429, refused.text
    assert refused.json()["error_code"] == "REQUEST_LIMIT_EXCEEDED"
    assert int(refused.headers["Retry-After"]) >= 1
    assert _watch(a, etag, name=name, alias="champion", timeout=0).status_code == 304


# --- report-back ----------------------------------------------------------------------------------


def test_reports_show_desired_versus_actual_per_replica(servers: list[LiveServer]) -> None:
    a, b = servers
    client = mlflow_client(a)
    name = new_model(client)
    v1, v2 = new_version(client, name, "one"), new_version(client, name, "two")
    client.set_registered_model_alias(name, "champion", v2)
    d1 = resolve(a, f"models:/{name}/{v1}")["digest"]
    d2 = resolve(a, f"models:/{name}/{v2}")["digest"]
    common = {"deployment": f"{name}-prod", "name": name, "alias": "champion"}
    assert _report(a, **common, replica_id="r-1", version=v2, digest=d2).status_code == 200
    answer = _report(b, **common, replica_id="r-2", version=int(v1), digest=f"sha256:{d1}")
    assert answer.status_code == 200, answer.text
    [shown] = deployments(a, name)
    assert shown == answer.json()["deployment"] | {"mismatch_since": shown["mismatch_since"]}
    assert shown["desired"] == {"version": v2, "digest": d2}
    assert shown["alias"] == "champion" and shown["stage"] is None
    replicas = {r["replica_id"]: r for r in shown["replicas"]}
    assert replicas["r-1"]["in_sync"] and replicas["r-1"]["digest"] == d2
    assert not replicas["r-2"]["in_sync"] and replicas["r-2"]["digest"] == d1
    assert replicas["r-2"]["version"] == v1 and replicas["r-2"]["reported_by"] == "anonymous"
    assert shown["in_sync"] is False and shown["mismatch_since"] is not None
    # The replica catches up: the same row is replaced, not added to.
    _report(a, **common, replica_id="r-2", version=v2, digest=d2)
    [caught_up] = deployments(b, name, deployment=f"{name}-prod")
    assert [r["replica_id"] for r in caught_up["replicas"]] == ["r-1", "r-2"]
    assert caught_up["in_sync"] is True and caught_up["mismatch_since"] is None
    # Desired follows the pointer at once; actual waits for the replicas.
    client.set_registered_model_alias(name, "champion", v1)
    [moved] = deployments(a, name)
    assert moved["desired"] == {"version": v1, "digest": d1} and moved["in_sync"] is False


def test_a_report_cannot_rebind_a_deployment_or_carry_bad_values(
    servers: list[LiveServer],
) -> None:
    a, _ = servers
    client = mlflow_client(a)
    name, other = new_model(client), new_model(client)
    v1 = new_version(client, name, "one")
    digest = resolve(a, f"models:/{name}/{v1}")["digest"]
    good = {"deployment": f"{name}-d", "name": name, "stage": "Production", "replica_id": "r"}
    assert _report(a, **good, version=v1, digest=digest).status_code == 200
    bad: list[tuple[dict[str, Any], int, str]] = [
        ({**good, "name": other}, 400, "RESOURCE_ALREADY_EXISTS"),
        ({**good, "stage": "Staging"}, 400, "RESOURCE_ALREADY_EXISTS"),
        ({**good, "stage": None, "alias": "champion"}, 400, "RESOURCE_ALREADY_EXISTS"),
        ({**good, "digest": "abc"}, 400, "INVALID_PARAMETER_VALUE"),
        ({**good, "digest": digest.upper()}, 400, "INVALID_PARAMETER_VALUE"),
        ({**good, "version": "v1"}, 400, "INVALID_PARAMETER_VALUE"),
        ({**good, "replica_id": ""}, 400, "INVALID_PARAMETER_VALUE"),
        ({**good, "replica_id": "a\nb"}, 400, "INVALID_PARAMETER_VALUE"),
        ({**good, "deployment": "x" * 257}, 400, "INVALID_PARAMETER_VALUE"),
        ({**good, "stage": None}, 400, "INVALID_PARAMETER_VALUE"),
        ({**good, "name": f"{name}-missing"}, 404, "RESOURCE_DOES_NOT_EXIST"),
        ({**good, "version": 2**63}, 400, "INVALID_PARAMETER_VALUE"),
    ]
    for body, status, code in bad:
        r = _report(a, **body)
        assert (r.status_code, r.json()["error_code"]) == (status, code), (body, r.text)
    # Nothing refused was written: still one deployment, one replica, the first report's.
    [shown] = deployments(a, name)
    assert [(r["replica_id"], r["digest"]) for r in shown["replicas"]] == [("r", digest)]
    assert deployments(a, other) == []
    r = httpx.get(f"{a.url}{MLGATE}/deployments", params={"name": name, "deployment": "nope"})
    assert (r.status_code, r.json()["error_code"]) == (404, "RESOURCE_DOES_NOT_EXIST")


def test_reports_of_one_new_deployment_racing_create_it_once(servers: list[LiveServer]) -> None:
    a, b = servers
    client = mlflow_client(a)
    name = new_model(client)
    body = {"deployment": f"{name}-race", "name": name, "alias": "champion"}
    with ThreadPoolExecutor(8) as pool:
        answers = list(
            pool.map(lambda i: _report((a, b)[i % 2], **body, replica_id=f"r{i}"), range(8))
        )
    assert [r.status_code for r in answers] == [200] * 8, [r.text for r in answers]
    [shown] = deployments(a, name)
    assert sorted(r["replica_id"] for r in shown["replicas"]) == [f"r{i}" for i in range(8)]


# --- drift ------------------------------------------------------------------------------------------


def _events(receiver: Receiver, deployment: str) -> list[dict[str, Any]]:
    return [r.json for r in receiver.requests if r.json["data"].get("deployment") == deployment]


def test_drift_fires_once_after_the_configured_time_and_converged_after(
    servers: list[LiveServer],
) -> None:
    a, b = servers
    client = mlflow_client(a)
    name = new_model(client)
    v1, v2 = new_version(client, name, "one"), new_version(client, name, "two")
    d1 = resolve(a, f"models:/{name}/{v1}")["digest"]
    d2 = resolve(a, f"models:/{name}/{v2}")["digest"]
    client.set_registered_model_alias(name, "champion", v1)
    deployment = f"{name}-serving"
    body = {"deployment": deployment, "name": name, "alias": "champion"}
    with receiving() as receiver:
        subscribe(a, receiver.url, ["deployment.drift", "deployment.converged"], model_name=name)
        _report(a, **body, replica_id="r-1", version=v1, digest=d1)
        _report(b, **body, replica_id="r-2", version=v1, digest=d1)
        moved_at = time.monotonic()
        client.set_registered_model_alias(name, "champion", v2)
        _report(a, **body, replica_id="r-1", version=v2, digest=d2)  # r-2 stays behind
        drift = wait_until(lambda: _events(receiver, deployment), what="deployment.drift")
        assert time.monotonic() - moved_at >= DRIFT_AFTER - 0.1
        assert [e["type"] for e in drift] == ["deployment.drift"]
        data = drift[0]["data"]
        assert (data["name"], data["alias"], data["stage"]) == (name, "champion", None)
        assert (data["desired_version"], data["desired_digest"]) == (v2, d2)
        behind = {r["replica_id"]: r["in_sync"] for r in data["replicas"]}
        assert behind == {"r-1": True, "r-2": False}
        [shown] = deployments(b, name)
        assert shown["drifted"] is True and shown["in_sync"] is False
        # Both replicas keep sweeping; neither emits again while the drift lasts.
        time.sleep(1.0)
        assert len(_events(receiver, deployment)) == 1
        _report(b, **body, replica_id="r-2", version=v2, digest=d2)
        both = wait_until(
            lambda: (e := _events(receiver, deployment)) and len(e) >= 2 and e,
            what="deployment.converged",
        )
        time.sleep(0.5)
        assert [e["type"] for e in _events(receiver, deployment)] == [
            "deployment.drift",
            "deployment.converged",
        ]
        assert both[1]["data"]["desired_digest"] == d2
    [shown] = deployments(a, name)
    assert shown["drifted"] is False and shown["in_sync"] is True


def test_a_difference_shorter_than_the_drift_time_fires_nothing(
    servers: list[LiveServer],
) -> None:
    a, _ = servers
    client = mlflow_client(a)
    name = new_model(client)
    v1, v2 = new_version(client, name, "one"), new_version(client, name, "two")
    d1 = resolve(a, f"models:/{name}/{v1}")["digest"]
    d2 = resolve(a, f"models:/{name}/{v2}")["digest"]
    client.set_registered_model_alias(name, "champion", v1)
    deployment = f"{name}-quick"
    body = {"deployment": deployment, "name": name, "alias": "champion", "replica_id": "r"}
    with receiving() as receiver:
        subscribe(a, receiver.url, ["deployment.drift", "deployment.converged"], model_name=name)
        _report(a, **body, version=v1, digest=d1)
        client.set_registered_model_alias(name, "champion", v2)
        time.sleep(DRIFT_AFTER / 3)
        _report(a, **body, version=v2, digest=d2)
        time.sleep(DRIFT_AFTER + 1.0)
        assert _events(receiver, deployment) == []
    [shown] = deployments(a, name)
    assert shown["in_sync"] and shown["mismatch_since"] is None and not shown["drifted"]
