"""The official MLflow client drives the model registry of a live mlgate server, unchanged."""

from __future__ import annotations

import httpx
import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from registry.artifacts.paths import FROZEN_AREA

pytestmark = pytest.mark.compat


def _run_id(experiment: str) -> str:
    mlflow.set_experiment(experiment)
    with mlflow.start_run() as run:
        mlflow.log_param("alpha", 0.5)
    return run.info.run_id


def _version_from_run(client: MlflowClient, name: str, experiment: str) -> tuple[str, str]:
    run_id = _run_id(experiment)
    mv = client.create_model_version(name, source=f"runs:/{run_id}/model", run_id=run_id)
    return mv.version, run_id


def _error_code(call: object, *args: object, **kwargs: object) -> str:
    with pytest.raises(MlflowException) as err:
        call(*args, **kwargs)  # type: ignore[operator]
    return str(err.value.error_code)


# --- registered models -----------------------------------------------------------------------


def test_registered_model_create_get_update_rename_delete(
    mlflow_tracking: str, unique: str
) -> None:
    client = MlflowClient()
    created = client.create_registered_model(
        f"rm-{unique}", tags={"team": "fraud"}, description="first"
    )
    assert created.name == f"rm-{unique}"
    assert created.tags == {"team": "fraud"}
    got = client.get_registered_model(f"rm-{unique}")
    assert got.description == "first"
    assert got.creation_timestamp > 0

    client.update_registered_model(f"rm-{unique}", description="second")
    assert client.get_registered_model(f"rm-{unique}").description == "second"

    client.rename_registered_model(f"rm-{unique}", f"rm2-{unique}")
    assert client.get_registered_model(f"rm2-{unique}").description == "second"
    assert _error_code(client.get_registered_model, f"rm-{unique}") == "RESOURCE_DOES_NOT_EXIST"

    client.set_registered_model_tag(f"rm2-{unique}", "tier", "1")
    client.delete_registered_model_tag(f"rm2-{unique}", "team")
    assert client.get_registered_model(f"rm2-{unique}").tags == {"tier": "1"}

    client.delete_registered_model(f"rm2-{unique}")
    assert _error_code(client.get_registered_model, f"rm2-{unique}") == "RESOURCE_DOES_NOT_EXIST"


def test_duplicate_and_clashing_names_are_resource_already_exists(
    mlflow_tracking: str, unique: str
) -> None:
    client = MlflowClient()
    client.create_registered_model(f"dup-{unique}")
    client.create_registered_model(f"other-{unique}")
    assert _error_code(client.create_registered_model, f"dup-{unique}") == "RESOURCE_ALREADY_EXISTS"
    code = _error_code(client.rename_registered_model, f"other-{unique}", f"dup-{unique}")
    assert code == "RESOURCE_ALREADY_EXISTS"


def test_invalid_model_names_are_invalid_parameter_value(mlflow_tracking: str, unique: str) -> None:
    client = MlflowClient()
    for bad in (f"a/{unique}", f"a:{unique}", f"..{unique}", "   "):
        assert _error_code(client.create_registered_model, bad) == "INVALID_PARAMETER_VALUE"


def test_search_registered_models_filters_orders_pages_and_hides_prompts(
    mlflow_tracking: str, unique: str
) -> None:
    client = MlflowClient()
    for suffix, team in (("a", "fraud"), ("b", "growth"), ("c", "fraud")):
        client.create_registered_model(f"srch-{unique}-{suffix}", tags={"team": team})
    # A prompt (MLflow marks prompts with this tag) must not show up in model searches. The
    # client refuses to create one through create_registered_model, so go over the wire.
    httpx.post(
        f"{mlflow_tracking}/api/2.0/mlflow/registered-models/create",
        json={
            "name": f"srch-{unique}-prompt",
            "tags": [{"key": "mlflow.prompt.is_prompt", "value": "true"}],
        },
    ).raise_for_status()

    # The client appends "AND tag.`mlflow.prompt.is_prompt` != 'true'" to every filter.
    found = client.search_registered_models(filter_string=f"name LIKE 'srch-{unique}-%'")
    assert [m.name for m in found] == [f"srch-{unique}-{s}" for s in "abc"]

    fraud = client.search_registered_models(
        filter_string=f"name LIKE 'srch-{unique}-%' AND tags.team = 'fraud'",
        order_by=["name DESC"],
    )
    assert [m.name for m in fraud] == [f"srch-{unique}-c", f"srch-{unique}-a"]

    in_list = client.search_registered_models(
        filter_string=f"name IN ('srch-{unique}-a', 'srch-{unique}-b')"
    )
    assert {m.name for m in in_list} == {f"srch-{unique}-a", f"srch-{unique}-b"}

    page = client.search_registered_models(
        filter_string=f"name LIKE 'srch-{unique}-%'", max_results=2
    )
    assert len(page) == 2 and page.token
    rest = client.search_registered_models(
        filter_string=f"name LIKE 'srch-{unique}-%'", max_results=2, page_token=page.token
    )
    assert [m.name for m in rest] == [f"srch-{unique}-c"]
    assert not rest.token

    # With no user filter, the prompt clause alone is the filter and still finds models.
    everything = client.search_registered_models(max_results=1000)
    names = {m.name for m in everything}
    assert f"srch-{unique}-a" in names and f"srch-{unique}-prompt" not in names


