"""Durable outbound events: a real receiver gets signed events in order, retried, redelivered,
across restarts, and exactly once per subscription from two servers on one database."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import LiveServer, stop_server
from tests.gates.events_support import (
    assert_signed,
    deliveries,
    events_server,
    migrated_database,
    mlflow_client,
    mlgate,
    new_version,
    subscribe,
    wait_settled,
)
from tests.gates.webhook_receiver import Received, receiving, wait_until

pytestmark = [pytest.mark.compat, pytest.mark.slow]


@pytest.fixture(scope="module")
def server(make_database: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    url = migrated_database(make_database, "events")
    live = events_server(url, tmp_path_factory.mktemp("events-server"))
    yield live
    stop_server(live)


def _model() -> str:
    return f"ev-{uuid.uuid4().hex[:10]}"


def _types(requests: list[Received]) -> list[str]:
    return [r.json["type"] for r in requests]


def test_registry_actions_arrive_signed_and_in_order(server: LiveServer) -> None:
    name = _model()
    client = mlflow_client(server)
    with receiving() as receiver:
        sub_id, secret = subscribe(
            server,
            receiver.url,
            [
                "registered_model.created",
                "model_version.created",
                "model_version_tag.set",
                "stage.transitioned",
                "alias.moved",
            ],
            model_name=name,
        )
        client.create_registered_model(name, tags={"team": "fraud"})
        v1 = new_version(client, name)
        client.transition_model_version_stage(name, v1, "Staging")
        client.set_registered_model_alias(name, "champion", v1)
        v2 = new_version(client, name)
        client.set_model_version_tag(name, v2, "validated", "yes")
        client.transition_model_version_stage(
            name, v2, "Production", archive_existing_versions=True
        )
        client.set_registered_model_alias(name, "champion", v2)
        client.delete_registered_model_alias(name, "champion")
        # Another model's events do not reach a subscription filtered to this one.
        client.create_registered_model(_model())

        got = receiver.wait_for(9)
        settled = wait_settled(server, sub_id, 9)

    types = _types(got)
    assert types == [
        "registered_model.created",
        "model_version.created",
        "stage.transitioned",
        "alias.moved",
        "model_version.created",
        "model_version_tag.set",
        "stage.transitioned",
        "alias.moved",
        "alias.moved",
    ]
    for request in got:
        assert_signed(secret, request)
        assert request.headers["content-type"] == "application/json"
        assert request.json["data"]["name"] == name
    # One delivery id per event, and it is what the log lists.
    ids = [r.headers["webhook-id"] for r in got]
    assert len(set(ids)) == len(ids)
    assert {d["delivery_id"] for d in settled} == set(ids)
    assert all(d["status"] == "succeeded" and d["attempts"] == 1 for d in settled)
    assert len({r.json["id"] for r in got}) == len(got)

    by_type = [(r.json["type"], r.json["data"]) for r in got]
    assert by_type[0][1]["tags"] == {"team": "fraud"}
    assert by_type[1][1]["version"] == "1" and by_type[1][1]["source"].startswith("runs:/")
    assert by_type[2][1] | {"timestamp": 0} == {
        "name": name,
        "version": "1",
        "from_stage": "None",
        "to_stage": "Staging",
        "archived_versions": [],
        "actor": "anonymous",
        "comment": None,
        "timestamp": 0,
    }
    assert (by_type[3][1]["from_version"], by_type[3][1]["to_version"]) == (None, "1")
    assert by_type[5][1]["key"] == "validated" and by_type[5][1]["value"] == "yes"
    # v2 -> Production (nothing there to archive), then the alias moves and goes.
    assert by_type[6][1]["to_stage"] == "Production"
    assert (by_type[7][1]["from_version"], by_type[7][1]["to_version"]) == ("1", "2")
    assert (by_type[8][1]["from_version"], by_type[8][1]["to_version"]) == ("2", None)


def test_failed_attempts_are_retried_with_backoff_then_succeed_in_order(
    server: LiveServer,
) -> None:
    name = _model()
    client = mlflow_client(server)
    client.create_registered_model(name)

    def flaky(_: Received, index: int) -> tuple[int, dict[str, str]]:
        return (503, {}) if index < 2 else (200, {})

    with receiving(flaky) as receiver:
        sub_id, secret = subscribe(server, receiver.url, ["model_version.created"], model_name=name)
        new_version(client, name)
        new_version(client, name)
        got = receiver.wait_for(4)
        settled = wait_settled(server, sub_id, 2)

    first, second = got[0].headers["webhook-id"], got[3].headers["webhook-id"]
    # The first event is retried under its stable delivery id; the second waits its turn.
    assert [r.headers["webhook-id"] for r in got] == [first, first, first, second]
    assert [r.json["data"]["version"] for r in got] == ["1", "1", "1", "2"]
    assert [r.headers["mlgate-delivery-attempt"] for r in got] == ["1", "2", "3", "1"]
    for request in got:
        assert_signed(secret, request)

    assert {d["delivery_id"]: d["status"] for d in settled} == {
        first: "succeeded",
        second: "succeeded",
    }
    log = mlgate(server, "GET", f"deliveries/{first}")
    attempts = log["attempts"]
    assert [a["status_code"] for a in attempts] == [503, 503, 200]
    assert log["delivery"]["total_attempts"] == 3
    # The schedule (0.2 s, 0.4 s, jittered by up to 10%) spaces the attempts.
    gaps = [b["started_at"] - a["started_at"] for a, b in itertools.pairwise(attempts)]
    assert gaps[0] >= 180 and gaps[1] >= 360, gaps


def test_dead_delivery_blocks_nothing_after_it_dies_and_redeliver_resends_same_id(
    server: LiveServer,
) -> None:
    name = _model()
    client = mlflow_client(server)
    client.create_registered_model(name)
    healthy = {"now": False}

    def outage(_: Received, __: int) -> tuple[int, dict[str, str]]:
        return (200, {}) if healthy["now"] else (500, {})

    with receiving(outage) as receiver:
        sub_id, secret = subscribe(server, receiver.url, ["model_version.created"], model_name=name)
        new_version(client, name)
        new_version(client, name)
        # A schedule of two retries: each delivery dies after three attempts, in order.
        settled = wait_settled(server, sub_id, 2)
        got = receiver.wait_for(6)
        assert [r.json["data"]["version"] for r in got] == ["1"] * 3 + ["2"] * 3
        assert all(d["status"] == "dead" for d in settled)
        assert settled[0]["last_status_code"] == 500
        dead = mlgate(
            server, "GET", "deliveries", params={"subscription_id": sub_id, "status": "dead"}
        )
        assert len(dead["deliveries"]) == 2

        healthy["now"] = True
        first = got[0].headers["webhook-id"]
        answer = mlgate(server, "POST", f"deliveries/{first}/redeliver")
        assert answer["delivery"]["status"] == "pending"
        again = receiver.wait_for(7)[6]
        assert again.headers["webhook-id"] == first
        assert again.json["id"] == got[0].json["id"]
        assert_signed(secret, again)
        done = wait_until(
            lambda: [
                d
                for d in deliveries(server, sub_id)
                if d["delivery_id"] == first and d["status"] == "succeeded"
            ],
            what="the redelivery",
        )
        assert done[0]["total_attempts"] == 4 and done[0]["attempts"] == 1

        # A succeeded delivery can be sent again too, still under the same id.
        mlgate(server, "POST", f"deliveries/{first}/redeliver")
        assert receiver.wait_for(8)[7].headers["webhook-id"] == first
        # Every redelivery is in the audit trail, with who asked for it.
        trail = mlgate(server, "GET", "audit", params={"subject": f"subscription:{sub_id}"})
        redone = [e for e in trail["entries"] if e["kind"] == "delivery.redelivered"]
        assert len(redone) == 2 and {e["payload"]["delivery_id"] for e in redone} == {first}


def test_unknown_delivery_and_bad_filters_are_mlflow_errors(server: LiveServer) -> None:
    import httpx

    r = httpx.post(f"{server.url}/api/2.0/mlgate/deliveries/nope/redeliver")
    assert r.status_code == 404 and r.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    r = httpx.get(f"{server.url}/api/2.0/mlgate/deliveries", params={"status": "lost"})
    assert r.status_code == 400 and r.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    r = httpx.post(
        f"{server.url}/api/2.0/mlgate/subscriptions",
        json={"name": "x", "url": "http://127.0.0.1:1/", "events": ["nothing.happened"]},
    )
    assert r.status_code == 400 and "nothing.happened" in r.json()["message"]


def test_subscription_api_hides_secrets_and_rotation_signs_with_both(
    server: LiveServer,
) -> None:
    name = _model()
    client = mlflow_client(server)
    client.create_registered_model(name)
    with receiving() as receiver:
        sub_id, old_secret = subscribe(
            server, receiver.url, ["model_version.created"], model_name=name
        )
        shown = mlgate(server, "GET", f"subscriptions/{sub_id}")["subscription"]
        assert "secret" not in shown and old_secret not in str(shown)
        listed = mlgate(server, "GET", "subscriptions", params={"max_results": 1000})
        assert sub_id in {s["id"] for s in listed["subscriptions"]}
        assert old_secret not in str(listed)

        rotated = mlgate(server, "POST", f"subscriptions/{sub_id}/rotate-secret", json={})
        new_secret = rotated["secret"]
        assert new_secret != old_secret
        assert rotated["subscription"]["previous_secret_expires_at"] > 0
        new_version(client, name)
        request = receiver.wait_for(1)[0]
        # Receivers holding either secret verify the same delivery during the rotation.
        assert len(request.headers["webhook-signature"].split()) == 2
        assert_signed(new_secret, request)
        assert_signed(old_secret, request)

        # Disabled: no deliveries are created for new events.
        mlgate(server, "PATCH", f"subscriptions/{sub_id}", json={"status": "disabled"})
        new_version(client, name)
        assert len(deliveries(server, sub_id)) == 1
        mlgate(server, "DELETE", f"subscriptions/{sub_id}")
    import httpx

    gone = httpx.get(f"{server.url}/api/2.0/mlgate/subscriptions/{sub_id}")
    assert gone.status_code == 404


def test_events_written_while_no_worker_runs_are_delivered_after_restart(
    make_database: Any, tmp_path: Path
) -> None:
    url = migrated_database(make_database, "restart")
    name = _model()
    with receiving() as receiver:
        first = events_server(url, tmp_path / "a", MLGATE_WEBHOOK_WORKER="false")
        try:
            sub_id, secret = subscribe(
                first, receiver.url, ["model_version.created", "alias.moved"], model_name=name
            )
            client = mlflow_client(first)
            client.create_registered_model(name)
            for _ in range(3):
                version = new_version(client, name)
                client.set_registered_model_alias(name, "latest-good", version)
            pending = deliveries(first, sub_id)
            assert len(pending) == 6 and {d["status"] for d in pending} == {"pending"}
        finally:
            stop_server(first)
        assert receiver.requests == []

        second = events_server(url, tmp_path / "b")
        try:
            got = receiver.wait_for(6)
            wait_settled(second, sub_id, 6)
        finally:
            stop_server(second)
    assert _types(got) == ["model_version.created", "alias.moved"] * 3
    assert [r.json["data"].get("version") or r.json["data"]["to_version"] for r in got] == [
        "1",
        "1",
        "2",
        "2",
        "3",
        "3",
    ]
    for request in got:
        assert_signed(secret, request)


def test_two_servers_on_one_database_deliver_each_event_once(
    make_database: Any, tmp_path: Path
) -> None:
    url = migrated_database(make_database, "replicas")
    name = _model()
    servers = [events_server(url, tmp_path / "a"), events_server(url, tmp_path / "b")]
    try:
        with receiving() as receiver:
            sub_id, secret = subscribe(
                servers[0], receiver.url, ["model_version_tag.set"], model_name=name
            )
            clients = [mlflow_client(s) for s in servers]
            clients[0].create_registered_model(name)
            version = new_version(clients[0], name)
            count = 24
            for i in range(count):
                clients[i % 2].set_model_version_tag(name, version, "step", str(i))
            settled = wait_settled(servers[1], sub_id, count)
            got = receiver.requests
        assert len(got) == count, "an event was delivered more than once"
        assert len({r.headers["webhook-id"] for r in got}) == count
        assert [r.json["data"]["value"] for r in got] == [str(i) for i in range(count)]
        assert all(d["status"] == "succeeded" and d["total_attempts"] == 1 for d in settled)
        for request in got:
            assert_signed(secret, request)
    finally:
        for s in servers:
            stop_server(s)
