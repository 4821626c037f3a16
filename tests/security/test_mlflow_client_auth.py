"""The official MLflow client authenticates exactly as documented: username/password
(MLFLOW_TRACKING_USERNAME/PASSWORD) or a token (MLFLOW_TRACKING_TOKEN); Basic wins when both
are set. Tracking, artifacts and the registry all work, and every write carries the user."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from tests.security.auth_world import MLGATE, PASSWORD, World

pytestmark = pytest.mark.compat


@pytest.fixture
def tracking(world: World, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    for var in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    mlflow.set_tracking_uri(world.server.url)
    mlflow.set_registry_uri(world.server.url)
    yield world
    while mlflow.active_run() is not None:
        mlflow.end_run()


def _train_log_and_register(w: World, tmp_path: Path, label: str) -> tuple[str, str, str]:
    experiment = w.experiment_name_for(label)
    mlflow.set_experiment(experiment)
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "MLmodel").write_text("flavors: {}\n")
    (tmp_path / "notes.txt").write_text("hello")
    with mlflow.start_run() as run:
        mlflow.log_param("alpha", 0.5)
        mlflow.log_metric("loss", 0.25, step=3)
        mlflow.log_artifact(str(tmp_path / "notes.txt"))
        mlflow.log_artifacts(str(tmp_path / "model"), "model")
    client = MlflowClient()
    name = w.model_name_for(label)
    client.create_registered_model(name)
    mv = client.create_model_version(name, f"runs:/{run.info.run_id}/model", run.info.run_id)
    return run.info.run_id, name, mv.version


def test_client_with_username_and_password(
    tracking: World, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    w = tracking
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", f"editor-{w.u}")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)
    run_id, name, version = _train_log_and_register(w, tmp_path, "basic")
    client = MlflowClient()
    run = client.get_run(run_id)
    assert run.info.user_id == f"editor-{w.u}"  # not the local OS user the client sends
    assert run.data.metrics == {"loss": 0.25}
    assert [f.path for f in client.list_artifacts(run_id)] == ["model", "notes.txt"]
    downloaded = client.download_artifacts(run_id, "notes.txt", str(tmp_path / "dl"))
    assert Path(downloaded).read_text() == "hello"
    mv = client.get_model_version(name, version)
    assert mv.user_id == f"editor-{w.u}" and mv.status == "READY"
    # An editor may not promote: the client surfaces the server's PERMISSION_DENIED.
    with pytest.raises(MlflowException) as err:
        client.transition_model_version_stage(name, version, "Staging")
    assert err.value.error_code == "PERMISSION_DENIED"


def test_client_with_a_token(
    tracking: World, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    w = tracking
    bot = w.fresh("ci-bot")
    w.create_user(bot, password=None)  # a token-only service account
    w.grant(bot, "experiment", f"team-{w.u}-*", "editor")
    w.grant(bot, "registered_model", f"model-{w.u}-*", "approver", ["Staging", "@candidate"])
    secret = w.admin_json("POST", f"{MLGATE}/tokens/create", json={"name": "ci", "username": bot})[
        "secret"
    ]
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", secret)
    run_id, name, version = _train_log_and_register(w, tmp_path, "token")
    client = MlflowClient()
    assert client.get_run(run_id).info.user_id == bot
    client.transition_model_version_stage(name, version, "Staging")
    client.set_registered_model_alias(name, "candidate", version)
    with pytest.raises(MlflowException) as err:
        client.set_registered_model_alias(name, "champion", version)
    assert err.value.error_code == "PERMISSION_DENIED"
    with pytest.raises(MlflowException) as err:
        client.transition_model_version_stage(name, version, "Production")
    assert err.value.error_code == "PERMISSION_DENIED"
    assert client.get_model_version_by_alias(name, "candidate").version == version


def test_basic_wins_when_both_are_set(
    tracking: World, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    w = tracking
    token = w.call("reader", "POST", f"{MLGATE}/tokens/create", json={"name": "both"}).json()
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", token["secret"])
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", f"editor-{w.u}")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)
    mlflow.set_experiment(w.experiment_name_for("both"))  # the reader could not create it
    with mlflow.start_run() as run:
        mlflow.log_metric("m", 1.0)
    assert MlflowClient().get_run(run.info.run_id).info.user_id == f"editor-{w.u}"


def test_client_without_credentials_gets_unauthenticated(tracking: World) -> None:
    with pytest.raises(MlflowException) as err:
        mlflow.set_experiment(tracking.experiment_name)
    assert err.value.error_code == "UNAUTHENTICATED"
