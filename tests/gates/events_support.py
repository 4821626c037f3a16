"""Helpers for the webhook tests: a live server with a fast worker, API calls, signatures."""

from __future__ import annotations

import base64
import hashlib
import hmac
from pathlib import Path
from typing import Any

import httpx
from mlflow import MlflowClient

from gates.server import migrate
from tests.conftest import LiveServer, start_server
from tests.gates.webhook_receiver import Received, wait_until

# Receivers in tests listen on 127.0.0.1, which the SSRF policy refuses unless allow-listed.
FAST_WORKER = {
    "MLGATE_WEBHOOK_ALLOWLIST": "127.0.0.1/32",
    "MLGATE_WEBHOOK_POLL_INTERVAL": "0.05",
    # Three attempts, 0.2 s and 0.4 s apart (give or take 10%).
    "MLGATE_WEBHOOK_RETRY_SCHEDULE": "200ms,400ms",
}


def migrated_database(make_database: Any, label: str) -> str:
    url: str = make_database(label)
    migrate.upgrade(url)
    return url


def events_server(database_url: str, workdir: Path, **env: str) -> LiveServer:
    workdir.mkdir(parents=True, exist_ok=True)
    return start_server(database_url, workdir, extra_env={**FAST_WORKER, **env})


def mlflow_client(server: LiveServer) -> MlflowClient:
    return MlflowClient(tracking_uri=server.url, registry_uri=server.url)


def new_version(client: MlflowClient, name: str) -> str:
    run = client.create_run("0")
    source = f"runs:/{run.info.run_id}/model"
    return str(client.create_model_version(name, source, run_id=run.info.run_id).version)


def mlgate(server: LiveServer, method: str, path: str, **kwargs: Any) -> Any:
    response = httpx.request(method, f"{server.url}/api/2.0/mlgate/{path}", timeout=30, **kwargs)
    assert response.status_code == 200, response.text
    return response.json()


def subscribe(server: LiveServer, url: str, events: list[str], **fields: Any) -> tuple[str, str]:
    """Create an mlgate subscription; returns (id, secret)."""
    body = {"name": fields.pop("name", "test-subscription"), "url": url, "events": events}
    answer = mlgate(server, "POST", "subscriptions", json={**body, **fields})
    return answer["subscription"]["id"], answer["secret"]


def deliveries(server: LiveServer, subscription_id: str, **params: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = mlgate(
        server,
        "GET",
        "deliveries",
        params={"subscription_id": subscription_id, "max_results": 1000, **params},
    )["deliveries"]
    return found


def wait_settled(server: LiveServer, subscription_id: str, count: int) -> list[dict[str, Any]]:
    """Poll until ``count`` deliveries exist and none is still open (pending or failed)."""

    def settled() -> list[dict[str, Any]] | None:
        found = deliveries(server, subscription_id)
        done = len(found) >= count and all(d["status"] in ("succeeded", "dead") for d in found)
        return found if done else None

    result: list[dict[str, Any]] = wait_until(settled, what=f"{count} settled deliveries")
    return result


def standard_signatures(secret: str, request: Received) -> list[str]:
    """What a Standard Webhooks receiver computes (written out here, not taken from mlgate)."""
    assert secret.startswith("whsec_")
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = (
        f"{request.headers['webhook-id']}.{request.headers['webhook-timestamp']}.".encode()
        + request.body
    )
    return ["v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()]


def assert_signed(secret: str, request: Received) -> None:
    expected = standard_signatures(secret, request)[0]
    sent = request.headers["webhook-signature"].split()
    assert any(hmac.compare_digest(expected, s) for s in sent), "signature does not verify"
