"""Every route group, every principal: anonymous gets 401, under-privileged 403, the rest 200.

The server runs with MLGATE_AUTH=true (see ``auth_world``). Each case says the least level
that may use the route; every level below it must be refused, every level from it on served.
Destructive cases act on a fresh object per attempt, made by the administrator.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.security.auth_world import (
    API,
    APPROVERS,
    ARTIFACTS,
    LEVELS,
    MLGATE,
    VISIBLE_MODELS,
    GatesWorld,
    World,
)

Request = tuple[str, str, dict[str, Any]]


@dataclass(frozen=True)
class Case:
    group: str
    name: str
    # The least level served: a LEVELS entry, or "authenticated" (any principal) / "public".
    least: str
    request: Callable[[World, str], Request]


def _get(route: str, /, **params: Any) -> Request:
    return "GET", route, {"params": params}


def _json(method: str, path: str, body: dict[str, Any]) -> Request:
    return method, path, {"json": body}


def _tagged_run(w: World) -> str:
    run = w.new_run()
    w.admin_json("POST", f"{API}/runs/set-tag", json={"run_id": run, "key": "t", "value": "v"})
    return run


def _deleted_experiment(w: World) -> str:
    eid = w.new_experiment("deleted")
    w.admin_json("POST", f"{API}/experiments/delete", json={"experiment_id": eid})
    return eid


def _deleted_run(w: World) -> str:
    run = w.new_run()
    w.admin_json("POST", f"{API}/runs/delete", json={"run_id": run})
    return run


def _tagged_experiment(w: World) -> str:
    eid = w.new_experiment("tagged")
    body = {"experiment_id": eid, "key": "t", "value": "v"}
    w.admin_json("POST", f"{API}/experiments/set-experiment-tag", json=body)
    return eid


def _tagged_model(w: World) -> str:
    name = w.new_model("tagged")
    body = {"name": name, "key": "t", "value": "v"}
    w.admin_json("POST", f"{API}/registered-models/set-tag", json=body)
    return name


def _tagged_version(w: World) -> str:
    version = w.new_version()
    body = {"name": w.model, "version": version, "key": "t", "value": "v"}
    w.admin_json("POST", f"{API}/model-versions/set-tag", json=body)
    return version


def _tagged_logged_model(w: World) -> str:
    lm = w.new_logged_model()
    body = {"tags": [{"key": "t", "value": "v"}]}
    w.admin_json("PATCH", f"{API}/logged-models/{lm}/tags", json=body)
    return lm


def _other_user(w: World) -> str:
    name = w.fresh("victim")
    w.create_user(name)
    return name


def _grant_to_delete(w: World) -> str:
    name = _other_user(w)
    return w.grant(name, "experiment", w.fresh("p"), "reader")


CASES = [
    # --- experiments -----------------------------------------------------------------------
    Case(
        "experiments",
        "get",
        "reader",
        lambda w, who: _get(f"{API}/experiments/get", experiment_id=w.experiment_id),
    ),
    Case(
        "experiments",
        "get-by-name",
        "reader",
        lambda w, who: _get(f"{API}/experiments/get-by-name", experiment_name=w.experiment_name),
    ),
    Case(
        "experiments",
        "create",
        "editor",
        lambda w, who: _json(
            "POST", f"{API}/experiments/create", {"name": w.experiment_name_for(who)}
        ),
    ),
    Case(
        "experiments",
        "rename",
        "owner",
        lambda w, who: _json(
            "POST",
            f"{API}/experiments/update",
            {"experiment_id": w.new_experiment(), "new_name": w.experiment_name_for("renamed")},
        ),
    ),
    Case(
        "experiments",
        "delete",
        "owner",
        lambda w, who: _json(
            "POST", f"{API}/experiments/delete", {"experiment_id": w.new_experiment()}
        ),
    ),
    Case(
        "experiments",
        "restore",
        "owner",
        lambda w, who: _json(
            "POST", f"{API}/experiments/restore", {"experiment_id": _deleted_experiment(w)}
        ),
    ),
    Case(
        "experiments",
        "set-tag",
        "editor",
        lambda w, who: _json(
            "POST",
            f"{API}/experiments/set-experiment-tag",
            {"experiment_id": w.experiment_id, "key": "k", "value": who},
        ),
    ),
    Case(
        "experiments",
        "delete-tag",
        "editor",
        lambda w, who: _json(
            "POST",
            f"{API}/experiments/delete-experiment-tag",
            {"experiment_id": _tagged_experiment(w), "key": "t"},
        ),
    ),
    Case(
        "experiments",
        "search",
        "authenticated",
        lambda w, who: _json("POST", f"{API}/experiments/search", {"max_results": 5}),
    ),
    Case(
        "experiments",
        "search (GET)",
        "authenticated",
        lambda w, who: _get(f"{API}/experiments/search", max_results=5),
    ),
    # --- runs --------------------------------------------------------------------------------
    Case(
        "runs",
        "create",
        "editor",
        lambda w, who: _json("POST", f"{API}/runs/create", {"experiment_id": w.experiment_id}),
    ),
    Case("runs", "get", "reader", lambda w, who: _get(f"{API}/runs/get", run_id=w.run_id)),
    Case(
        "runs",
        "update",
        "editor",
        lambda w, who: _json(
            "POST", f"{API}/runs/update", {"run_id": w.run_id, "status": "RUNNING"}
        ),
    ),
    Case(
        "runs",
        "delete",
        "owner",
        lambda w, who: _json("POST", f"{API}/runs/delete", {"run_id": w.new_run()}),
    ),
    Case(
        "runs",
        "restore",
        "owner",
        lambda w, who: _json("POST", f"{API}/runs/restore", {"run_id": _deleted_run(w)}),
    ),
    Case(
        "runs",
        "log-parameter",
        "editor",
        lambda w, who: _json(
            "POST",
            f"{API}/runs/log-parameter",
            {"run_id": w.run_id, "key": f"p-{who}", "value": "1"},
        ),
    ),
    Case(
        "runs",
        "set-tag",
        "editor",
        lambda w, who: _json(
            "POST", f"{API}/runs/set-tag", {"run_id": w.run_id, "key": "k", "value": "v"}
        ),
    ),
    Case(
        "runs",
        "delete-tag",
        "editor",
        lambda w, who: _json(
            "POST", f"{API}/runs/delete-tag", {"run_id": _tagged_run(w), "key": "t"}
        ),
    ),
    Case(
        "runs",
        "log-batch",
        "editor",
        lambda w, who: _json(
            "POST",
            f"{API}/runs/log-batch",
            {"run_id": w.run_id, "metrics": [{"key": "b", "value": 1, "timestamp": 1, "step": 0}]},
        ),
    ),
    Case(
        "runs",
        "log-inputs",
        "editor",
        lambda w, who: _json(
            "POST", f"{API}/runs/log-inputs", {"run_id": w.run_id, "datasets": []}
        ),
    ),
    Case(
        "runs",
        "outputs",
        "editor",
        lambda w, who: _json(
            "POST",
            f"{API}/runs/outputs",
            {"run_id": w.run_id, "models": [{"model_id": w.logged_model_id, "step": 0}]},
        ),
    ),
    Case(
        "runs",
        "search",
        "authenticated",
        lambda w, who: _json("POST", f"{API}/runs/search", {"experiment_ids": [w.experiment_id]}),
    ),
    # --- metrics -----------------------------------------------------------------------------
    Case(
        "metrics",
        "log-metric",
        "editor",
        lambda w, who: _json(
            "POST",
            f"{API}/runs/log-metric",
            {"run_id": w.run_id, "key": "m", "value": 2.0, "timestamp": 2, "step": 1},
        ),
    ),
    Case(
        "metrics",
        "get-history",
        "reader",
        lambda w, who: _get(f"{API}/metrics/get-history", run_id=w.run_id, metric_key="m"),
    ),
    # --- logged models -----------------------------------------------------------------------
    Case(
        "logged models",
        "create",
        "editor",
        lambda w, who: _json(
            "POST", f"{API}/logged-models", {"experiment_id": w.experiment_id, "name": who}
        ),
    ),
    Case(
        "logged models",
        "get",
        "reader",
        lambda w, who: _get(f"{API}/logged-models/{w.logged_model_id}"),
    ),
    Case(
        "logged models",
        "finalize",
        "editor",
        lambda w, who: _json(
            "PATCH", f"{API}/logged-models/{w.new_logged_model()}", {"status": "LOGGED_MODEL_READY"}
        ),
    ),
    Case(
        "logged models",
        "set-tags",
        "editor",
        lambda w, who: _json(
            "PATCH",
            f"{API}/logged-models/{w.logged_model_id}/tags",
            {"tags": [{"key": "k", "value": who}]},
        ),
    ),
    Case(
        "logged models",
        "delete-tag",
        "editor",
        lambda w, who: ("DELETE", f"{API}/logged-models/{_tagged_logged_model(w)}/tags/t", {}),
    ),
    Case(
        "logged models",
        "params",
        "editor",
        lambda w, who: _json(
            "POST",
            f"{API}/logged-models/{w.logged_model_id}/params",
            {"params": [{"key": f"p-{who}", "value": "1"}]},
        ),
    ),
    Case(
        "logged models",
        "delete",
        "owner",
        lambda w, who: ("DELETE", f"{API}/logged-models/{w.new_logged_model()}", {}),
    ),
    Case(
        "logged models",
        "search",
        "authenticated",
        lambda w, who: _json(
            "POST", f"{API}/logged-models/search", {"experiment_ids": [w.experiment_id]}
        ),
    ),
    # --- registered models -------------------------------------------------------------------
    Case(
        "registered models",
        "create",
        "editor",
        lambda w, who: _json(
            "POST", f"{API}/registered-models/create", {"name": w.model_name_for(who)}
        ),
    ),
    Case(
        "registered models",
        "get",
        "reader",
        lambda w, who: _get(f"{API}/registered-models/get", name=w.model),
    ),
    Case(
        "registered models",
        "rename",
        "owner",
        lambda w, who: _json(
            "POST",
            f"{API}/registered-models/rename",
            {"name": w.new_model(), "new_name": w.model_name_for("renamed")},
        ),
    ),
    Case(
        "registered models",
        "update",
        "editor",
        lambda w, who: _json(
            "PATCH", f"{API}/registered-models/update", {"name": w.model, "description": who}
        ),
    ),
    Case(
        "registered models",
        "delete",
        "owner",
        lambda w, who: _json("DELETE", f"{API}/registered-models/delete", {"name": w.new_model()}),
    ),
    Case(
        "registered models",
        "search",
        "authenticated",
        lambda w, who: _get(f"{API}/registered-models/search"),
    ),
    Case(
        "registered models",
        "set-tag",
        "editor",
        lambda w, who: _json(
            "POST", f"{API}/registered-models/set-tag", {"name": w.model, "key": "k", "value": "v"}
        ),
    ),
    Case(
        "registered models",
        "delete-tag",
        "editor",
        lambda w, who: _json(
            "DELETE", f"{API}/registered-models/delete-tag", {"name": _tagged_model(w), "key": "t"}
        ),
    ),
    Case(
        "registered models",
        "get-latest-versions",
        "reader",
        lambda w, who: _json(
            "POST", f"{API}/registered-models/get-latest-versions", {"name": w.model}
        ),
    ),
    Case(
        "registered models",
        "get-latest-versions (GET)",
        "reader",
        lambda w, who: _get(f"{API}/registered-models/get-latest-versions", name=w.model),
    ),
    # --- versions ----------------------------------------------------------------------------
    Case(
        "versions",
        "create",
        "editor",
        lambda w, who: _json(
            "POST",
            f"{API}/model-versions/create",
            {"name": w.model, "source": f"runs:/{w.run_id}/model", "run_id": w.run_id},
        ),
    ),
    Case(
        "versions",
        "get",
        "reader",
        lambda w, who: _get(f"{API}/model-versions/get", name=w.model, version=w.version),
    ),
    Case(
        "versions",
        "update",
        "editor",
        lambda w, who: _json(
            "PATCH",
            f"{API}/model-versions/update",
            {"name": w.model, "version": w.version, "description": who},
        ),
    ),
    Case(
        "versions",
        "delete",
        "owner",
        lambda w, who: _json(
            "DELETE", f"{API}/model-versions/delete", {"name": w.model, "version": w.new_version()}
        ),
    ),
    Case(
        "versions",
        "search",
        "authenticated",
        lambda w, who: _get(f"{API}/model-versions/search", filter=f"name = '{w.model}'"),
    ),
    Case(
        "versions",
        "set-tag",
        "editor",
        lambda w, who: _json(
            "POST",
            f"{API}/model-versions/set-tag",
            {"name": w.model, "version": w.version, "key": "k", "value": "v"},
        ),
    ),
    Case(
        "versions",
        "delete-tag",
        "editor",
        lambda w, who: _json(
            "DELETE",
            f"{API}/model-versions/delete-tag",
            {"name": w.model, "version": _tagged_version(w), "key": "t"},
        ),
    ),
    Case(
        "versions",
        "get-download-uri",
        "reader",
        lambda w, who: _get(
            f"{API}/model-versions/get-download-uri", name=w.model, version=w.version
        ),
    ),
    # --- transitions and aliases -------------------------------------------------------------
    Case(
        "transitions",
        "transition-stage",
        "approver",
        lambda w, who: _json(
            "POST",
            f"{API}/model-versions/transition-stage",
            {"name": w.model, "version": w.new_version(), "stage": "Staging"},
        ),
    ),
    Case(
        "aliases",
        "set",
        "approver",
        lambda w, who: _json(
            "POST",
            f"{API}/registered-models/alias",
            {"name": w.model, "alias": "candidate", "version": w.version},
        ),
    ),
    Case(
        "aliases",
        "delete",
        "approver",
        lambda w, who: _json(
            "DELETE", f"{API}/registered-models/alias", {"name": w.model, "alias": "old"}
        ),
    ),
    Case(
        "aliases",
        "get",
        "reader",
        lambda w, who: _get(f"{API}/registered-models/alias", name=w.model, alias="champion"),
    ),
    Case(
        "history",
        "history",
        "reader",
        lambda w, who: _get(f"{MLGATE}/registered-models/history", name=w.model),
    ),
    Case(
        "history",
        "pointer-at",
        "reader",
        lambda w, who: _get(
            f"{MLGATE}/registered-models/pointer-at", name=w.model, pointer="@champion"
        ),
    ),
    # --- artifacts ---------------------------------------------------------------------------
    Case(
        "artifacts",
        "list",
        "reader",
        lambda w, who: _get(
            f"{ARTIFACTS}/artifacts", path=f"{w.experiment_id}/{w.run_id}/artifacts"
        ),
    ),
    Case(
        "artifacts",
        "download",
        "reader",
        lambda w, who: (
            "GET",
            f"{ARTIFACTS}/artifacts/{w.experiment_id}/{w.run_id}/artifacts/a.txt",
            {},
        ),
    ),
    Case(
        "artifacts",
        "upload",
        "editor",
        lambda w, who: (
            "PUT",
            f"{ARTIFACTS}/artifacts/{w.experiment_id}/{w.run_id}/artifacts/up-{who}.txt",
            {"content": b"data"},
        ),
    ),
    Case(
        "artifacts",
        "delete",
        "owner",
        lambda w, who: ("DELETE", f"{ARTIFACTS}/artifacts/{_artifact_to_delete(w)}", {}),
    ),
    Case(
        "artifacts",
        "multipart create",
        "editor",
        lambda w, who: _json(
            "POST",
            f"{ARTIFACTS}/mpu/create/{w.experiment_id}/{w.run_id}/artifacts",
            {"path": f"big-{who}.bin", "num_parts": 1},
        ),
    ),
    Case(
        "artifacts",
        "UI run download",
        "reader",
        lambda w, who: _get("/get-artifact", run_uuid=w.run_id, path="a.txt"),
    ),
    Case(
        "artifacts",
        "UI version download",
        "reader",
        lambda w, who: _get(
            "/model-versions/get-artifact", name=w.model, version=w.version, path="MLmodel"
        ),
    ),
    # --- mlgate admin APIs -------------------------------------------------------------------
    Case("mlgate", "whoami", "authenticated", lambda w, who: _get(f"{MLGATE}/whoami")),
    Case(
        "mlgate",
        "users/create",
        "admin",
        lambda w, who: _json(
            "POST",
            f"{MLGATE}/users/create",
            {"username": w.fresh("made-by"), "password": "another-long-password"},
        ),
    ),
    Case("mlgate", "users/list", "admin", lambda w, who: _get(f"{MLGATE}/users/list")),
    Case(
        "mlgate",
        "users/get",
        "admin",
        lambda w, who: _get(f"{MLGATE}/users/get", username=f"reader-{w.u}"),
    ),
    Case(
        "mlgate",
        "users/update (another user)",
        "admin",
        lambda w, who: _json(
            "PATCH", f"{MLGATE}/users/update", {"username": _other_user(w), "disabled": True}
        ),
    ),
    Case(
        "mlgate",
        "users/delete",
        "admin",
        lambda w, who: _json("DELETE", f"{MLGATE}/users/delete", {"username": _other_user(w)}),
    ),
    Case(
        "mlgate",
        "grants/create",
        "admin",
        lambda w, who: _json(
            "POST",
            f"{MLGATE}/grants/create",
            {
                "username": _other_user(w),
                "resource_type": "experiment",
                "pattern": "x-*",
                "role": "reader",
            },
        ),
    ),
    Case("mlgate", "grants/list", "admin", lambda w, who: _get(f"{MLGATE}/grants/list")),
    Case(
        "mlgate",
        "grants/delete",
        "admin",
        lambda w, who: _json(
            "DELETE", f"{MLGATE}/grants/delete", {"grant_id": _grant_to_delete(w)}
        ),
    ),
    Case(
        "mlgate",
        "tokens/create (own)",
        "authenticated",
        lambda w, who: _json("POST", f"{MLGATE}/tokens/create", {"name": f"matrix-{who}"}),
    ),
    Case(
        "mlgate", "tokens/list (own)", "authenticated", lambda w, who: _get(f"{MLGATE}/tokens/list")
    ),
    # Audit entries, webhook subscriptions and deliveries carry every model's events and every
    # actor: administrators only, on the API as in the UI (tests/web/test_audit_pages.py).
    Case("mlgate", "audit", "admin", lambda w, who: _get(f"{MLGATE}/audit")),
    Case("mlgate", "audit/verify", "admin", lambda w, who: _get(f"{MLGATE}/audit/verify")),
    Case("mlgate", "subscriptions/list", "admin", lambda w, who: _get(f"{MLGATE}/subscriptions")),
    Case("mlgate", "deliveries/list", "admin", lambda w, who: _get(f"{MLGATE}/deliveries")),
    Case("mlgate", "webhooks/list", "admin", lambda w, who: _get(f"{API}/webhooks")),
    Case(
        "mlgate",
        "subscriptions/redeliver-dead",
        "admin",
        lambda w, who: _json(
            "POST", f"{MLGATE}/subscriptions/{_subscription(w)}/redeliver-dead", {}
        ),
    ),
    # Signing a checkpoint of the audit chain is an administrator's act; the keys that verify
    # checkpoints are public, so outside monitors can check them.
    Case(
        "mlgate",
        "audit/checkpoint (sign)",
        "admin",
        lambda w, who: _json("POST", f"{MLGATE}/audit/checkpoint", {}),
    ),
    Case("server", "keys", "public", lambda w, who: _get(f"{MLGATE}/keys")),
    # --- public ------------------------------------------------------------------------------
    Case("server", "health", "public", lambda w, who: _get("/health")),
    Case("server", "server-info", "public", lambda w, who: _get("/api/3.0/mlflow/server-info")),
    Case("server", "openapi", "public", lambda w, who: _get(f"{MLGATE}/openapi.json")),
    # The stdlib-only CI client holds no secret: a runner fetches it before it signs anything.
    Case("mlgate", "promote-client", "public", lambda w, who: _get(f"{MLGATE}/clients/promote.py")),
]


def _subscription(w: World) -> str:
    if not hasattr(w, "_matrix_subscription"):
        # An event mlgate never emits: the worker never tries to reach this address.
        body = {
            "name": w.fresh("sub"),
            "url": "https://93.184.216.34/in",
            "events": ["prompt.created"],
        }
        answer = w.admin_json("POST", f"{MLGATE}/subscriptions", json=body)
        w._matrix_subscription = answer["subscription"]["id"]  # type: ignore[attr-defined]
    return str(w._matrix_subscription)  # type: ignore[attr-defined]


def _artifact_to_delete(w: World) -> str:
    path = f"{w.experiment_id}/{w.run_id}/artifacts/{w.fresh('del')}.txt"
    w.put_artifact(path)
    return path


def _expected(least: str, who: str) -> int:
    if least == "public":
        return 200
    if who == "anonymous":
        return 401
    if least == "authenticated":
        return 200
    return 200 if LEVELS.index(who) >= LEVELS.index(least) else 403


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.group}:{c.name}")
def test_route_group_answers_each_principal_by_level(world: World, case: Case) -> None:
    outcomes = {}
    for who in LEVELS:
        method, path, kwargs = case.request(world, who)
        r = world.call(who, method, path, **kwargs)
        outcomes[who] = (r.status_code, r.text[:200])
        expected = _expected(case.least, who)
        assert r.status_code == expected, (who, outcomes)
        if expected == 401:
            assert r.json()["error_code"] == "UNAUTHENTICATED"
            assert r.headers["www-authenticate"].startswith("Basic")
        elif expected == 403:
            assert r.json()["error_code"] == "PERMISSION_DENIED"


def test_every_route_group_of_the_issue_is_in_the_matrix() -> None:
    groups = {c.group for c in CASES}
    assert {
        "experiments",
        "runs",
        "metrics",
        "logged models",
        "registered models",
        "versions",
        "transitions",
        "aliases",
        "artifacts",
        "mlgate",
    } <= groups


# --- objects outside a principal's grants ----------------------------------------------------


@pytest.mark.parametrize(
    "request_for",
    [
        lambda w: _get(f"{API}/experiments/get", experiment_id=w.hidden_experiment_id),
        lambda w: _get(f"{API}/experiments/get-by-name", experiment_name=f"hidden-{w.u}"),
        lambda w: _get(f"{API}/runs/get", run_id=w.hidden_run_id),
        lambda w: _json(
            "POST",
            f"{API}/runs/log-metric",
            {"run_id": w.hidden_run_id, "key": "m", "value": 1, "timestamp": 1},
        ),
        lambda w: _get(f"{API}/registered-models/get", name=w.hidden_model),
        lambda w: _get(
            f"{ARTIFACTS}/artifacts", path=f"{w.hidden_experiment_id}/{w.hidden_run_id}/artifacts"
        ),
        lambda w: (
            "GET",
            f"{ARTIFACTS}/artifacts/{w.hidden_experiment_id}/{w.hidden_run_id}/artifacts/s.txt",
            {},
        ),
        lambda w: _get(f"{ARTIFACTS}/artifacts"),  # the store's root lists every experiment
        lambda w: _get("/get-artifact", run_uuid=w.hidden_run_id, path="s.txt"),
        # An experiment or run that does not exist is refused alike: 403 does not tell.
        lambda w: _get(f"{API}/experiments/get", experiment_id="987654321"),
        lambda w: _get(f"{API}/runs/get", run_id="0" * 32),
        lambda w: _json("POST", f"{API}/runs/create", {}),  # the Default experiment "0"
        # The registry's history, pointer-at and resolve routes of a hidden model, and of one
        # that does not exist: the same 403, so neither confirms a model exists.
        lambda w: _get(f"{MLGATE}/registered-models/history", name=w.hidden_model),
        lambda w: _get(f"{MLGATE}/registered-models/history", name=f"secret-model-{w.u}-none"),
        lambda w: _get(
            f"{MLGATE}/registered-models/pointer-at", name=w.hidden_model, pointer="Production"
        ),
        lambda w: _get(
            f"{MLGATE}/registered-models/pointer-at",
            name=f"secret-model-{w.u}-none",
            pointer="Production",
        ),
        lambda w: _get(f"{MLGATE}/models/resolve", uri=f"models:/{w.hidden_model}/1"),
        lambda w: _get(f"{MLGATE}/models/resolve", uri=f"models:/secret-model-{w.u}-none/1"),
    ],
)
def test_objects_outside_the_grants_are_refused_even_to_owners(
    world: World, request_for: Any
) -> None:
    method, path, kwargs = request_for(world)
    r = world.call("owner", method, path, **kwargs)
    assert r.status_code == 403, r.text
    assert r.json()["error_code"] == "PERMISSION_DENIED"
    assert world.call("admin", method, path, **kwargs).status_code in (200, 404)


def test_registering_a_version_needs_read_access_to_its_source(world: World) -> None:
    """Registering a hidden run's files would hand them to the model's readers."""
    body = {
        "name": world.model,
        "source": f"runs:/{world.hidden_run_id}/model",
        "run_id": world.hidden_run_id,
    }
    r = world.call("owner", "POST", f"{API}/model-versions/create", json=body)
    assert r.status_code == 403, r.text
    # Naming the hidden run only in the source (no run_id field) is refused just the same.
    del body["run_id"]
    r = world.call("owner", "POST", f"{API}/model-versions/create", json=body)
    assert r.status_code == 403, r.text


def test_metrics_logged_to_a_hidden_logged_model_are_refused(world: World) -> None:
    hidden_model = world.new_logged_model(world.hidden_experiment_id)
    body = {
        "run_id": world.run_id,
        "metrics": [{"key": "x", "value": 1, "timestamp": 1, "step": 0, "model_id": hidden_model}],
    }
    r = world.call("editor", "POST", f"{API}/runs/log-batch", json=body)
    assert r.status_code == 403, r.text


def test_a_renamed_object_cannot_escape_into_a_name_without_grants(world: World) -> None:
    body = {"name": world.new_model("escape"), "new_name": f"elsewhere-{world.u}-escaped"}
    r = world.call("owner", "POST", f"{API}/registered-models/rename", json=body)
    assert r.status_code == 403, r.text


def test_model_readers_may_download_the_files_of_registered_versions(world: World) -> None:
    """Loading models:/name/Production fetches files under the experiment's artifact root."""
    reader = world.fresh("model-only")
    world.create_user(reader)
    world.grant(reader, "registered_model", world.model, "reader")
    client = world.client_for(reader, "a-long-enough-password")
    try:
        uri = client.get(
            f"{API}/model-versions/get-download-uri",
            params={"name": world.model, "version": world.version},
        ).json()["artifact_uri"]
        root = uri.removeprefix("mlflow-artifacts:/")
        assert client.get(f"{ARTIFACTS}/artifacts/{root}/MLmodel").content == b"flavors: {}"
        assert client.get(f"{ARTIFACTS}/artifacts", params={"path": root}).status_code == 200
        # ...but not the rest of the run's files, nor anything of the experiment.
        run_root = f"{world.experiment_id}/{world.run_id}/artifacts"
        assert client.get(f"{ARTIFACTS}/artifacts/{run_root}/a.txt").status_code == 403
        assert client.get(f"{API}/runs/get", params={"run_id": world.run_id}).status_code == 403
        assert client.put(f"{ARTIFACTS}/artifacts/{root}/new.txt", content=b"x").status_code == 403
    finally:
        client.close()


