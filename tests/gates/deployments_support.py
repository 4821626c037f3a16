"""Helpers of the deployment tests: settings for fast drift, models with files, API calls."""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path
from typing import Any

import httpx
from mlflow import MlflowClient

from tests.conftest import LiveServer

MLGATE = "/api/2.0/mlgate"
DRIFT_AFTER = 1.5
WATCHERS = 3
SETTINGS = {
    "MLGATE_DRIFT_AFTER_SECONDS": str(DRIFT_AFTER),
    "MLGATE_DRIFT_SWEEP_INTERVAL": "0.1",
    "MLGATE_WATCH_MAX_WATCHERS": str(WATCHERS),
}


def new_model(client: MlflowClient) -> str:
    name = f"follow-{uuid.uuid4().hex[:10]}"
    client.create_registered_model(name)
    return name


def new_version(client: MlflowClient, name: str, text: str) -> str:
    run = client.create_run("0")
    folder = tempfile.mkdtemp()
    Path(folder, "model.txt").write_text(text)
    Path(folder, "sub").mkdir()
    Path(folder, "sub", "weights.bin").write_bytes(os.urandom(2048))
    client.log_artifacts(run.info.run_id, folder, "model")
    source = f"runs:/{run.info.run_id}/model"
    return str(client.create_model_version(name, source, run_id=run.info.run_id).version)


def resolve(server: LiveServer, uri: str) -> dict[str, Any]:
    r = httpx.get(f"{server.url}{MLGATE}/models/resolve", params={"uri": uri})
    assert r.status_code == 200, r.text
    found: dict[str, Any] = r.json()
    return found


def deployments(server: LiveServer, name: str, **params: Any) -> list[dict[str, Any]]:
    r = httpx.get(f"{server.url}{MLGATE}/deployments", params={"name": name, **params})
    assert r.status_code == 200, r.text
    found: list[dict[str, Any]] = r.json()["deployments"]
    return found
