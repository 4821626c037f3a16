"""Authentication and authorization end to end, with auth on: promotion rights scoped to
targets, search filtering without leaks, token lifecycle, recorded actors, login throttling."""

from __future__ import annotations

import base64
import time
from typing import Any

import httpx

from tests.security.auth_world import (
    ADMIN_PASSWORD,
    ADMIN_USER,
    API,
    MLGATE,
    PASSWORD,
    World,
)

# --- promotion rights scoped to targets ------------------------------------------------------


def _transition(w: World, who: str, version: str, stage: str, **extra: Any) -> httpx.Response:
    body = {"name": w.model, "version": version, "stage": stage, **extra}
    return w.call(who, "POST", f"{API}/model-versions/transition-stage", json=body)


def _alias(
    w: World, who: str, method: str, alias: str, version: str | None = None
) -> httpx.Response:
    body: dict[str, Any] = {"name": w.model, "alias": alias}
    if version is not None:
        body["version"] = version
    return w.call(who, method, f"{API}/registered-models/alias", json=body)


def test_staging_and_candidate_rights_do_not_reach_production_or_champion(world: World) -> None:
    version = world.new_version()
    assert _transition(world, "ci", version, "Staging").status_code == 200
    refused = _transition(world, "ci", version, "Production")
    assert refused.status_code == 403
    assert "Production" in refused.json()["message"]
    assert _alias(world, "ci", "POST", "candidate", version).status_code == 200
    assert _alias(world, "ci", "POST", "champion", version).status_code == 403
    assert _alias(world, "ci", "DELETE", "champion").status_code == 403
    assert _alias(world, "ci", "DELETE", "candidate").status_code == 200
    # Stage names are case-insensitive on the wire; the scope check is not fooled by case.
    assert _transition(world, "ci", version, "production").status_code == 403
    # An unrestricted approver may do both.
    assert _transition(world, "approver", version, "Production").status_code == 200
    assert _alias(world, "approver", "POST", "champion", version).status_code == 200
    champion = world.admin_json(
        "GET", f"{API}/registered-models/alias", params={"name": world.model, "alias": "champion"}
    )["model_version"]["version"]
    assert champion == version


def test_moving_a_version_out_of_production_needs_production_rights(world: World) -> None:
    """A demotion changes what models:/name/Production loads: checked inside the transaction."""
    version = world.new_version()
    world.transition(world.model, version, "Production")
    r = _transition(world, "ci", version, "Staging")
    assert r.status_code == 403, r.text
    got = world.admin_json(
        "GET", f"{API}/model-versions/get", params={"name": world.model, "version": version}
    )
    assert got["model_version"]["current_stage"] == "Production"
    # Archiving the Staging holder when promoting into Staging stays within Staging rights.
    fresh = world.new_version()
    assert (
        _transition(world, "ci", fresh, "Staging", archive_existing_versions=True).status_code
        == 200
    )


def test_target_scopes_are_validated_when_granted(world: World) -> None:
    body = {
        "username": f"ci-{world.u}",
        "resource_type": "registered_model",
        "pattern": "bad-targets-*",
        "role": "approver",
        "targets": ["Prod"],
    }
    r = world.admin.post(f"{MLGATE}/grants/create", json=body)
    assert r.status_code == 400
    body["resource_type"] = "experiment"
    body["targets"] = ["Staging"]
    assert world.admin.post(f"{MLGATE}/grants/create", json=body).status_code == 400


# --- search and list filtering -----------------------------------------------------------------


def _all_pages(w: World, who: str, method: str, path: str, key: str, **query: Any) -> list[Any]:
    items: list[Any] = []
    token = None
    while True:
        params = {**query, **({"page_token": token} if token else {})}
        if method == "GET":
            r = w.call(who, "GET", path, params=params)
        else:
            r = w.call(who, "POST", path, json=params)
        assert r.status_code == 200, r.text
        data = r.json()
        items.extend(data.get(key, []))
        token = data.get("next_page_token")
        if not token:
            return items


