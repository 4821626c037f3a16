"""MLflow 3's webhook API, driven by the official client, on mlgate's outbox: MLflow's event
names, payloads and ``X-MLflow-*`` signature headers."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from mlflow import MlflowClient
from mlflow.entities.webhook import WebhookEvent, WebhookStatus
from mlflow.exceptions import MlflowException

# MLflow's own signing function: the receiver side of the contract, not mlgate's code.
from mlflow.webhooks.delivery import _generate_hmac_signature

from tests.conftest import LiveServer, stop_server
from tests.gates.events_support import (
    deliveries,
    events_server,
    migrated_database,
    mlflow_client,
    wait_settled,
)
from tests.gates.webhook_receiver import Received, receiving, wait_until

pytestmark = pytest.mark.compat


@pytest.fixture(scope="module")
def server(make_database: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    url = migrated_database(make_database, "mlflow_webhooks")
    live = events_server(url, tmp_path_factory.mktemp("mlflow-webhooks"))
    yield live
    stop_server(live)


def _assert_mlflow_signed(secret: str, request: Received) -> None:
    headers = request.headers
    expected = _generate_hmac_signature(
        secret,
        headers["x-mlflow-delivery-id"],
        headers["x-mlflow-timestamp"],
        request.body.decode(),
    )
    assert headers["x-mlflow-signature"] == expected


def test_create_get_list_update_delete_through_the_client(server: LiveServer) -> None:
    client = mlflow_client(server)
    name = f"hook-{uuid.uuid4().hex[:8]}"
    created = client.create_webhook(
        name=name,
        url="http://127.0.0.1:9/hook",
        events=["registered_model.created", WebhookEvent("model_version_alias", "created")],
        description="first",
        secret="s3cret",
    )
    assert created.name == name and created.status == WebhookStatus.ACTIVE
    assert {str(e) for e in created.events} == {
        "registered_model.created",
        "model_version_alias.created",
    }
    assert created.creation_timestamp > 0 and created.description == "first"
    assert created.secret is None  # never sent back

    got = client.get_webhook(created.webhook_id)
    assert got.url == "http://127.0.0.1:9/hook" and got.name == name
    assert created.webhook_id in {w.webhook_id for w in client.list_webhooks(max_results=1000)}

    updated = client.update_webhook(
        created.webhook_id,
        name=f"{name}-2",
        events=["model_version.created"],
        status="DISABLED",
        description="second",
    )
    assert updated.name == f"{name}-2" and updated.status == WebhookStatus.DISABLED
    assert [str(e) for e in updated.events] == ["model_version.created"]
    assert updated.description == "second"
    assert updated.last_updated_timestamp >= created.last_updated_timestamp

    client.delete_webhook(created.webhook_id)
    with pytest.raises(MlflowException) as err:
        client.get_webhook(created.webhook_id)
    assert err.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    assert created.webhook_id not in {w.webhook_id for w in client.list_webhooks()}


def test_list_webhooks_pages(server: LiveServer) -> None:
    client = mlflow_client(server)
    ids = {
        client.create_webhook(
            name=f"page-{i}", url="http://127.0.0.1:9/", events=["model_version.created"]
        ).webhook_id
        for i in range(3)
    }
    seen: set[str] = set()
    page = client.list_webhooks(max_results=2)
    while True:
        assert len(page) <= 2
        seen |= {w.webhook_id for w in page}
        if not page.token:
            break
        page = client.list_webhooks(max_results=2, page_token=page.token)
    assert ids <= seen
    for webhook_id in ids:
        client.delete_webhook(webhook_id)


def test_invalid_webhooks_are_invalid_parameter_value(server: LiveServer) -> None:
    client = mlflow_client(server)
    for kwargs in (
        {"name": "bad name!", "url": "http://127.0.0.1:9/", "events": ["model_version.created"]},
        {"name": "ok", "url": "ftp://127.0.0.1/", "events": ["model_version.created"]},
    ):
        with pytest.raises(MlflowException) as err:
            client.create_webhook(**kwargs)
        assert err.value.error_code == "INVALID_PARAMETER_VALUE"
    with pytest.raises(MlflowException) as err:
        client.update_webhook(str(uuid.uuid4()), name="x")
    assert err.value.error_code == "RESOURCE_DOES_NOT_EXIST"


def test_test_webhook_sends_mlflows_example_payload_signed(server: LiveServer) -> None:
    client = mlflow_client(server)
    with receiving() as receiver:
        hook = client.create_webhook(
            name="tester",
            url=receiver.url,
            events=["model_version_tag.set", "registered_model.created"],
            secret="test-secret",
        )
        result = client.test_webhook(hook.webhook_id)
        assert result.success and result.response_status == 200
        first = receiver.requests[0]
        assert first.json["entity"] == "model_version_tag" and first.json["action"] == "set"
        assert first.json["data"] == {
            "name": "example_model",
            "version": "1",
            "key": "example_key",
            "value": "example_value",
        }
        _assert_mlflow_signed("test-secret", first)

        result = client.test_webhook(
            hook.webhook_id, event=WebhookEvent("registered_model", "created")
        )
        assert result.success
        assert receiver.requests[1].json["entity"] == "registered_model"
        client.delete_webhook(hook.webhook_id)

    def failing(_: Received, __: int) -> tuple[int, dict[str, str]]:
        return 500, {}

    with receiving(failing) as receiver:
        hook = client.create_webhook(
            name="failing", url=receiver.url, events=["model_version.created"]
        )
        result = client.test_webhook(hook.webhook_id)
        assert not result.success and result.response_status == 500
        assert "x-mlflow-signature" not in receiver.requests[0].headers  # no secret, no signature
        client.delete_webhook(hook.webhook_id)


def test_registry_events_arrive_in_mlflows_format(server: LiveServer) -> None:
    client = mlflow_client(server)
    model = f"mf-{uuid.uuid4().hex[:8]}"
    with receiving() as receiver:
        hook = client.create_webhook(
            name="registry",
            url=receiver.url,
            events=[
                "registered_model.created",
                "model_version.created",
                "model_version_tag.set",
                "model_version_tag.deleted",
                "model_version_alias.created",
                "model_version_alias.deleted",
            ],
            secret="registry-secret",
        )
        client.create_registered_model(model, tags={"t": "1"}, description="d")
        run = client.create_run("0")
        version = client.create_model_version(
            model,
            f"runs:/{run.info.run_id}/model",
            run_id=run.info.run_id,
            tags={"stage": "candidate"},
            description="v",
        ).version
        client.set_model_version_tag(model, version, "k", "v")
        client.delete_model_version_tag(model, version, "k")
        client.set_registered_model_alias(model, "champion", version)
        client.delete_registered_model_alias(model, "champion")
        got = receiver.wait_for(6)
        wait_settled(server, hook.webhook_id, 6)

        for request in got:
            _assert_mlflow_signed("registry-secret", request)
            assert set(request.json) == {"entity", "action", "timestamp", "data"}
        assert [(r.json["entity"], r.json["action"]) for r in got] == [
            ("registered_model", "created"),
            ("model_version", "created"),
            ("model_version_tag", "set"),
            ("model_version_tag", "deleted"),
            ("model_version_alias", "created"),
            ("model_version_alias", "deleted"),
        ]
        data = [r.json["data"] for r in got]
        assert data[0] == {"name": model, "tags": {"t": "1"}, "description": "d"}
        assert set(data[1]) == {"name", "version", "source", "run_id", "tags", "description"}
        assert data[1]["version"] == version and data[1]["source"].startswith("runs:/")
        assert data[1]["tags"] == {"stage": "candidate"} and data[1]["description"] == "v"
        assert data[2] == {"name": model, "version": version, "key": "k", "value": "v"}
        assert data[3] == {"name": model, "version": version, "key": "k"}
        assert data[4] == {"name": model, "alias": "champion", "version": version}
        assert data[5] == {"name": model, "alias": "champion"}
        # The delivery id header is the delivery log's id.
        logged = {d["delivery_id"] for d in deliveries(server, hook.webhook_id)}
        assert {r.headers["x-mlflow-delivery-id"] for r in got} == logged
        assert all(json.loads(r.body)["timestamp"].endswith("+00:00") for r in got)

        # A disabled webhook gets no deliveries for later events.
        client.update_webhook(hook.webhook_id, status="DISABLED")
        client.set_model_version_tag(model, version, "k2", "v2")
        assert len(deliveries(server, hook.webhook_id)) == 6
        client.delete_webhook(hook.webhook_id)


def test_mlgate_subscriptions_do_not_show_up_as_mlflow_webhooks(server: LiveServer) -> None:
    import httpx

    r = httpx.post(
        f"{server.url}/api/2.0/mlgate/subscriptions",
        json={"name": "gate-only", "url": "http://127.0.0.1:9/", "events": ["gate.decided"]},
    )
    sub_id = r.json()["subscription"]["id"]
    client: MlflowClient = mlflow_client(server)
    assert sub_id not in {w.webhook_id for w in client.list_webhooks(max_results=1000)}
    with pytest.raises(MlflowException):
        client.get_webhook(sub_id)
    httpx.delete(f"{server.url}/api/2.0/mlgate/subscriptions/{sub_id}")


def test_prompt_changes_arrive_as_mlflows_prompt_events(server: LiveServer) -> None:
    """A prompt's changes go out as MLflow's ``prompt*`` events, never as the model ones."""
    import mlflow

    client = mlflow_client(server)
    prompt = f"pr-{uuid.uuid4().hex[:8]}"
    prompt_events = [
        "prompt.created",
        "prompt_version.created",
        "prompt_tag.set",
        "prompt_tag.deleted",
        "prompt_version_tag.set",
        "prompt_version_tag.deleted",
        "prompt_alias.created",
        "prompt_alias.deleted",
    ]
    model_events = [
        "registered_model.created",
        "model_version.created",
        "model_version_tag.set",
        "model_version_alias.created",
    ]
    mlflow.set_tracking_uri(server.url)
    mlflow.set_registry_uri(server.url)
    with receiving() as receiver:
        hook = client.create_webhook(name="prompts", url=receiver.url, events=prompt_events)
        models = client.create_webhook(name="models", url=receiver.url, events=model_events)
        client.create_prompt(prompt, description="d", tags={"team": "nlp"})
        mlflow.genai.register_prompt(prompt, "Hi {{x}}", commit_message="m", tags={"a": "b"})
        client.set_prompt_tag(prompt, "k", "v")
        client.delete_prompt_tag(prompt, "k")
        mlflow.genai.set_prompt_version_tag(prompt, 1, "vk", "vv")
        mlflow.genai.delete_prompt_version_tag(prompt, 1, "vk")
        mlflow.genai.set_prompt_alias(prompt, "prod", 1)
        mlflow.genai.delete_prompt_alias(prompt, "prod")
        wait_until(
            lambda: any(
                (r.json["entity"], r.json["action"]) == ("prompt_alias", "deleted")
                for r in receiver.requests
            ),
            what="the last prompt event",
        )
        got = receiver.requests
        assert len(wait_settled(server, hook.webhook_id, len(got))) == len(got)
        seen = [(r.json["entity"], r.json["action"], r.json["data"]) for r in got]
        assert deliveries(server, models.webhook_id) == []
        assert seen[0] == (
            "prompt",
            "created",
            {"name": prompt, "tags": {"team": "nlp"}, "description": "d"},
        )
        # The client links the prompt to the active experiment with a tag: left out here.
        rest = [(e, a, d) for e, a, d in seen[1:] if d.get("key") != "_mlflow_experiment_ids"]
        assert rest == [
            # register_prompt puts the version's tags on the prompt too (the client's doing).
            ("prompt_tag", "set", {"name": prompt, "key": "a", "value": "b"}),
            (
                "prompt_version",
                "created",
                {
                    "name": prompt,
                    "version": "1",
                    "template": "Hi {{x}}",
                    "tags": {"a": "b"},
                    "description": "m",
                },
            ),
            ("prompt_tag", "set", {"name": prompt, "key": "k", "value": "v"}),
            ("prompt_tag", "deleted", {"name": prompt, "key": "k"}),
            (
                "prompt_version_tag",
                "set",
                {"name": prompt, "version": "1", "key": "vk", "value": "vv"},
            ),
            ("prompt_version_tag", "deleted", {"name": prompt, "version": "1", "key": "vk"}),
            ("prompt_alias", "created", {"name": prompt, "alias": "prod", "version": "1"}),
            ("prompt_alias", "deleted", {"name": prompt, "alias": "prod"}),
        ]
        client.delete_webhook(hook.webhook_id)
        client.delete_webhook(models.webhook_id)
