"""The official MLflow client drives a live mlgate server: plain tracking code, unchanged."""

from __future__ import annotations

import math

import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag, ViewType
from mlflow.exceptions import MlflowException

pytestmark = pytest.mark.compat


def test_set_experiment_creates_then_reuses(mlflow_tracking: str, unique: str) -> None:
    exp = mlflow.set_experiment(f"exp-{unique}")
    again = mlflow.set_experiment(f"exp-{unique}")
    assert exp.experiment_id == again.experiment_id
    assert exp.lifecycle_stage == "active"
    assert exp.artifact_location == f"mlflow-artifacts:/{exp.experiment_id}"


def test_create_experiment_with_tags_and_search(mlflow_tracking: str, unique: str) -> None:
    client = MlflowClient()
    eid = client.create_experiment(f"tagged-{unique}", tags={"team": "fraud", "tier": "1"})
    client.create_experiment(f"other-{unique}", tags={"team": "growth"})
    got = client.get_experiment(eid)
    assert got.tags == {"team": "fraud", "tier": "1"}
    found = client.search_experiments(
        filter_string=f"name LIKE '%-{unique}' AND tags.team = 'fraud'"
    )
    assert [e.experiment_id for e in found] == [eid]
    by_name = client.search_experiments(
        filter_string=f"name LIKE '%{unique}'", order_by=["name ASC"]
    )
    assert [e.name for e in by_name] == [f"other-{unique}", f"tagged-{unique}"]


def test_duplicate_experiment_name_is_resource_already_exists(
    mlflow_tracking: str, unique: str
) -> None:
    client = MlflowClient()
    client.create_experiment(f"dup-{unique}")
    with pytest.raises(MlflowException) as err:
        client.create_experiment(f"dup-{unique}")
    assert err.value.error_code == "RESOURCE_ALREADY_EXISTS"


def test_default_experiment_zero_exists(mlflow_tracking: str) -> None:
    exp = MlflowClient().get_experiment("0")
    assert exp.name == "Default"
    assert exp.lifecycle_stage == "active"


def test_run_lifecycle_with_params_metrics_tags_and_notes(
    mlflow_tracking: str, unique: str
) -> None:
    mlflow.set_experiment(f"runs-{unique}")
    with mlflow.start_run(run_name="train", description="first try") as run:
        mlflow.log_param("alpha", 0.5)
        for step in range(5):
            mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
        mlflow.log_params({"model": "rf", "depth": 7})
        mlflow.log_metrics({"acc": 0.91, "f1": 0.8})
        mlflow.set_tag("team", "fraud")
        mlflow.set_tags({"stage": "dev", "owner": "ana"})
    got = MlflowClient().get_run(run.info.run_id)
    assert got.info.status == "FINISHED"
    assert got.info.run_name == "train"
    assert got.info.end_time is not None and got.info.end_time >= got.info.start_time
    assert got.data.params == {"alpha": "0.5", "model": "rf", "depth": "7"}
    assert got.data.metrics == {"loss": pytest.approx(0.2), "acc": 0.91, "f1": 0.8}
    assert got.data.tags["team"] == "fraud"
    assert got.data.tags["owner"] == "ana"
    assert got.data.tags["mlflow.note.content"] == "first try"
    assert got.info.artifact_uri.startswith("mlflow-artifacts:/")
    history = MlflowClient().get_metric_history(run.info.run_id, "loss")
    assert [m.step for m in history] == [0, 1, 2, 3, 4]
    assert [m.value for m in history] == pytest.approx([1.0, 0.5, 1 / 3, 0.25, 0.2])


def test_latest_metric_is_max_step_not_last_logged(mlflow_tracking: str, unique: str) -> None:
    mlflow.set_experiment(f"latest-{unique}")
    with mlflow.start_run() as run:
        mlflow.log_metric("m", 5.0, step=10)
        mlflow.log_metric("m", 1.0, step=2)
    assert MlflowClient().get_run(run.info.run_id).data.metrics["m"] == 5.0


def test_nan_and_infinity_round_trip(mlflow_tracking: str, unique: str) -> None:
    mlflow.set_experiment(f"nan-{unique}")
    with mlflow.start_run() as run:
        mlflow.log_metric("nan", float("nan"))
        mlflow.log_metric("inf", float("inf"))
        mlflow.log_metric("ninf", float("-inf"))
    metrics = MlflowClient().get_run(run.info.run_id).data.metrics
    assert math.isnan(metrics["nan"])
    assert metrics["inf"] == float("inf")
    assert metrics["ninf"] == float("-inf")