def test_experiment_search_shows_only_visible_experiments_page_by_page(world: World) -> None:
    for _ in range(3):
        world.new_experiment("visible")
    admin_names = {
        e["name"]
        for e in _all_pages(
            world, "admin", "POST", f"{API}/experiments/search", "experiments", max_results=1000
        )
    }
    assert f"hidden-{world.u}" in admin_names
    visible = {n for n in admin_names if n.startswith(f"team-{world.u}-")}
    # One per page: every page full of visible experiments, so counts and tokens leak nothing.
    paged = _all_pages(
        world, "reader", "POST", f"{API}/experiments/search", "experiments", max_results=1
    )
    names = [e["name"] for e in paged]
    assert len(names) == len(set(names))
    assert set(names) == visible
    # A filter naming the hidden experiment finds nothing, and says nothing.
    r = world.call(
        "reader",
        "POST",
        f"{API}/experiments/search",
        json={"filter": f"name = 'hidden-{world.u}'"},
    )
    assert r.json().get("experiments", []) == [] and "next_page_token" not in r.json()
    assert _all_pages(world, "outsider", "POST", f"{API}/experiments/search", "experiments") == []


def test_run_and_logged_model_searches_skip_hidden_experiments(world: World) -> None:
    body = {
        "experiment_ids": [world.hidden_experiment_id, world.experiment_id],
        "max_results": 1000,
    }
    runs = world.call("reader", "POST", f"{API}/runs/search", json=body).json()["runs"]
    assert runs and all(r["info"]["experiment_id"] == world.experiment_id for r in runs)
    hidden_only = {"experiment_ids": [world.hidden_experiment_id]}
    r = world.call("reader", "POST", f"{API}/runs/search", json=hidden_only)
    assert r.status_code == 200 and r.json() == {}  # no runs: {} as mlflow server answers
    world.new_logged_model(world.hidden_experiment_id)
    r = world.call("reader", "POST", f"{API}/logged-models/search", json=hidden_only)
    assert r.status_code == 200 and r.json().get("models", []) == []


def test_registry_searches_show_only_visible_models(world: World) -> None:
    for _ in range(2):
        world.new_model("listed")
    paged = _all_pages(
        world,
        "reader",
        "GET",
        f"{API}/registered-models/search",
        "registered_models",
        max_results=1,
    )
    names = {m["name"] for m in paged}
    assert names and all(n.startswith(f"model-{world.u}-") for n in names)
    assert world.hidden_model not in names
    admin_names = {
        m["name"]
        for m in _all_pages(
            world,
            "admin",
            "GET",
            f"{API}/registered-models/search",
            "registered_models",
            max_results=1000,
        )
    }
    assert {n for n in admin_names if n.startswith(f"model-{world.u}-")} == names
    hidden_version = world.new_version(world.hidden_model)
    versions = _all_pages(
        world, "reader", "GET", f"{API}/model-versions/search", "model_versions",
        filter=f"name = '{world.hidden_model}'",
    )  # fmt: skip
    assert versions == [] and hidden_version == "1"
    mine = _all_pages(
        world, "reader", "GET", f"{API}/model-versions/search", "model_versions",
        filter=f"name = '{world.model}'", max_results=1,
    )  # fmt: skip
    assert {v["name"] for v in mine} == {world.model}


# --- tokens ----------------------------------------------------------------------------------


def _bearer(w: World, secret: str) -> httpx.Client:
    return httpx.Client(
        base_url=w.server.url, headers={"Authorization": f"Bearer {secret}"}, timeout=60
    )


def test_token_lifecycle_create_use_list_revoke(world: World) -> None:
    created = world.call(
        "reader", "POST", f"{MLGATE}/tokens/create", json={"name": "laptop"}
    ).json()
    secret = created["secret"]
    assert secret.startswith("mlg_") and created["token"]["username"] == f"reader-{world.u}"
    with _bearer(world, secret) as client:
        me = client.get(f"{MLGATE}/whoami").json()
        assert me["username"] == f"reader-{world.u}" and me["authenticated_by"] == "token"
        assert client.get(f"{API}/runs/get", params={"run_id": world.run_id}).status_code == 200
        # A token does not mint tokens, nor change its user's password.
        assert client.post(f"{MLGATE}/tokens/create", json={"name": "x"}).status_code == 403
        body = {"username": f"reader-{world.u}", "password": "a-brand-new-password"}
        assert client.patch(f"{MLGATE}/users/update", json=body).status_code == 403
        listed = world.call("reader", "GET", f"{MLGATE}/tokens/list").json()["tokens"]
        assert created["token"]["token_id"] in {t["token_id"] for t in listed}
        assert all("secret" not in t for t in listed)
        # Other users cannot revoke it; its owner can, and it stops working at once.
        token_id = created["token"]["token_id"]
        assert (
            world.call(
                "editor", "POST", f"{MLGATE}/tokens/revoke", json={"token_id": token_id}
            ).status_code
            == 403
        )
        assert (
            world.call(
                "reader", "POST", f"{MLGATE}/tokens/revoke", json={"token_id": token_id}
            ).status_code
            == 200
        )
        r = client.get(f"{API}/runs/get", params={"run_id": world.run_id})
        assert r.status_code == 401 and r.json()["error_code"] == "UNAUTHENTICATED"


