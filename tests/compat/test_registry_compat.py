"""Registry behaviour the official client relies on, matched with `mlflow server` 3.17.

copy_model_version, the empty defaults of a version's JSON, and the ``mlflow.modelVersions``
tag MLflow keeps on a logged model. Each was compared with a live reference server.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import httpx
import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from registry.artifacts.paths import FROZEN_AREA
from tests.conftest import LiveServer

pytestmark = pytest.mark.compat


def _logged_model_run(experiment: str, tmp_path: Path) -> tuple[str, object, object]:
    """A run that logged a small sklearn model (MLflow 3 layout); returns run id, model, x."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    x = np.array([[0.0], [1.0], [2.0], [3.0]])
    model = LogisticRegression().fit(x, np.array([0, 0, 1, 1]))
    mlflow.set_experiment(experiment)
    with mlflow.start_run() as run:
        mlflow.sklearn.log_model(model, name="model", serialization_format="cloudpickle")
    return run.info.run_id, model, x


@pytest.mark.slow
def test_copy_model_version_shares_the_frozen_copy_and_carries_lineage(
    mlflow_tracking: str, live_server: LiveServer, unique: str, tmp_path: Path
) -> None:
    client = MlflowClient()
    run_id, _, x = _logged_model_run(f"copy-{unique}", tmp_path)
    dev, prod = f"dev-fraud-{unique}", f"prod-fraud-{unique}"
    src = mlflow.register_model(f"runs:/{run_id}/model", dev)
    client.set_model_version_tag(dev, src.version, "team", "risk")
    client.update_model_version(dev, src.version, "first candidate")
    client.transition_model_version_stage(dev, src.version, "Staging")
    client.set_registered_model_alias(dev, "candidate", src.version)

    copied = client.copy_model_version(f"models:/{dev}/{src.version}", prod)
    assert (copied.name, copied.version) == (prod, "1")
    assert copied.source == f"models:/{dev}/1"  # as MLflow stores it
    assert copied.run_id == run_id
    assert copied.current_stage == "None"  # a copy lands with no stage
    assert copied.tags == {"team": "risk"}
    assert copied.description == "first candidate"
    src_uri = client.get_model_version_download_uri(dev, src.version)
    assert src_uri.startswith(f"mlflow-artifacts:/{FROZEN_AREA}/sha256/")
    assert client.get_model_version_download_uri(prod, "1") == src_uri

    # Every models:/ form MLflow's server accepts resolves to the same version.
    for form in (f"models:/{dev}@candidate", f"models:/{dev}/Staging", f"models:/{dev}/latest"):
        again = client.copy_model_version(form, prod)
        assert again.source == f"models:/{dev}/1", form
        assert client.get_model_version_download_uri(prod, again.version) == src_uri

    # The copy's bytes are the frozen ones: deleting the run's files and the source version
    # changes nothing for it.
    experiment_id = client.get_run(run_id).info.experiment_id
    shutil.rmtree(live_server.artifacts / experiment_id)
    client.delete_model_version(dev, src.version)
    loaded = mlflow.pyfunc.load_model(f"models:/{prod}/1")
    assert list(loaded.predict(x)) == [0, 0, 1, 1]
    resolved = httpx.get(
        f"{live_server.url}/api/2.0/mlgate/models/resolve", params={"uri": f"models:/{prod}/1"}
    ).json()
    assert resolved["digest"] and resolved["download_uri"] == src_uri

    with pytest.raises(MlflowException, match="not found"):
        client.copy_model_version(f"models:/{dev}/1", prod)  # the source is gone now


def test_copy_refuses_lineage_that_does_not_match_the_source_and_writes_nothing(
    live_server: LiveServer, unique: str
) -> None:
    api = live_server.api
    run = httpx.post(api("runs/create"), json={"experiment_id": "0"}).json()["run"]["info"]
    other = httpx.post(api("runs/create"), json={"experiment_id": "0"}).json()["run"]["info"]
    for name in (f"a-{unique}", f"b-{unique}"):
        httpx.post(api("registered-models/create"), json={"name": name}).raise_for_status()
    httpx.post(
        api("model-versions/create"),
        json={"name": f"a-{unique}", "source": f"runs:/{run['run_id']}/m", "run_id": run["run_id"]},
    ).raise_for_status()
    cases = [
        ({"source": f"models:/a-{unique}/1", "run_id": other["run_id"]}, 400),
        ({"source": f"models:/a-{unique}/1", "model_id": f"m-{'0' * 32}"}, 400),
        ({"source": f"models:/a-{unique}@nope"}, 400),
        ({"source": f"models:/a-{unique}/2"}, 404),
        ({"source": f"models:/nope-{unique}/1"}, 404),
        ({"source": f"models:/a-{unique}/Production"}, 404),  # MLflow: 500
        ({"source": f"models:/a-{unique}/1/2"}, 400),
    ]
    for body, status in cases:
        r = httpx.post(api("model-versions/create"), json={"name": f"b-{unique}", **body})
        assert r.status_code == status, (body, r.text)
        assert set(r.json()) == {"error_code", "message"}
    got = httpx.get(api("model-versions/search"), params={"filter": f"name='b-{unique}'"})
    assert got.json().get("model_versions", []) == []


