"""A live mlgate server with authentication on, and the users, grants and objects the auth
tests share: one per principal kind, from anonymous to administrator.

Principals, by level (each passes every check the ones before it pass):

- ``anonymous``: no credentials;
- ``nobody``: authenticated, with no grants at all;
- ``outsider``: authenticated, with grants on unrelated names only;
- ``reader`` / ``editor`` / ``approver`` / ``owner``: that role (``owner`` = the ``admin``
  grant role) on the experiments ``team-<u>-*`` and the registered models ``model-<u>-*``;
- ``admin``: an administrator user (bypasses grants).

``ci`` is an approver whose promotions are limited to Staging and ``@candidate``.

:func:`build_gates_world` adds gates, decisions and approval requests on three models: one
the team may read (``model-<u>-gated-*``), one only the outsider may read, one nobody but
the administrator may read.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import msgspec

from tests.conftest import LiveServer, start_server
from tests.gates.factories import signed

ADMIN_USER = "root"
ADMIN_PASSWORD = "root-password-for-tests"
PASSWORD = "a-long-enough-password"
LEVELS = ("anonymous", "nobody", "outsider", "reader", "editor", "approver", "owner", "admin")
API = "/api/2.0/mlflow"
MLGATE = "/api/2.0/mlgate"
ARTIFACTS = "/api/2.0/mlflow-artifacts"


def auth_env() -> dict[str, str]:
    return {
        "MLGATE_AUTH": "true",
        "MLGATE_ADMIN_USERNAME": ADMIN_USER,
        "MLGATE_ADMIN_PASSWORD": ADMIN_PASSWORD,
    }


def start_auth_server(database_url: str, workdir: Path) -> LiveServer:
    return start_server(database_url, workdir, extra_env=auth_env())


@dataclass
class World:
    server: LiveServer
    u: str  # unique suffix of every name this world creates
    clients: dict[str, httpx.Client] = field(default_factory=dict)
    passwords: dict[str, str] = field(default_factory=dict)
    # objects every principal at or above reader can see
    experiment_id: str = ""
    experiment_name: str = ""
    run_id: str = ""
    logged_model_id: str = ""
    model: str = ""
    version: str = ""
    # objects nobody but the admin can see
    hidden_experiment_id: str = ""
    hidden_run_id: str = ""
    hidden_model: str = ""
    counter: int = 0

    @property
    def admin(self) -> httpx.Client:
        return self.clients["admin"]

    def fresh(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}-{self.u}-{self.counter}"

    def experiment_name_for(self, label: str) -> str:
        return self.fresh(f"team-{self.u}-{label}")

    def model_name_for(self, label: str) -> str:
        return self.fresh(f"model-{self.u}-{label}")

    # -- admin-made fixtures -------------------------------------------------------------------

    def call(self, who: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self.clients[who].request(method, path, **kwargs)

    def admin_json(self, method: str, path: str, **kwargs: Any) -> Any:
        r = self.admin.request(method, path, **kwargs)
        assert r.status_code == 200, (path, r.status_code, r.text)
        return r.json()

    def new_experiment(self, label: str = "exp") -> str:
        name = self.experiment_name_for(label)
        return str(
            self.admin_json("POST", f"{API}/experiments/create", json={"name": name})[
                "experiment_id"
            ]
        )

    def new_run(self, experiment_id: str | None = None) -> str:
        body = {"experiment_id": experiment_id or self.experiment_id, "start_time": 1}
        return str(
            self.admin_json("POST", f"{API}/runs/create", json=body)["run"]["info"]["run_id"]
        )

    def new_logged_model(self, experiment_id: str | None = None) -> str:
        body = {"experiment_id": experiment_id or self.experiment_id, "name": "model"}
        return str(
            self.admin_json("POST", f"{API}/logged-models", json=body)["model"]["info"]["model_id"]
        )

    def new_model(self, label: str = "m") -> str:
        name = self.model_name_for(label)
        self.admin_json("POST", f"{API}/registered-models/create", json={"name": name})
        return name

    def new_version(self, model: str | None = None, run_id: str | None = None) -> str:
        run = run_id or self.new_run()
        body = {"name": model or self.model, "source": f"runs:/{run}/model", "run_id": run}
        return str(
            self.admin_json("POST", f"{API}/model-versions/create", json=body)["model_version"][
                "version"
            ]
        )

    def put_artifact(self, path: str, content: bytes = b"x") -> None:
        r = self.admin.put(f"{ARTIFACTS}/artifacts/{path}", content=content)
        assert r.status_code == 200, r.text

    def transition(self, model: str, version: str, stage: str) -> None:
        body = {"name": model, "version": version, "stage": stage}
        self.admin_json("POST", f"{API}/model-versions/transition-stage", json=body)

    def set_alias(self, model: str, alias: str, version: str) -> None:
        body = {"name": model, "alias": alias, "version": version}
        self.admin_json("POST", f"{API}/registered-models/alias", json=body)

    def create_user(self, name: str, password: str | None = PASSWORD) -> None:
        body: dict[str, Any] = {"username": name}
        if password is not None:
            body["password"] = password
        self.admin_json("POST", f"{MLGATE}/users/create", json=body)

    def grant(
        self,
        user: str,
        resource_type: str,
        pattern: str,
        role: str,
        targets: list[str] | None = None,
    ) -> str:
        body: dict[str, Any] = {
            "username": user,
            "resource_type": resource_type,
            "pattern": pattern,
            "role": role,
        }
        if targets is not None:
            body["targets"] = targets
        return str(
            self.admin_json("POST", f"{MLGATE}/grants/create", json=body)["grant"]["grant_id"]
        )

    def client_for(self, username: str, password: str) -> httpx.Client:
        return httpx.Client(base_url=self.server.url, auth=(username, password), timeout=60)

    def close(self) -> None:
        for client in self.clients.values():
            client.close()


def build_world(server: LiveServer) -> World:
    u = uuid.uuid4().hex[:6]
    world = World(server=server, u=u)
    world.clients["anonymous"] = httpx.Client(base_url=server.url, timeout=60)
    world.clients["admin"] = world.client_for(ADMIN_USER, ADMIN_PASSWORD)
    roles = {"reader": "reader", "editor": "editor", "approver": "approver", "owner": "admin"}
    for level in ("nobody", "outsider", *roles, "ci"):
        name = f"{level}-{u}"
        world.create_user(name)
        world.clients[level] = world.client_for(name, PASSWORD)
    for level, role in roles.items():
        world.grant(f"{level}-{u}", "experiment", f"team-{u}-*", role)
        world.grant(f"{level}-{u}", "registered_model", f"model-{u}-*", role)
    world.grant(f"outsider-{u}", "experiment", f"elsewhere-{u}-*", "admin")
    world.grant(f"outsider-{u}", "registered_model", f"elsewhere-{u}-*", "admin")
    world.grant(f"ci-{u}", "experiment", f"team-{u}-*", "editor")
    world.grant(
        f"ci-{u}", "registered_model", f"model-{u}-*", "approver", ["Staging", "@candidate"]
    )

    world.experiment_id = world.new_experiment("main")
    world.experiment_name = str(
        world.admin_json(
            "GET", f"{API}/experiments/get", params={"experiment_id": world.experiment_id}
        )["experiment"]["name"]
    )
    world.run_id = world.new_run()
    world.admin_json(
        "POST",
        f"{API}/runs/log-metric",
        json={"run_id": world.run_id, "key": "m", "value": 1.0, "timestamp": 1, "step": 0},
    )
    world.logged_model_id = world.new_logged_model()
    world.put_artifact(f"{world.experiment_id}/{world.run_id}/artifacts/a.txt", b"alpha")
    world.put_artifact(
        f"{world.experiment_id}/{world.run_id}/artifacts/model/MLmodel", b"flavors: {}"
    )
    world.model = world.new_model("main")
    world.version = world.new_version(world.model, world.run_id)
    world.set_alias(world.model, "champion", world.version)

    hidden_name = f"hidden-{u}"
    world.hidden_experiment_id = str(
        world.admin_json("POST", f"{API}/experiments/create", json={"name": hidden_name})[
            "experiment_id"
        ]
    )
    world.hidden_run_id = world.new_run(world.hidden_experiment_id)
    world.put_artifact(
        f"{world.hidden_experiment_id}/{world.hidden_run_id}/artifacts/s.txt", b"secret"
    )
    world.hidden_model = f"secret-model-{u}"
    world.admin_json("POST", f"{API}/registered-models/create", json={"name": world.hidden_model})
    return world


# --- gates, decisions and approval requests ------------------------------------------------------

# Which of the gates world's models (by label) each principal may read.
VISIBLE_MODELS = {
    "nobody": frozenset(),
    "outsider": frozenset({"other"}),
    "reader": frozenset({"team"}),
    "editor": frozenset({"team"}),
    "approver": frozenset({"team"}),
    "owner": frozenset({"team"}),
    "ci": frozenset({"team"}),
    "admin": frozenset({"team", "other", "hidden"}),
}
# Who may act on a request (approver role or higher on the model for Production, or admin).
APPROVERS = {
    "team": frozenset({"approver", "owner", "admin"}),
    "other": frozenset({"outsider", "admin"}),
    "hidden": frozenset({"admin"}),
}


@dataclass
class GatesWorld:
    """Per model label (``team``, ``other``, ``hidden``): the model, its gates by name with the
    label they belong to, its decisions and its approval requests."""

    models: dict[str, str] = field(default_factory=dict)
    gates: dict[str, str] = field(default_factory=dict)  # gate name -> label ("" = no model)
    decisions: dict[str, str] = field(default_factory=dict)  # decision id -> label
    requests: dict[str, str] = field(default_factory=dict)  # request id -> label

    def gates_of(self, labels: frozenset[str]) -> set[str]:
        return {g for g, label in self.gates.items() if label in labels}

    def decisions_of(self, labels: frozenset[str]) -> set[str]:
        return {d for d, label in self.decisions.items() if label in labels}

    def requests_of(self, labels: frozenset[str]) -> set[str]:
        return {r for r, label in self.requests.items() if label in labels}


def _gate(world: World, gw: GatesWorld, label: str, model: str, target: str, **rules: Any) -> str:
    name = world.fresh(f"vis-{label}")
    body = {
        "name": name,
        "model": model,
        "target": target,
        "require_finished": False,
        "require_digest": False,
        **rules,
    }
    world.admin_json("POST", f"{MLGATE}/gates/create", json=body)
    gw.gates[name] = label if label in ("team", "other", "hidden") else ""
    return name


def _signed_promote(world: World, gate: str, body: dict[str, Any]) -> dict[str, Any]:
    secret = world.admin_json("POST", f"{MLGATE}/gates/secrets/add", json={"gate": gate})
    raw = msgspec.json.encode(body)
    headers = {**signed(secret["secret"]["secret"], raw), "content-type": "application/json"}
    r = httpx.post(
        f"{world.server.url}{MLGATE}/gates/promote", content=raw, headers=headers, timeout=60
    )
    assert r.status_code in (200, 202), r.text
    return dict(r.json())


def build_gates_world(world: World) -> GatesWorld:
    """Gates on each model (an exact Production gate needing one approval; glob and class
    patterns), one passed Staging promotion of the team model and a pending approval request
    per gated version (two on the team model, so its list pages)."""
    u = world.u
    gw = GatesWorld()
    gw.models = {
        "team": world.model_name_for("gated"),
        "other": world.fresh(f"elsewhere-{u}-gated"),
        "hidden": f"hidden-gated-{u}",
    }
    for label, model in gw.models.items():
        world.admin_json("POST", f"{API}/registered-models/create", json={"name": model})
        versions = 2 if label == "team" else 1
        exact = _gate(world, gw, label, model, "Production", required_approvals=1)
        for _ in range(versions):
            version = world.new_version(model, world.run_id)
            body = {
                "model": model,
                "version": version,
                "target": "Production",
                "idempotency_key": world.fresh("vis"),
                "requested_by": "ci-bot",
            }
            answer = _signed_promote(world, exact, body)
            assert answer["outcome"] == "pending_approval", answer
            gw.decisions[answer["decision_id"]] = label
            gw.requests[answer["approval_request_id"]] = label
    # Glob gates are seen by those who may read a model they match.
    team_glob = _gate(world, gw, "team", f"model-{u}-gated-*", "Staging")
    _gate(world, gw, "team", f"model-{u}-gate[d]-*", "@vis")
    _gate(world, gw, "hidden", f"hidden-gated-{u}*", "Staging")
    _gate(world, gw, "none", f"nothing-{u}-*", "Staging")
    passed = _signed_promote(
        world,
        team_glob,
        {
            "model": gw.models["team"],
            "version": "1",
            "target": "Staging",
            "idempotency_key": world.fresh("vis"),
        },
    )
    assert passed["outcome"] == "passed", passed
    gw.decisions[passed["decision_id"]] = "team"
    return gw