def test_search_registered_models_bad_filter_is_invalid_parameter(mlflow_tracking: str) -> None:
    client = MlflowClient()
    for bad in ("name = 'a' OR name = 'b'", "run_id = 'x'", "name ~ 'x'"):
        code = _error_code(client.search_registered_models, filter_string=bad)
        assert code == "INVALID_PARAMETER_VALUE", bad
    assert (
        _error_code(client.search_registered_models, order_by=["name", "name DESC"])
        == "INVALID_PARAMETER_VALUE"
    )
    assert _error_code(client.search_registered_models, max_results=1001) == (
        "INVALID_PARAMETER_VALUE"
    )


# --- model versions --------------------------------------------------------------------------


def test_create_model_version_from_run_source(mlflow_tracking: str, unique: str) -> None:
    client = MlflowClient()
    client.create_registered_model(f"mv-{unique}")
    run_id = _run_id(f"mv-exp-{unique}")
    mv = client.create_model_version(
        f"mv-{unique}",
        source=f"runs:/{run_id}/model",
        run_id=run_id,
        tags={"k": "v"},
        description="from a run",
    )
    assert mv.version == "1"
    assert mv.status == "READY"
    assert mv.current_stage == "None"
    assert mv.run_id == run_id
    assert mv.tags == {"k": "v"}
    uri = client.get_model_version_download_uri(f"mv-{unique}", "1")
    # The run's model/ folder is empty here: the version's (frozen) copy holds no files.
    assert uri == f"mlflow-artifacts:/{FROZEN_AREA}/empty"
    assert mv.source == f"runs:/{run_id}/model"
    second = client.create_model_version(f"mv-{unique}", source=f"runs:/{run_id}/model")
    assert second.version == "2"


def test_update_and_delete_model_version(mlflow_tracking: str, unique: str) -> None:
    client = MlflowClient()
    client.create_registered_model(f"upd-{unique}")
    version, _ = _version_from_run(client, f"upd-{unique}", f"upd-exp-{unique}")
    client.update_model_version(f"upd-{unique}", version, description="better")
    assert client.get_model_version(f"upd-{unique}", version).description == "better"
    client.set_model_version_tag(f"upd-{unique}", version, "validated", "yes")
    assert client.get_model_version(f"upd-{unique}", version).tags == {"validated": "yes"}
    client.delete_model_version_tag(f"upd-{unique}", version, "validated")
    assert client.get_model_version(f"upd-{unique}", version).tags == {}
    client.delete_model_version(f"upd-{unique}", version)
    code = _error_code(client.get_model_version, f"upd-{unique}", version)
    assert code == "RESOURCE_DOES_NOT_EXIST"
    # Numbers are never reused after a delete.
    again, _ = _version_from_run(client, f"upd-{unique}", f"upd-exp-{unique}")
    assert again == "2"


