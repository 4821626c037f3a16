"""A live mlgate server with authentication on, and the users, grants and objects the auth
tests share: one per principal kind, from anonymous to administrator.

Principals, by level (each passes every check the ones before it pass):

- ``anonymous``: no credentials;
- ``outsider``: authenticated, with grants on unrelated names only;
- ``reader`` / ``editor`` / ``approver`` / ``owner``: that role (``owner`` = the ``admin``
  grant role) on the experiments ``team-<u>-*`` and the registered models ``model-<u>-*``;
- ``admin``: an administrator user (bypasses grants).

``ci`` is an approver whose promotions are limited to Staging and ``@candidate``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import LiveServer, start_server

ADMIN_USER = "root"
ADMIN_PASSWORD = "root-password-for-tests"
PASSWORD = "a-long-enough-password"
LEVELS = ("anonymous", "outsider", "reader", "editor", "approver", "owner", "admin")
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
    for level in ("outsider", *roles, "ci"):
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
