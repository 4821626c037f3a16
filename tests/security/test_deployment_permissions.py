"""Who may watch a pointer, report what a replica runs and see deployments (auth on, live).

Watching and reading deployments need read on the model; reporting needs edit (the editor
role), because reports decide drift events. The reporter recorded is the authenticated
principal, never a name in the body.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.security.auth_world import LEVELS, MLGATE, World

pytestmark = pytest.mark.compat


def _expected(who: str, least: str) -> int:
    if who == "anonymous":
        return 401
    return 200 if LEVELS.index(who) >= LEVELS.index(least) else 403


def _watch(world: World, who: str, model: str) -> httpx.Response:
    params = {"name": model, "alias": "champion", "timeout": 0}
    return world.call(who, "GET", f"{MLGATE}/watch", params=params)


def _report(world: World, who: str, model: str, **extra: Any) -> httpx.Response:
    body = {
        "deployment": f"{model}-perm",
        "name": model,
        "alias": "champion",
        "replica_id": f"replica-{who}",
        **extra,
    }
    return world.call(who, "POST", f"{MLGATE}/deployments/report", json=body)


def _champion(world: World) -> str:
    """The version the shared model's alias holds now (other tests in this world may move it)."""
    r = world.call(
        "admin",
        "GET",
        "/api/2.0/mlflow/registered-models/alias",
        params={"name": world.model, "alias": "champion"},
    )
    assert r.status_code == 200, r.text
    return str(r.json()["model_version"]["version"])


def test_watching_needs_read_on_the_model(world: World) -> None:
    for who in LEVELS:
        r = _watch(world, who, world.model)
        assert r.status_code == _expected(who, "reader"), (who, r.text)
        if r.status_code == 200:
            assert r.json()["version"] == _champion(world)
        r = _watch(world, who, world.hidden_model)
        assert r.status_code == _expected(who, "admin"), (who, r.text)


def test_reporting_needs_edit_and_records_the_authenticated_reporter(world: World) -> None:
    model = world.new_model("deploy")
    for who in LEVELS:
        r = _report(world, who, model, reported_by="someone-else")
        assert r.status_code == _expected(who, "editor"), (who, r.text)
    # A reader may read what was reported, and sees the principals, not the body's claim.
    r = world.call("reader", "GET", f"{MLGATE}/deployments", params={"name": model})
    assert r.status_code == 200, r.text
    [shown] = r.json()["deployments"]
    reporters = {x["replica_id"]: x["reported_by"] for x in shown["replicas"]}
    u = world.u
    assert reporters == {
        "replica-editor": f"editor-{u}",
        "replica-approver": f"approver-{u}",
        "replica-owner": f"owner-{u}",
        "replica-admin": "root",
    }
    for who in ("anonymous", "nobody", "outsider"):
        r = world.call(who, "GET", f"{MLGATE}/deployments", params={"name": model})
        assert r.status_code == _expected(who, "reader"), (who, r.text)


def test_rights_on_one_model_cannot_report_into_a_deployment_of_another(world: World) -> None:
    """The deployment is bound to the hidden model; an editor of a team model names it."""
    hidden = world.hidden_model
    first = _report(world, "admin", hidden)
    assert first.status_code == 200, first.text
    team_model = world.new_model("hijack")
    r = _report(world, "editor", team_model, deployment=f"{hidden}-perm")
    assert (r.status_code, r.json()["error_code"]) == (400, "RESOURCE_ALREADY_EXISTS")
    # Nor can they see it through their own model.
    r = world.call("editor", "GET", f"{MLGATE}/deployments", params={"name": team_model})
    assert r.status_code == 200 and r.json()["deployments"] == []
    answer = world.admin_json("GET", f"{MLGATE}/deployments", params={"name": hidden})
    assert [x["reported_by"] for x in answer["deployments"][0]["replicas"]] == ["root"]