def test_search_model_versions_with_filters(mlflow_tracking: str, unique: str) -> None:
    client = MlflowClient()
    name = f"smv-{unique}"
    client.create_registered_model(name)
    runs = []
    for i in range(3):
        version, run_id = _version_from_run(client, name, f"smv-exp-{unique}")
        client.set_model_version_tag(name, version, "parity", "even" if i % 2 else "odd")
        runs.append(run_id)

    all_versions = client.search_model_versions(f"name = '{name}'")
    assert [mv.version for mv in all_versions] == ["3", "2", "1"]  # default: version DESC

    by_run = client.search_model_versions(f"run_id IN ('{runs[0]}', '{runs[2]}')")
    assert sorted(mv.version for mv in by_run) == ["1", "3"]

    numeric = client.search_model_versions(
        f"name = '{name}' AND version_number >= 2", order_by=["version_number ASC"]
    )
    assert [mv.version for mv in numeric] == ["2", "3"]

    tagged = client.search_model_versions(f"name = '{name}' AND tags.parity = 'odd'")
    assert sorted(mv.version for mv in tagged) == ["1", "3"]

    source = client.search_model_versions(f"source_path = 'runs:/{runs[1]}/model'")
    assert [mv.version for mv in source] == ["2"]

    code = _error_code(client.search_model_versions, f"name = '{name}' OR version_number = 1")
    assert code == "INVALID_PARAMETER_VALUE"
    assert _error_code(client.search_model_versions, "model_id = 'x'") == "INVALID_PARAMETER_VALUE"


# --- stages ----------------------------------------------------------------------------------


def test_transition_with_archive_and_get_latest_versions(mlflow_tracking: str, unique: str) -> None:
    client = MlflowClient()
    name = f"stg-{unique}"
    client.create_registered_model(name)
    for _ in range(3):
        _version_from_run(client, name, f"stg-exp-{unique}")

    client.transition_model_version_stage(name, "1", "Production")
    client.transition_model_version_stage(name, "2", "staging")
    moved = client.transition_model_version_stage(
        name, "3", "production", archive_existing_versions=True
    )
    assert moved.current_stage == "Production"
    assert client.get_model_version(name, "1").current_stage == "Archived"
    assert client.get_model_version(name, "2").current_stage == "Staging"

    latest = {mv.current_stage: mv.version for mv in client.get_latest_versions(name)}
    assert latest == {"Production": "3", "Staging": "2", "Archived": "1"}
    prod = client.get_latest_versions(name, stages=["PRODUCTION"])
    assert [mv.version for mv in prod] == ["3"]

    model = client.get_registered_model(name)
    assert {mv.version for mv in model.latest_versions} == {"1", "2", "3"}


def test_stage_errors(mlflow_tracking: str, unique: str) -> None:
    client = MlflowClient()
    name = f"stgerr-{unique}"
    client.create_registered_model(name)
    _version_from_run(client, name, f"stgerr-exp-{unique}")
    code = _error_code(client.transition_model_version_stage, name, "1", "Shipping")
    assert code == "INVALID_PARAMETER_VALUE"
    code = _error_code(
        client.transition_model_version_stage, name, "1", "Archived", archive_existing_versions=True
    )
    assert code == "INVALID_PARAMETER_VALUE"
    code = _error_code(client.transition_model_version_stage, name, "9", "Production")
    assert code == "RESOURCE_DOES_NOT_EXIST"
    assert _error_code(client.get_latest_versions, name, ["Nope"]) == "INVALID_PARAMETER_VALUE"


# --- aliases ---------------------------------------------------------------------------------


def test_aliases_set_get_move_delete(mlflow_tracking: str, unique: str) -> None:
    client = MlflowClient()
    name = f"al-{unique}"
    client.create_registered_model(name)
    for _ in range(2):
        _version_from_run(client, name, f"al-exp-{unique}")

    client.set_registered_model_alias(name, "champion", "1")
    mv = client.get_model_version_by_alias(name, "champion")
    assert mv.version == "1" and mv.aliases == ["champion"]
    assert client.get_registered_model(name).aliases == {"champion": "1"}

    client.set_registered_model_alias(name, "champion", "2")
    assert client.get_model_version_by_alias(name, "champion").version == "2"
    assert client.get_model_version(name, "1").aliases == []
    assert client.get_model_version_by_alias(name, "latest").version == "2"

    client.delete_registered_model_alias(name, "champion")
    assert _error_code(client.get_model_version_by_alias, name, "champion") == (
        "INVALID_PARAMETER_VALUE"
    )
    for reserved in ("latest", "v3", "bad alias"):
        code = _error_code(client.set_registered_model_alias, name, reserved, "1")
        assert code == "INVALID_PARAMETER_VALUE", reserved
    code = _error_code(client.set_registered_model_alias, name, "champion", "7")
    assert code == "RESOURCE_DOES_NOT_EXIST"


