"""copy_model_version with authentication on: read on the source model, edit on the target.

The copy exposes nothing its caller could not already read (a model's readers may download its
versions' files), so it needs no grant on the run; the run_id it sends must be the source
version's own (checked by the service), so it cannot borrow another run's lineage either.
"""

from __future__ import annotations

from tests.security.auth_world import API, PASSWORD, World


def _copy(world: World, who: str, target: str, **extra: str) -> int:
    body = {
        "name": target,
        "source": f"models:/{world.model}/{world.version}",
        "run_id": world.run_id,
        **extra,
    }
    return world.call(who, "POST", f"{API}/model-versions/create", json=body).status_code


def test_copy_needs_read_on_the_source_and_edit_on_the_target(world: World) -> None:
    target = f"prod-{world.u}-copy"
    world.admin_json("POST", f"{API}/registered-models/create", json={"name": target})
    promoter, target_only = f"promoter-{world.u}", f"target-only-{world.u}"
    for user in (promoter, target_only):
        world.create_user(user)
        world.clients[user] = world.client_for(user, PASSWORD)
        world.grant(user, "registered_model", target, "editor")
    # Registered-model grants only: no experiment grant, so no access to the run itself.
    world.grant(promoter, "registered_model", world.model, "reader")

    assert _copy(world, target_only, target) == 403  # cannot read the source model
    assert _copy(world, "reader", target) == 403  # reads the source, cannot edit the target
    assert _copy(world, "nobody", target) == 403
    assert _copy(world, "anonymous", target) == 401
    versions = world.admin_json(
        "GET", f"{API}/model-versions/search", params={"filter": f"name = '{target}'"}
    )
    assert versions.get("model_versions", []) == []

    assert _copy(world, promoter, target) == 200
    assert _copy(world, promoter, target, run_id=world.hidden_run_id) == 400  # not its lineage
    got = world.admin_json(
        "GET", f"{API}/model-versions/get", params={"name": target, "version": "1"}
    )["model_version"]
    assert got["source"] == f"models:/{world.model}/{world.version}"
    assert got["run_id"] == world.run_id
