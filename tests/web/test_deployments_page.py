"""The model page shows each deployment's desired version against what its replicas run."""

from __future__ import annotations

from collections.abc import Callable

from tests.security.auth_world import MLGATE, World
from tests.web.support import Browser
from tests.web.test_registry_pages import element, finished_run, model_path, rows, text


def test_model_page_shows_desired_versus_actual_per_replica(
    web_world: World, browser_for: Callable[[str], Browser]
) -> None:
    model = web_world.new_model("served")
    v1 = web_world.new_version(model, finished_run(web_world, files={"m.txt": b"one"}))
    v2 = web_world.new_version(model, finished_run(web_world, files={"m.txt": b"two"}))
    digests = {
        v: web_world.admin_json(
            "GET", f"{MLGATE}/models/resolve", params={"uri": f"models:/{model}/{v}"}
        )["digest"]
        for v in (v1, v2)
    }
    web_world.set_alias(model, "champion", v2)
    for replica, version in (("pod-a", v2), ("pod-b", v1)):
        body = {
            "deployment": f"{model}-svc",
            "name": model,
            "alias": "champion",
            "replica_id": replica,
            "version": version,
            "digest": digests[version],
        }
        web_world.admin_json("POST", f"{MLGATE}/deployments/report", json=body)
    page = browser_for("reader").get(model_path(model))
    assert page.status_code == 200
    table = rows(element(page.text, "deployments"), "replica")
    assert set(table) == {"pod-a", "pod-b"}
    assert 'data-in-sync="true"' in table["pod-a"] and "in sync" in text(table["pod-a"])
    assert 'data-in-sync="false"' in table["pod-b"] and "differs" in text(table["pod-b"])
    assert f"v{v2}" in text(table["pod-b"]).split("@champion")[1].split("pod-b")[0]
    assert f"v{v1}" in text(table["pod-b"]).split("pod-b")[1]
    assert digests[v1][:12] in table["pod-b"]


def test_model_page_without_deployments_says_so(
    web_world: World, browser_for: Callable[[str], Browser]
) -> None:
    model = web_world.new_model("unserved")
    page = browser_for("reader").get(model_path(model))
    assert "No deployment has reported on this model." in text(element(page.text, "deployments"))