def test_expired_and_malformed_tokens_are_401(world: World) -> None:
    expires = int(time.time() * 1000) + 1500
    created = world.call(
        "editor", "POST", f"{MLGATE}/tokens/create", json={"name": "short", "expires_at": expires}
    ).json()
    with _bearer(world, created["secret"]) as client:
        assert client.get(f"{MLGATE}/whoami").status_code == 200
        time.sleep(2)
        assert client.get(f"{MLGATE}/whoami").status_code == 401
    tampered = created["secret"][:-4] + "AAAA"
    for secret in (tampered, "mlg_nothing", "x" * 500, "mlg_" + "0" * 12 + "_" + "A" * 43):
        with _bearer(world, secret) as client:
            r = client.get(f"{API}/experiments/get", params={"experiment_id": world.experiment_id})
            assert r.status_code == 401, secret


def test_disabling_a_user_stops_its_password_and_tokens(world: World) -> None:
    name = world.fresh("leaver")
    world.create_user(name)
    world.grant(name, "experiment", f"team-{world.u}-*", "reader")
    client = world.client_for(name, PASSWORD)
    secret = client.post(f"{MLGATE}/tokens/create", json={"name": "t"}).json()["secret"]
    world.admin_json("PATCH", f"{MLGATE}/users/update", json={"username": name, "disabled": True})
    assert client.get(f"{MLGATE}/whoami").status_code == 401
    with _bearer(world, secret) as bearer:
        assert bearer.get(f"{MLGATE}/whoami").status_code == 401
    client.close()


def test_re_enabling_a_user_does_not_revive_its_tokens(world: World) -> None:
    name = world.fresh("returner")
    world.create_user(name)
    client = world.client_for(name, PASSWORD)
    secret = client.post(f"{MLGATE}/tokens/create", json={"name": "t"}).json()["secret"]
    with _bearer(world, secret) as bearer:
        assert bearer.get(f"{MLGATE}/whoami").status_code == 200
    for disabled in (True, False):
        body = {"username": name, "disabled": disabled}
        world.admin_json("PATCH", f"{MLGATE}/users/update", json=body)
    # The password works again; the token issued before the disable stays revoked.
    assert client.get(f"{MLGATE}/whoami").status_code == 200
    with _bearer(world, secret) as bearer:
        assert bearer.get(f"{MLGATE}/whoami").status_code == 401
    listed = client.get(f"{MLGATE}/tokens/list", params={"username": name}).json()["tokens"]
    assert [t["revoked_at"] is not None for t in listed] == [True]
    client.close()


def test_users_change_their_own_password_only(world: World) -> None:
    name = world.fresh("changer")
    world.create_user(name)
    client = world.client_for(name, PASSWORD)
    body = {"username": name, "password": "the-second-password"}
    assert client.patch(f"{MLGATE}/users/update", json=body).status_code == 403
    body["current_password"] = "not-my-password"
    assert client.patch(f"{MLGATE}/users/update", json=body).status_code == 403
    body["current_password"] = PASSWORD
    assert client.patch(f"{MLGATE}/users/update", json=body).status_code == 200
    assert client.get(f"{MLGATE}/whoami").status_code == 401  # the old password is gone
    client.close()
    client = world.client_for(name, "the-second-password")
    assert client.get(f"{MLGATE}/whoami").status_code == 200
    other = {"username": f"reader-{world.u}", "password": "hijacked-password-1"}
    assert client.patch(f"{MLGATE}/users/update", json=other).status_code == 403
    promote = {"username": name, "is_admin": True}
    assert client.patch(f"{MLGATE}/users/update", json=promote).status_code == 403
    client.close()


