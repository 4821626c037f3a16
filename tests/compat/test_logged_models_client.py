"""MLflow 3 logged models and autologging through the official client."""

from __future__ import annotations

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from sklearn.linear_model import LogisticRegression

pytestmark = pytest.mark.compat


def _data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 3))
    y = (x[:, 0] + 0.1 * rng.normal(size=60) > 0).astype(int)
    return x, y


def test_sklearn_autolog_records_params_metrics_and_model(
    mlflow_tracking: str, unique: str
) -> None:
    exp = mlflow.set_experiment(f"autolog-{unique}")
    x, y = _data()
    mlflow.sklearn.autolog(log_input_examples=False, log_model_signatures=False, silent=True)
    try:
        with mlflow.start_run() as run:
            LogisticRegression(C=0.5, max_iter=200).fit(x, y)
    finally:
        mlflow.sklearn.autolog(disable=True)
    got = MlflowClient().get_run(run.info.run_id)
    assert got.data.params["C"] == "0.5"
    assert got.data.params["max_iter"] == "200"
    assert 0.5 < got.data.metrics["training_accuracy_score"] <= 1.0
    assert got.data.tags["estimator_name"] == "LogisticRegression"
    models = mlflow.search_logged_models(experiment_ids=[exp.experiment_id], output_format="list")
    assert [m.source_run_id for m in models] == [run.info.run_id]
    assert models[0].status.to_proto() == 2 or str(models[0].status).endswith("READY")


def test_log_model_then_load_from_run_and_model_id(mlflow_tracking: str, unique: str) -> None:
    mlflow.set_experiment(f"logmodel-{unique}")
    x, y = _data()
    model = LogisticRegression(max_iter=200).fit(x, y)
    with mlflow.start_run() as run:
        mlflow.log_param("C", 1.0)
        mlflow.log_metric("acc", 0.9)
        info = mlflow.sklearn.log_model(model, name="model")
    assert info.model_id.startswith("m-")
    logged = mlflow.get_logged_model(info.model_id)
    assert logged.source_run_id == run.info.run_id
    assert logged.artifact_location.startswith("mlflow-artifacts:/")
    assert logged.params.get("C") == "1.0"
    assert "acc" in {m.key for m in logged.metrics}
    outputs = MlflowClient().get_run(run.info.run_id).outputs.model_outputs
    assert [o.model_id for o in outputs] == [info.model_id]
    for uri in (f"runs:/{run.info.run_id}/model", f"models:/{info.model_id}"):
        loaded = mlflow.sklearn.load_model(uri)
        assert (loaded.predict(x) == model.predict(x)).all()


def test_logged_model_tags_params_search_and_delete(mlflow_tracking: str, unique: str) -> None:
    exp = mlflow.set_experiment(f"lm-api-{unique}")
    client = MlflowClient()
    created = mlflow.initialize_logged_model(
        name="candidate", model_type="classifier", tags={"a": "1"}
    )
    client.set_logged_model_tags(created.model_id, {"b": "2"})
    client.log_model_params(created.model_id, {"alpha": "0.1"})
    client.delete_logged_model_tag(created.model_id, "a")
    mlflow.finalize_logged_model(created.model_id, "READY")
    other = mlflow.initialize_logged_model(name="other")
    got = mlflow.get_logged_model(created.model_id)
    assert got.tags.get("b") == "2" and "a" not in got.tags
    assert got.params == {"alpha": "0.1"}
    assert got.model_type == "classifier"
    found = mlflow.search_logged_models(
        experiment_ids=[exp.experiment_id], filter_string="name = 'candidate'", output_format="list"
    )
    assert [m.model_id for m in found] == [created.model_id]
    everything = mlflow.search_logged_models(
        experiment_ids=[exp.experiment_id], output_format="list"
    )
    assert {m.model_id for m in everything} == {created.model_id, other.model_id}
    client.delete_logged_model(other.model_id)
    with pytest.raises(MlflowException) as err:
        mlflow.get_logged_model(other.model_id)
    assert err.value.error_code == "RESOURCE_DOES_NOT_EXIST"