# --- gates, decisions and approvals: one visibility scope ------------------------------------
#
# Each signed-in principal sees exactly the gates, decisions and approval requests of the
# models it may read (VISIBLE_MODELS); anything else answers 404 as if it did not exist.

SCOPED = [who for who in LEVELS if who != "anonymous"] + ["ci"]


def _ids(world: World, who: str, route: str, key: str, field: str, **params: Any) -> set[str]:
    """Every id a principal gets from a list route, following page tokens (2 per page)."""
    found: list[str] = []
    token = None
    for _ in range(100):
        query = {**params, "max_results": 2, **({"page_token": token} if token else {})}
        r = world.call(who, "GET", f"{MLGATE}/{route}", params=query)
        assert r.status_code == 200, (who, route, r.text)
        body = r.json()
        page = [str(item[field]) for item in body.get(key, [])]
        token = body.get("next_page_token")
        if token:
            assert len(page) == 2, (who, route, "a short page before the end", body)
        found.extend(page)
        if not token:
            break
    assert len(found) == len(set(found)), (who, route, "an item on two pages", found)
    return set(found)


def _not_found(r: Any, who: str) -> None:
    assert r.status_code == 404, (who, r.status_code, r.text)
    assert r.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST", (who, r.text)


def _world_only(world: World, who: str, found: set[str], every: set[str]) -> set[str]:
    """The items of this world (the admin also sees other tests' objects)."""
    return found & every if who == "admin" else found