def test_administrators_cannot_lock_themselves_out(world: World) -> None:
    for body in ({"disabled": True}, {"is_admin": False}, {"password": "x" * 20}):
        r = world.admin.patch(f"{MLGATE}/users/update", json={"username": ADMIN_USER, **body})
        assert r.status_code == 403, body
    r = world.admin.request("DELETE", f"{MLGATE}/users/delete", json={"username": ADMIN_USER})
    assert r.status_code == 403
    assert world.admin.get(f"{MLGATE}/whoami").status_code == 200


# --- who did it --------------------------------------------------------------------------------


def test_writes_record_the_authenticated_user_not_the_claimed_one(world: World) -> None:
    body = {
        "experiment_id": world.experiment_id,
        "user_id": "someone-else",
        "tags": [{"key": "mlflow.user", "value": "someone-else"}],
    }
    run = world.call("editor", "POST", f"{API}/runs/create", json=body).json()["run"]
    assert run["info"]["user_id"] == f"editor-{world.u}"
    tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
    assert tags["mlflow.user"] == f"editor-{world.u}"
    run_id = run["info"]["run_id"]
    body2 = {"run_id": run_id, "key": "mlflow.user", "value": "someone-else"}
    world.call("editor", "POST", f"{API}/runs/set-tag", json=body2)
    got = world.admin_json("GET", f"{API}/runs/get", params={"run_id": run_id})["run"]
    assert {t["key"]: t["value"] for t in got["data"]["tags"]}["mlflow.user"] == f"editor-{world.u}"

    name = world.model_name_for("actor")
    created = world.call("editor", "POST", f"{API}/registered-models/create", json={"name": name})
    assert created.json()["registered_model"]["user_id"] == f"editor-{world.u}"
    mv = world.call(
        "editor",
        "POST",
        f"{API}/model-versions/create",
        json={"name": name, "source": f"runs:/{run_id}/model", "run_id": run_id},
    ).json()["model_version"]
    assert mv["user_id"] == f"editor-{world.u}"
    _transition_named = {"name": name, "version": mv["version"], "stage": "Staging"}
    world.call("approver", "POST", f"{API}/model-versions/transition-stage", json=_transition_named)
    events = world.admin_json("GET", f"{MLGATE}/registered-models/history", params={"name": name})[
        "events"
    ]
    assert events[0]["actor"] == f"approver-{world.u}"


# --- login throttling --------------------------------------------------------------------------


def test_failed_logins_are_throttled_per_user_and_client(world: World) -> None:
    name = world.fresh("target")
    world.create_user(name)
    with httpx.Client(
        base_url=world.server.url, auth=(name, "wrong-password-x"), timeout=60
    ) as bad:
        codes = [bad.get(f"{MLGATE}/whoami").status_code for _ in range(10)]
        assert codes[:9] == [401] * 9 and codes[9] == 429
        throttled = bad.get(f"{MLGATE}/whoami")
        assert throttled.status_code == 429
        assert throttled.json()["error_code"] == "REQUEST_LIMIT_EXCEEDED"
        assert 0 < int(throttled.headers["retry-after"]) <= 300
    # While throttled even the right password is refused: guessing cannot go on.
    with world.client_for(name, PASSWORD) as good:
        assert good.get(f"{MLGATE}/whoami").status_code == 429
    # Other users from the same client are unaffected.
    assert world.call("reader", "GET", f"{MLGATE}/whoami").status_code == 200


def test_basic_credentials_are_parsed_as_the_mlflow_client_sends_them(world: World) -> None:
    raw = base64.b64encode(f"{ADMIN_USER}:{ADMIN_PASSWORD}".encode()).decode()
    for header in (f"Basic {raw}", f"basic {raw}", f"BASIC  {raw}"):
        r = httpx.get(f"{world.server.url}{MLGATE}/whoami", headers={"Authorization": header})
        assert r.status_code == 200, header
    for header in ("Basic !!!", "Basic " + base64.b64encode(b"no-colon").decode(), "Digest x"):
        r = httpx.get(f"{world.server.url}{MLGATE}/whoami", headers={"Authorization": header})
        assert r.status_code == 401, header