def test_unknown_model_and_version_errors(mlflow_tracking: str, unique: str) -> None:
    client = MlflowClient()
    missing = f"missing-{unique}"
    assert _error_code(client.get_registered_model, missing) == "RESOURCE_DOES_NOT_EXIST"
    assert _error_code(client.get_model_version, missing, "1") == "RESOURCE_DOES_NOT_EXIST"
    code = _error_code(client.create_model_version, missing, source="runs:/0/model")
    assert code == "RESOURCE_DOES_NOT_EXIST"
    client.create_registered_model(f"empty-{unique}")
    code = _error_code(client.get_model_version_download_uri, f"empty-{unique}", "1")
    assert code == "RESOURCE_DOES_NOT_EXIST"
    code = _error_code(client.get_model_version, f"empty-{unique}", "x")
    assert code == "INVALID_PARAMETER_VALUE"


# --- wire details and pointer history ----------------------------------------------------------


def test_versions_are_json_strings_and_status_is_ready(live_server: object, unique: str) -> None:
    base = live_server.api  # type: ignore[attr-defined]
    httpx.post(base("registered-models/create"), json={"name": f"wire-{unique}"}).raise_for_status()
    exp = httpx.post(base("experiments/create"), json={"name": f"wire-{unique}"}).json()
    run = httpx.post(base("runs/create"), json={"experiment_id": exp["experiment_id"]}).json()
    run_id = run["run"]["info"]["run_id"]
    created = httpx.post(
        base("model-versions/create"),
        json={"name": f"wire-{unique}", "source": f"runs:/{run_id}/model", "run_id": run_id},
    ).json()["model_version"]
    assert created["version"] == "1"
    assert created["status"] == "READY"
    httpx.post(
        base("registered-models/alias"),
        json={"name": f"wire-{unique}", "alias": "champion", "version": "1"},
    ).raise_for_status()
    model = httpx.get(base("registered-models/get"), params={"name": f"wire-{unique}"}).json()
    assert model["registered_model"]["aliases"] == [{"alias": "champion", "version": "1"}]
    # get-latest-versions also answers GET; DELETE takes a JSON body.
    latest = httpx.get(
        base("registered-models/get-latest-versions"), params={"name": f"wire-{unique}"}
    )
    assert latest.json()["model_versions"][0]["version"] == "1"
    gone = httpx.request(
        "DELETE", base("registered-models/delete"), json={"name": f"wire-{unique}"}
    )
    assert gone.status_code == 200 and gone.json() == {}


def test_pointer_history_and_pointer_at(live_server: object, unique: str) -> None:
    server = live_server
    base = server.api  # type: ignore[attr-defined]
    mlgate = f"{server.url}/api/2.0/mlgate"  # type: ignore[attr-defined]
    name = f"hist-{unique}"
    httpx.post(base("registered-models/create"), json={"name": name}).raise_for_status()
    exp = httpx.post(base("experiments/create"), json={"name": name}).json()
    for _ in range(2):
        run = httpx.post(base("runs/create"), json={"experiment_id": exp["experiment_id"]}).json()
        run_id = run["run"]["info"]["run_id"]
        httpx.post(
            base("model-versions/create"),
            json={"name": name, "source": f"runs:/{run_id}/model", "run_id": run_id},
        ).raise_for_status()

    def transition(version: str, comment: str) -> int:
        r = httpx.post(
            base("model-versions/transition-stage"),
            json={
                "name": name,
                "version": version,
                "stage": "Production",
                "archive_existing_versions": True,
                "comment": comment,
            },
        )
        r.raise_for_status()
        return int(r.json()["model_version"]["last_updated_timestamp"])

    t1 = transition("1", "first release")
    t2 = transition("2", "better recall")
    assert t2 >= t1

    events = httpx.get(
        f"{mlgate}/registered-models/history", params={"name": name, "pointer": "Production"}
    ).json()["events"]
    assert [(e.get("from_version"), e["to_version"]) for e in events] == [
        ("1", "2"),
        (None, "1"),
    ]
    assert events[0]["comment"] == "better recall"
    assert events[0]["actor"] == "anonymous"

    at_t1 = httpx.get(
        f"{mlgate}/registered-models/pointer-at",
        params={"name": name, "pointer": "Production", "timestamp": t1},
    ).json()
    # Two moves in one millisecond: the later one is what held the pointer at that instant.
    assert at_t1["version"] == ("1" if t2 > t1 else "2")
    before = httpx.get(
        f"{mlgate}/registered-models/pointer-at",
        params={"name": name, "pointer": "Production", "timestamp": t1 - 1},
    ).json()
    assert "version" not in before
    bad = httpx.get(
        f"{mlgate}/registered-models/pointer-at", params={"name": name, "pointer": "@bad alias"}
    )
    assert bad.status_code == 400 and bad.json()["error_code"] == "INVALID_PARAMETER_VALUE"


