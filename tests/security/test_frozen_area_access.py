"""Who may read and write the registry's frozen copies of version files, with auth on.

The copies belong to no experiment: only the readers of a model holding a version there may
read them (loading ``models:/name/Production``), and no one, administrators included, may
write or delete there through the artifact proxy.
"""

from __future__ import annotations

from registry.artifacts.paths import FROZEN_AREA
from tests.security.auth_world import API, ARTIFACTS, PASSWORD, World


def _frozen_root(world: World, model: str, version: str) -> str:
    uri = world.admin_json(
        "GET", f"{API}/model-versions/get-download-uri", params={"name": model, "version": version}
    )["artifact_uri"]
    root = str(uri).removeprefix("mlflow-artifacts:/")
    assert root.startswith(f"{FROZEN_AREA}/sha256/")
    return root


def test_frozen_copies_are_read_by_the_models_readers_only_and_written_by_no_one(
    world: World,
) -> None:
    model = world.new_model("frozen")
    run = world.new_run()
    world.put_artifact(f"{world.experiment_id}/{run}/artifacts/model/MLmodel", b"frozen bytes")
    version = world.new_version(model, run)
    root = _frozen_root(world, model, version)

    every_experiment = world.fresh("all-experiments")
    world.create_user(every_experiment)
    world.grant(every_experiment, "experiment", "*", "admin")
    other_model = world.fresh("other-model")
    world.create_user(other_model)
    world.grant(other_model, "registered_model", world.model, "admin")
    model_reader = world.fresh("model-reader")
    world.create_user(model_reader)
    world.grant(model_reader, "registered_model", model, "reader")

    clients = {
        who: world.client_for(who, PASSWORD)
        for who in (every_experiment, other_model, model_reader)
    }
    try:
        file_url = f"{ARTIFACTS}/artifacts/{root}/MLmodel"
        for who in (every_experiment, other_model):
            client = clients[who]
            assert client.get(file_url).status_code == 403, who
            listing = client.get(f"{ARTIFACTS}/artifacts", params={"path": f"{FROZEN_AREA}/sha256"})
            assert listing.status_code == 403, who
        reader = clients[model_reader]
        assert reader.get(file_url).content == b"frozen bytes"
        assert reader.get(f"{ARTIFACTS}/artifacts", params={"path": root}).status_code == 200
        # The model's reader sees this version's tree, not the list of every frozen tree.
        whole = reader.get(f"{ARTIFACTS}/artifacts", params={"path": f"{FROZEN_AREA}/sha256"})
        assert whole.status_code == 403

        for client in (clients[every_experiment], world.clients["owner"], world.admin):
            assert client.put(file_url, content=b"tampered").status_code == 403
            assert client.delete(f"{ARTIFACTS}/artifacts/{root}").status_code == 403
        assert reader.get(file_url).content == b"frozen bytes"
    finally:
        for client in clients.values():
            client.close()