def test_nested_runs_carry_parent_tag(mlflow_tracking: str, unique: str) -> None:
    exp = mlflow.set_experiment(f"nested-{unique}")
    with mlflow.start_run() as parent, mlflow.start_run(nested=True) as child:
        mlflow.log_metric("x", 1)
    client = MlflowClient()
    assert client.get_run(child.info.run_id).data.tags["mlflow.parentRunId"] == parent.info.run_id
    children = client.search_runs(
        [exp.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert [r.info.run_id for r in children] == [child.info.run_id]


def test_changed_param_value_is_rejected(mlflow_tracking: str, unique: str) -> None:
    mlflow.set_experiment(f"param-{unique}")
    with mlflow.start_run():
        mlflow.log_param("lr", "0.1")
        mlflow.log_param("lr", "0.1")  # the same value again is fine
        with pytest.raises(MlflowException) as err:
            mlflow.log_param("lr", "0.2")
    assert err.value.error_code == "INVALID_PARAMETER_VALUE"
    assert "Changing param values is not allowed" in err.value.message


def test_log_batch_through_client(mlflow_tracking: str, unique: str) -> None:
    exp = mlflow.set_experiment(f"batch-{unique}")
    client = MlflowClient()
    run = client.create_run(exp.experiment_id)
    client.log_batch(
        run.info.run_id,
        metrics=[Metric("m", float(i), 1000 + i, i) for i in range(300)],
        params=[Param(f"p{i}", str(i)) for i in range(50)],
        tags=[RunTag("t", "v")],
    )
    got = client.get_run(run.info.run_id)
    assert got.data.metrics["m"] == 299.0
    assert len(got.data.params) == 50
    assert len(client.get_metric_history(run.info.run_id, "m")) == 300


def _seed(exp_id: str, client: MlflowClient) -> dict[str, str]:
    ids = {}
    for name, model, acc in [
        ("a", "rf", 0.9),
        ("b", "rf", 0.8),
        ("c", "xgb", 0.95),
        ("d", "rf", 0.86),
    ]:
        run = client.create_run(
            exp_id, run_name=name, tags={"team": "fraud" if name != "d" else "risk"}
        )
        client.log_param(run.info.run_id, "model", model)
        client.log_param(run.info.run_id, "max depth", "5")
        client.log_metric(run.info.run_id, "accuracy", acc)
        client.set_terminated(run.info.run_id)
        ids[name] = run.info.run_id
    return ids


def test_search_runs_filter_order_paging_in_like_backticks(
    mlflow_tracking: str, unique: str
) -> None:
    client = MlflowClient()
    exp_id = client.create_experiment(f"search-{unique}")
    ids = _seed(exp_id, client)

    runs = client.search_runs(
        [exp_id],
        filter_string="metrics.accuracy > 0.85 AND params.model = 'rf'",
        order_by=["metrics.accuracy DESC"],
    )
    assert [r.info.run_name for r in runs] == ["a", "d"]

    page1 = client.search_runs([exp_id], order_by=["metrics.accuracy ASC"], max_results=3)
    assert [r.info.run_name for r in page1] == ["b", "d", "a"]
    assert page1.token
    page2 = client.search_runs(
        [exp_id], order_by=["metrics.accuracy ASC"], max_results=3, page_token=page1.token
    )
    assert [r.info.run_name for r in page2] == ["c"]
    assert not page2.token

    in_runs = client.search_runs(
        [exp_id], filter_string=f"attributes.run_id IN ('{ids['a']}', '{ids['c']}')"
    )
    assert {r.info.run_name for r in in_runs} == {"a", "c"}

    backtick = client.search_runs(
        [exp_id], filter_string="params.`max depth` = '5' AND tags.team LIKE 'fr%'"
    )
    assert {r.info.run_name for r in backtick} == {"a", "b", "c"}

    ilike = client.search_runs([exp_id], filter_string="attributes.run_name ILIKE 'A'")
    assert [r.info.run_name for r in ilike] == ["a"]

    by_status = client.search_runs([exp_id], filter_string="attributes.status = 'FINISHED'")
    assert len(by_status) == 4


def test_bad_filter_is_invalid_parameter(mlflow_tracking: str, unique: str) -> None:
    client = MlflowClient()
    exp_id = client.create_experiment(f"badfilter-{unique}")
    for bad in ["metrics.acc > 'x'", "params.a = 1 OR params.b = 2", "foo.bar = 1", "metrics.a >"]:
        with pytest.raises(MlflowException) as err:
            client.search_runs([exp_id], filter_string=bad)
        assert err.value.error_code == "INVALID_PARAMETER_VALUE", bad


def test_search_runs_as_pandas(mlflow_tracking: str, unique: str) -> None:
    exp = mlflow.set_experiment(f"pandas-{unique}")
    for i in range(3):
        with mlflow.start_run():
            mlflow.log_param("i", i)
            mlflow.log_metric("score", i * 0.1)
    df = mlflow.search_runs(experiment_ids=[exp.experiment_id], order_by=["metrics.score DESC"])
    assert len(df) == 3
    assert list(df["params.i"]) == ["2", "1", "0"]
    assert list(df["metrics.score"]) == pytest.approx([0.2, 0.1, 0.0])


def test_delete_restore_and_view_types(mlflow_tracking: str, unique: str) -> None:
    client = MlflowClient()
    exp_id = client.create_experiment(f"views-{unique}")
    keep = client.create_run(exp_id).info.run_id
    gone = client.create_run(exp_id).info.run_id
    client.delete_run(gone)
    active = {r.info.run_id for r in client.search_runs([exp_id])}
    deleted = {
        r.info.run_id for r in client.search_runs([exp_id], run_view_type=ViewType.DELETED_ONLY)
    }
    both = {r.info.run_id for r in client.search_runs([exp_id], run_view_type=ViewType.ALL)}
    assert (active, deleted, both) == ({keep}, {gone}, {keep, gone})
    with pytest.raises(MlflowException) as err:
        client.log_metric(gone, "x", 1.0)
    assert err.value.error_code == "INVALID_PARAMETER_VALUE"
    client.restore_run(gone)
    assert client.get_run(gone).info.lifecycle_stage == "active"
    client.log_metric(gone, "x", 1.0)

    client.delete_experiment(exp_id)
    assert client.get_experiment(exp_id).lifecycle_stage == "deleted"
    names = [e.name for e in client.search_experiments(view_type=ViewType.DELETED_ONLY)]
    assert f"views-{unique}" in names
    client.restore_experiment(exp_id)
    assert client.get_experiment(exp_id).lifecycle_stage == "active"


def test_unknown_run_and_experiment_are_not_found(mlflow_tracking: str) -> None:
    client = MlflowClient()
    with pytest.raises(MlflowException) as err:
        client.get_run("0" * 32)
    assert err.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    with pytest.raises(MlflowException) as err:
        client.get_experiment("987654321")
    assert err.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    assert client.get_experiment_by_name("no-such-experiment-xyz") is None


def test_delete_tag_and_rename_run(mlflow_tracking: str, unique: str) -> None:
    client = MlflowClient()
    exp_id = client.create_experiment(f"tags-{unique}")
    run_id = client.create_run(exp_id, run_name="before").info.run_id
    client.set_tag(run_id, "k", "v")
    client.delete_tag(run_id, "k")
    client.update_run(run_id, name="after")
    got = client.get_run(run_id)
    assert "k" not in got.data.tags
    assert got.info.run_name == "after"
    assert got.data.tags["mlflow.runName"] == "after"


def test_log_inputs_dataset(mlflow_tracking: str, unique: str) -> None:
    import pandas as pd

    mlflow.set_experiment(f"inputs-{unique}")
    df = pd.DataFrame({"x": [1, 2, 3], "y": [0, 1, 0]})
    dataset = mlflow.data.from_pandas(df, name="train-set")
    with mlflow.start_run() as run:
        mlflow.log_input(dataset, context="training")
    got = MlflowClient().get_run(run.info.run_id)
    assert [d.dataset.name for d in got.inputs.dataset_inputs] == ["train-set"]
    tags = {t.key: t.value for t in got.inputs.dataset_inputs[0].tags}
    assert tags["mlflow.data.context"] == "training"
    found = MlflowClient().search_runs(
        [run.info.experiment_id], filter_string="datasets.context = 'training'"
    )
    assert [r.info.run_id for r in found] == [run.info.run_id]