@pytest.mark.parametrize("who", SCOPED)
def test_gate_lists_show_each_principal_exactly_the_gates_of_models_it_may_read(
    world: World, gates_world: GatesWorld, who: str
) -> None:
    every = set(gates_world.gates)
    listed = _ids(world, who, "gates/list", "gates", "name")
    expected = gates_world.gates_of(VISIBLE_MODELS[who])
    if who == "admin":
        expected = every  # including the glob gate that matches no model
    assert _world_only(world, who, listed, every) == expected


@pytest.mark.parametrize("who", SCOPED)
def test_gate_get_and_versions_answer_404_for_gates_the_principal_cannot_see(
    world: World, gates_world: GatesWorld, who: str
) -> None:
    visible = gates_world.gates_of(VISIBLE_MODELS[who])
    for gate in gates_world.gates:
        seen = who == "admin" or gate in visible
        got = world.call(who, "GET", f"{MLGATE}/gates/get", params={"name": gate})
        versions = world.call(who, "GET", f"{MLGATE}/gates/versions", params={"name": gate})
        if seen:
            assert got.status_code == 200 and got.json()["gate"]["name"] == gate, got.text
            assert versions.status_code == 200 and len(versions.json()["versions"]) == 1
        else:
            _not_found(got, who)
            _not_found(versions, who)
            missing = world.call(
                who, "GET", f"{MLGATE}/gates/get", params={"name": f"{gate}-missing"}
            )
            assert got.json()["message"] == missing.json()["message"].replace("-missing", "")