def test_new_version_json_carries_mlflows_empty_defaults(
    mlflow_tracking: str, live_server: LiveServer, unique: str
) -> None:
    api = live_server.api
    exp = httpx.post(api("experiments/create"), json={"name": f"defaults-{unique}"}).json()
    model = httpx.post(api("logged-models"), json={"experiment_id": exp["experiment_id"]})
    model_id = model.json()["model"]["info"]["model_id"]
    name = f"defaults-{unique}"
    httpx.post(api("registered-models/create"), json={"name": name}).raise_for_status()
    created = httpx.post(
        api("model-versions/create"),
        json={"name": name, "source": f"models:/{model_id}", "model_id": model_id},
    ).json()["model_version"]
    got = httpx.get(api("model-versions/get"), params={"name": name, "version": "1"}).json()
    found = httpx.get(api("model-versions/search"), params={"filter": f"name='{name}'"}).json()
    for mv in (created, got["model_version"], found["model_versions"][0]):
        # mlflow server sends these three as "" when unset, and current_stage "None".
        assert (mv["description"], mv["run_link"], mv["run_id"]) == ("", "", "")
        assert mv["current_stage"] == "None" and mv["status"] == "READY"
        assert "tags" not in mv and "aliases" not in mv
    rm = httpx.get(api("registered-models/get"), params={"name": name}).json()["registered_model"]
    assert "description" not in rm and "tags" not in rm and "aliases" not in rm
    mv_client = MlflowClient().get_model_version(name, "1")
    assert (mv_client.description, mv_client.run_link) == ("", "")


def test_registering_a_logged_model_lists_the_version_in_its_model_versions_tag(
    mlflow_tracking: str, live_server: LiveServer, unique: str
) -> None:
    client = MlflowClient()
    experiment = client.create_experiment(f"mv-tag-{unique}")
    logged = client.create_logged_model(experiment, name="m")
    names = [f"tagged-{unique}-{i}" for i in range(6)]
    for name in names:
        client.create_registered_model(name)
    source = f"models:/{logged.model_id}"
    client.create_model_version(names[0], source, model_id=logged.model_id)
    # Concurrent registrations of one logged model into several models: none may be lost.
    errors: list[BaseException] = []

    def register(name: str) -> None:
        try:
            MlflowClient().create_model_version(name, source, model_id=logged.model_id)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=register, args=(n,)) for n in names[1:] for _ in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    # A copy is not a registration of the logged model (MLflow's server does not list it).
    client.copy_model_version(f"models:/{names[0]}/1", f"copy-{unique}")
    tag = client.get_logged_model(logged.model_id).tags["mlflow.modelVersions"]
    entries = json.loads(tag)
    assert entries[0] == {"name": names[0], "version": 1}  # MLflow's format: version a number
    expected = {(n, 1) for n in names} | {(n, 2) for n in names[1:]}
    assert {(e["name"], e["version"]) for e in entries} == expected
    assert len(entries) == len(expected)


def test_search_model_versions_default_order_is_last_updated_newest_first(
    mlflow_tracking: str, live_server: LiveServer, unique: str
) -> None:
    client = MlflowClient()
    run_id = client.create_run("0").info.run_id
    first, second = f"order-z-{unique}", f"order-a-{unique}"
    for name in (first, second):
        client.create_registered_model(name)
        for _ in range(2):
            client.create_model_version(name, f"runs:/{run_id}/m", run_id=run_id)
            time.sleep(0.005)

    def default_order() -> list[tuple[str, str]]:
        found = client.search_model_versions(f"name LIKE 'order-%-{unique}'")
        return [(mv.name, mv.version) for mv in found]

    assert default_order() == [(second, "2"), (second, "1"), (first, "2"), (first, "1")]
    # As on mlflow server, tags and aliases leave last_updated_timestamp (so the order) alone ...
    client.set_model_version_tag(first, "1", "k", "v")
    client.set_registered_model_alias(first, "champion", "1")
    assert default_order() == [(second, "2"), (second, "1"), (first, "2"), (first, "1")]
    # ... while a stage move, a description and a rename touch it.
    client.transition_model_version_stage(first, "1", "Staging")
    assert default_order()[0] == (first, "1")
    time.sleep(0.005)
    client.update_model_version(second, "1", "newer")
    assert default_order()[0] == (second, "1")
    # Equal timestamps: name ASC, then version DESC (MLflow's tie-breakers).
    renamed = f"order-b-{unique}"
    client.rename_registered_model(first, renamed)
    assert default_order()[:2] == [(renamed, "2"), (renamed, "1")]
    # An explicit order keeps the same tie-breakers after it.
    explicit = client.search_model_versions(
        f"name LIKE 'order-%-{unique}'", order_by=["creation_timestamp ASC"]
    )
    assert (explicit[0].name, explicit[0].version) == (renamed, "1")
    models = client.search_registered_models(f"name LIKE 'order-%-{unique}'")
    assert [m.name for m in models] == [second, renamed]  # registered models: name ASC
