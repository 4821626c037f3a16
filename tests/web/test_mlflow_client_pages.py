"""What a data scientist logs with the official MLflow client is what the UI shows.

The training side is exactly MLflow's documented API (log_param, log_metric, log_artifact,
sklearn.log_model with registered_model_name, transition_model_version_stage, aliases); the
reading side is the pages a person opens, fetched from the same live server.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.conftest import LiveServer
from tests.web.support import Browser

pytestmark = pytest.mark.compat


def test_a_run_logged_and_registered_with_the_mlflow_client_shows_up_in_the_ui(
    mlflow_tracking: str, live_server: LiveServer, unique: str, tmp_path: Path
) -> None:
    import mlflow
    from mlflow import MlflowClient
    from sklearn.linear_model import LogisticRegression

    experiment = f"ui-client-{unique}"
    model_name = f"ui-fraud-{unique}"
    mlflow.set_experiment(experiment)
    notes = tmp_path / "notes.txt"
    notes.write_text("trained on march data\n")
    with mlflow.start_run(run_name="client-run") as run:
        mlflow.log_param("C", 0.5)
        for step in range(30):
            mlflow.log_metric("auc", 0.5 + step / 100, step=step)
        mlflow.log_artifact(str(notes))
        mlflow.sklearn.log_model(
            LogisticRegression(C=0.5).fit([[0.0], [1.0]], [0, 1]),
            name="model",
            registered_model_name=model_name,
        )
    run_id = run.info.run_id
    client = MlflowClient()
    client.transition_model_version_stage(model_name, "1", "Production")
    client.set_registered_model_alias(model_name, "champion", "1")
    experiment_id = mlflow.get_experiment_by_name(experiment).experiment_id

    ui = Browser(live_server.url)
    runs = ui.get(f"/experiments/{experiment_id}")
    assert runs.status_code == 200
    assert run_id in runs.text and "client-run" in runs.text

    run_page = ui.get(f"/runs/{run_id}")
    assert run_page.status_code == 200
    assert "0.79" in run_page.text  # the last logged auc
    assert re.search(r">\s*C\s*<", run_page.text) and "0.5" in run_page.text

    listing = ui.get(f"/runs/{run_id}/artifacts")
    assert listing.status_code == 200 and "notes.txt" in listing.text
    preview = ui.get(f"/runs/{run_id}/artifacts", params={"path": "notes.txt"})
    assert "trained on march data" in preview.text
    raw = ui.get(f"/runs/{run_id}/artifacts/raw", params={"path": "notes.txt", "download": "1"})
    assert raw.content == b"trained on march data\n"
    assert raw.headers["content-disposition"].startswith("attachment")

    model_page = ui.get(f"/models/{quote(model_name, safe='')}")
    assert model_page.status_code == 200
    versions = re.search(r'data-testid="versions-table".*?</table>', model_page.text, re.S)
    assert versions and "Production" in versions.group(0) and "@champion" in versions.group(0)
    timeline = re.search(r'data-testid="timeline".*?</ul>', model_page.text, re.S)
    assert timeline and "Production" in timeline.group(0)

    version_page = ui.get(f"/models/{quote(model_name, safe='')}/versions/1")
    assert version_page.status_code == 200
    assert run_id in version_page.text
    assert "MLmodel" in version_page.text  # the registered files, with their digests
    assert re.search(r"[0-9a-f]{64}", version_page.text)
    ui.close()