# --- end to end: log, register, promote and load through the artifact proxy -------------------


def _fitted_model() -> tuple[object, object]:
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    x = np.array([[0.0], [1.0], [2.0], [3.0]])
    return LogisticRegression().fit(x, np.array([0, 0, 1, 1])), x


@pytest.mark.slow
def test_log_register_promote_and_load_by_every_uri(mlflow_tracking: str, unique: str) -> None:
    model, x = _fitted_model()
    name = f"iris-{unique}"
    mlflow.set_experiment(f"e2e-{unique}")
    with mlflow.start_run() as run:
        # cloudpickle: the default skops format needs a package mlgate's test env does not ship.
        info = mlflow.sklearn.log_model(
            model, name="model", registered_model_name=name, serialization_format="cloudpickle"
        )
    assert str(info.registered_model_version) == "1"
    client = MlflowClient()
    mv = client.get_model_version(name, "1")
    assert mv.status == "READY"
    assert mv.source == f"models:/{info.model_id}"
    assert mv.run_id == run.info.run_id
    uri = client.get_model_version_download_uri(name, "1")
    # Served from the registry's frozen copy of the logged model's files.
    assert uri.startswith(f"mlflow-artifacts:/{FROZEN_AREA}/sha256/")

    client.transition_model_version_stage(name, "1", "Production", archive_existing_versions=True)
    client.set_registered_model_alias(name, "champion", "1")
    for model_uri in (
        f"models:/{name}/Production",
        f"models:/{name}/production",
        f"models:/{name}/latest",
        f"models:/{name}/1",
        f"models:/{name}@champion",
        f"runs:/{run.info.run_id}/model",
    ):
        loaded = mlflow.pyfunc.load_model(model_uri)
        assert list(loaded.predict(x)) == [0, 0, 1, 1], model_uri
    assert list(mlflow.sklearn.load_model(f"models:/{name}/Production").predict(x)) == [0, 0, 1, 1]

    # register_model from the run finds the logged model (MLflow 3 layout) and reuses it.
    again = mlflow.register_model(f"runs:/{run.info.run_id}/model", name)
    assert again.version == "2"
    assert client.get_model_version_download_uri(name, "2") == uri
    assert list(mlflow.pyfunc.load_model(f"models:/{name}/2").predict(x)) == [0, 0, 1, 1]

    client.delete_model_version(name, "2")
    client.delete_registered_model(name)
    assert _error_code(client.get_registered_model, name) == "RESOURCE_DOES_NOT_EXIST"


@pytest.mark.slow
def test_register_model_from_run_artifacts_uses_mlflow_artifacts_source(
    mlflow_tracking: str, unique: str, tmp_path: object
) -> None:
    model, x = _fitted_model()
    local = f"{tmp_path}/model"
    mlflow.sklearn.save_model(model, local, serialization_format="cloudpickle")
    mlflow.set_experiment(f"e2e-art-{unique}")
    with mlflow.start_run() as run:
        mlflow.log_artifacts(local, "model")  # the MLflow 2 layout: the model under the run
    mv = mlflow.register_model(f"runs:/{run.info.run_id}/model", f"art-{unique}")
    assert mv.source == f"{run.info.artifact_uri}/model"
    assert mv.source.startswith("mlflow-artifacts:/")
    loaded = mlflow.pyfunc.load_model(f"models:/art-{unique}/1")
    assert list(loaded.predict(x)) == [0, 0, 1, 1]