@pytest.mark.parametrize("who", SCOPED)
def test_decision_lists_and_gets_show_only_decisions_on_readable_models(
    world: World, gates_world: GatesWorld, who: str
) -> None:
    every = set(gates_world.decisions)
    expected = gates_world.decisions_of(VISIBLE_MODELS[who])
    listed = _ids(world, who, "gates/decisions/list", "decisions", "decision_id")
    assert _world_only(world, who, listed, every) == expected
    hidden_model = gates_world.models["hidden"]
    by_model = _ids(
        world, who, "gates/decisions/list", "decisions", "decision_id", model=hidden_model
    )
    assert by_model == (
        gates_world.decisions_of(frozenset({"hidden"})) if who == "admin" else set()
    )
    for decision_id in every:
        r = world.call(
            who, "GET", f"{MLGATE}/gates/decisions/get", params={"decision_id": decision_id}
        )
        if decision_id in expected:
            assert r.status_code == 200 and r.json()["decision"]["decision_id"] == decision_id
        else:
            _not_found(r, who)


@pytest.mark.parametrize("who", SCOPED)
def test_approval_lists_and_gets_show_only_requests_on_readable_models(
    world: World, gates_world: GatesWorld, who: str
) -> None:
    every = set(gates_world.requests)
    expected = gates_world.requests_of(VISIBLE_MODELS[who])
    for status in (None, "pending"):
        params = {"status": status} if status else {}
        listed = _ids(world, who, "approvals/list", "approval_requests", "request_id", **params)
        assert _world_only(world, who, listed, every) == expected, status
    for request_id in every:
        r = world.call(who, "GET", f"{MLGATE}/approvals/get", params={"request_id": request_id})
        if request_id in expected:
            assert r.status_code == 200 and r.json()["approval_request"]["request_id"] == request_id
        else:
            _not_found(r, who)


@pytest.mark.parametrize("who", SCOPED)
def test_commenting_needs_approver_rights_and_hidden_requests_are_not_found(
    world: World, gates_world: GatesWorld, who: str
) -> None:
    for request_id, label in gates_world.requests.items():
        body = {"request_id": request_id, "comment": f"note from {who}"}
        r = world.call(who, "POST", f"{MLGATE}/approvals/comment", json=body)
        if label not in VISIBLE_MODELS[who]:
            _not_found(r, who)
        elif who in APPROVERS[label]:
            assert r.status_code == 200, (who, r.text)
            actions = r.json()["approval_request"]["actions"]
            assert actions[-1]["kind"] == "comment" and actions[-1]["comment"] == body["comment"]
        else:
            assert r.status_code == 403, (who, r.text)
            assert r.json()["error_code"] == "PERMISSION_DENIED"


@pytest.mark.parametrize("action", ["approve", "reject", "cancel"])
@pytest.mark.parametrize("who", [w for w in SCOPED if w != "admin"])
def test_acting_on_a_request_the_principal_cannot_see_answers_404(
    world: World, gates_world: GatesWorld, who: str, action: str
) -> None:
    """Not a 403 that would confirm the request exists; and nothing changes."""
    for request_id, label in gates_world.requests.items():
        if label in VISIBLE_MODELS[who]:
            continue
        body = {"request_id": request_id, "comment": "probe"}
        _not_found(world.call(who, "POST", f"{MLGATE}/approvals/{action}", json=body), who)
        state = world.admin_json(
            "GET", f"{MLGATE}/approvals/get", params={"request_id": request_id}
        )
        assert state["approval_request"]["status"] == "pending"


@pytest.mark.parametrize("who", ["nobody", "outsider", "reader"])
def test_a_token_without_rights_cannot_tell_whether_a_gate_guards_a_target(
    world: World, gates_world: GatesWorld, who: str
) -> None:
    """The CI webhook with a Bearer token: refused alike where a gate exists and where none
    does, so probing it does not reveal another team's gates."""
    token = world.call(who, "POST", f"{MLGATE}/tokens/create", json={"name": world.fresh("probe")})
    assert token.status_code == 200, token.text
    bearer = {"Authorization": f"Bearer {token.json()['secret']}"}
    answers = []
    for model, target in (
        (gates_world.models["hidden"], "Production"),  # guarded by a gate
        (gates_world.models["hidden"], "@unguarded"),  # no gate
        (gates_world.models["team"], "Production"),  # guarded; a reader may not promote
    ):
        body = {"model": model, "target": target, "version": "1", "idempotency_key": "probe"}
        r = httpx.post(
            f"{world.server.url}{MLGATE}/gates/promote", json=body, headers=bearer, timeout=60
        )
        answers.append((r.status_code, r.json()["error_code"]))
    assert answers == [(403, "PERMISSION_DENIED")] * 3, answers
