"""Seed data of the browser tests, made through the REST API like a real team would make it.

A data scientist logs ~30 runs to ``lab-fraud`` (params, metric histories, one long history,
artifacts on the best run), the registry holds ``fraud-detector`` with version 1 in Production,
a gate guards its Production stage (metric threshold, champion comparison, one approval), and CI
opens two approval requests through the signed webhook: version 2 of ``fraud-detector``
requested by ``scientist`` (a claim), and version 1 of ``fraud-scorer`` promoted by ``approver``
with their own credentials (so the approver's own request can be refused).
"""

from __future__ import annotations

import json
import random
import struct
import time
import uuid
import zlib
from dataclasses import dataclass, field
from typing import Any

import httpx

from gates.policies.signatures import signed_headers

API = "/api/2.0/mlflow"
MLGATE = "/api/2.0/mlgate"
ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts"

USERS = ("scientist", "approver", "approver2", "reader")
PASSWORDS = {name: f"{name}-browser-password-1" for name in USERS}
EXPERIMENT = "lab-fraud"
MODEL = "fraud-detector"
SECOND_MODEL = "fraud-scorer"
BEST_RUN = "best-run"
RUNNER_UP = "runner-up"
CHAMPION_RUN = "champion-run"
LONG_RUN = "long-history"
LONG_STEPS = 20_000
SHORT_STEPS = 200
RUN_COUNT = 30
PNG_SIZE = (64, 48)
BEST_ACCURACY = 0.971
NOTES = "Trained on the March snapshot.\nThreshold tuned for 1% false positives.\n"
MLMODEL = (
    "artifact_path: model\n"
    "flavors:\n"
    "  python_function:\n"
    "    loader_module: mlflow.sklearn\n"
    "    python_version: 3.11.9\n"
    "  sklearn:\n"
    "    sklearn_version: 1.5.0\n"
    "model_uuid: 0f1e2d3c4b5a\n"
)


def tiny_png(width: int = PNG_SIZE[0], height: int = PNG_SIZE[1]) -> bytes:
    """The bytes of a small valid RGB PNG (a red-to-blue gradient)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    def pixel(x: int, y: int) -> bytes:
        across, down = 255 * x // (width - 1), 255 * y // (height - 1)
        return bytes((255 - across, down // 2, across))

    rows = b"".join(b"\x00" + b"".join(pixel(x, y) for x in range(width)) for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


@dataclass
class RunSeed:
    run_id: str
    name: str
    accuracy: float
    params: dict[str, str]


@dataclass
class Seed:
    """What the tests need to know about the seeded world."""

    url: str
    experiment_id: str = ""
    runs: dict[str, RunSeed] = field(default_factory=dict)  # by run name
    model_request_id: str = ""  # fraud-detector v2 -> Production, requested by scientist
    own_request_id: str = ""  # fraud-scorer v1 -> Production, requested by approver
    candidate_version: str = "2"
    subscription_id: str = ""

    def run(self, name: str) -> RunSeed:
        return self.runs[name]

    @property
    def best(self) -> RunSeed:
        return self.runs[BEST_RUN]

    def accuracies_above(self, threshold: float) -> list[RunSeed]:
        return [r for r in self.runs.values() if r.accuracy > threshold]


class Api:
    """A signed-in REST client that fails loudly on anything but the expected status."""

    def __init__(self, base_url: str, username: str, password: str) -> None:
        self.client = httpx.Client(base_url=base_url, auth=(username, password), timeout=60)

    def call(self, method: str, path: str, *, expect: int = 200, **kwargs: Any) -> Any:
        r = self.client.request(method, path, **kwargs)
        assert r.status_code == expect, (method, path, r.status_code, r.text[:2000])
        return r.json() if r.content else None

    def close(self) -> None:
        self.client.close()


def _now_ms() -> int:
    return int(time.time() * 1000)


def _log_batch(api: Api, run_id: str, **fields: list[dict[str, Any]]) -> None:
    api.call("POST", f"{API}/runs/log-batch", json={"run_id": run_id, **fields})


def _history(final: float, steps: int, *, rising: bool, seed: int) -> list[float]:
    """A noisy curve that ends exactly on ``final`` (so the latest value is what we expect)."""
    rnd = random.Random(seed)
    start = 0.3 if rising else 2.5
    values = []
    for step in range(steps):
        frac = (step + 1) / steps
        shape = 1 - (1 - frac) ** 3
        values.append(start + (final - start) * shape + rnd.uniform(-0.01, 0.01) * (1 - frac))
    values[-1] = final
    return values


def _log_history(api: Api, run_id: str, key: str, values: list[float], t0: int) -> None:
    batch = [
        {"key": key, "value": v, "timestamp": t0 + step, "step": step}
        for step, v in enumerate(values)
    ]
    for start in range(0, len(batch), 1000):  # MLflow's log-batch limit
        _log_batch(api, run_id, metrics=batch[start : start + 1000])


def _put(api: Api, experiment_id: str, run_id: str, path: str, data: bytes) -> None:
    api.call("PUT", f"{ARTIFACTS}/{experiment_id}/{run_id}/artifacts/{path}", content=data)


def _create_run(
    api: Api, experiment_id: str, name: str, index: int, *, accuracy: float, history: int
) -> RunSeed:
    t0 = _now_ms() - (RUN_COUNT - index) * 60_000
    params = {
        "lr": f"{[0.001, 0.003, 0.01, 0.03, 0.1][index % 5]}",
        "depth": str(3 + index % 6),
        "optimizer": ["adam", "sgd", "rmsprop"][index % 3],
    }
    run = api.call(
        "POST",
        f"{API}/runs/create",
        json={"experiment_id": experiment_id, "run_name": name, "start_time": t0},
    )["run"]["info"]
    run_id = str(run["run_id"])
    loss = round(1.2 - accuracy, 4)
    tags = [
        {"key": "team", "value": "fraud"},
        {"key": "history", "value": str(history) if history > 1 else "none"},
        {"key": "mlflow.source.git.commit", "value": f"{index:02d}a1b2c3d4e5f6"},
    ]
    _log_batch(
        api,
        run_id,
        params=[{"key": k, "value": v} for k, v in params.items()],
        tags=tags,
    )
    if history > 1:
        _log_history(
            api, run_id, "accuracy", _history(accuracy, history, rising=True, seed=index), t0
        )
        _log_history(
            api, run_id, "loss", _history(loss, history, rising=False, seed=index + 99), t0
        )
    else:
        metrics = [
            {"key": "accuracy", "value": accuracy, "timestamp": t0, "step": 0},
            {"key": "loss", "value": loss, "timestamp": t0, "step": 0},
        ]
        _log_batch(api, run_id, metrics=metrics)
    return RunSeed(run_id, name, accuracy, params)


def _finish(api: Api, run_id: str) -> None:
    api.call(
        "POST",
        f"{API}/runs/update",
        json={"run_id": run_id, "status": "FINISHED", "end_time": _now_ms()},
    )


def _promote(api: Api, secret: str, body: dict[str, Any], expect: int) -> dict[str, Any]:
    raw = json.dumps(body).encode()
    headers = signed_headers(secret, f"msg_{uuid.uuid4().hex}", int(time.time()), raw)
    headers["content-type"] = "application/json"
    answer: dict[str, Any] = api.call(
        "POST", f"{MLGATE}/gates/promote", content=raw, headers=headers, expect=expect
    )
    return answer


def _gate(admin: Api, name: str, model: str, **rules: Any) -> str:
    admin.call(
        "POST",
        f"{MLGATE}/gates/create",
        json={"name": name, "model": model, "target": "Production", **rules},
    )
    secret: str = admin.call("POST", f"{MLGATE}/gates/secrets/add", json={"gate": name})["secret"][
        "secret"
    ]
    return secret


def seed_world(url: str, admin_user: str, admin_password: str, hook_url: str | None) -> Seed:
    """Create everything through the API; returns the ids the tests look for."""
    seed = Seed(url=url)
    admin = Api(url, admin_user, admin_password)
    clients = [admin]
    try:
        for name in USERS:
            admin.call(
                "POST",
                f"{MLGATE}/users/create",
                json={"username": name, "password": PASSWORDS[name]},
            )
        grants = [
            ("scientist", "experiment", "lab-*", "editor"),
            ("scientist", "registered_model", "fraud-*", "editor"),
            ("approver", "experiment", "lab-*", "reader"),
            ("approver", "registered_model", "fraud-*", "approver"),
            ("approver2", "experiment", "lab-*", "reader"),
            ("approver2", "registered_model", "fraud-*", "approver"),
            ("reader", "experiment", "lab-*", "reader"),
            ("reader", "registered_model", "fraud-*", "reader"),
        ]
        for user, kind, pattern, role in grants:
            admin.call(
                "POST",
                f"{MLGATE}/grants/create",
                json={"username": user, "resource_type": kind, "pattern": pattern, "role": role},
            )
        if hook_url:
            events = [
                "model_version.created",
                "stage.transitioned",
                "alias.moved",
                "gate.decided",
                "approval.requested",
                "approval.approved",
            ]
            seed.subscription_id = admin.call(
                "POST",
                f"{MLGATE}/subscriptions",
                json={"name": "release-bot", "url": hook_url, "events": events},
            )["subscription"]["id"]

        scientist = Api(url, "scientist", PASSWORDS["scientist"])
        clients.append(scientist)
        seed.experiment_id = str(
            scientist.call("POST", f"{API}/experiments/create", json={"name": EXPERIMENT})[
                "experiment_id"
            ]
        )
        rnd = random.Random(7)
        # Special runs first, then the crowd; accuracies of the crowd stay below the runner-up
        # and about a third fall under 0.5, so the filter has something to remove.
        special = {
            BEST_RUN: (BEST_ACCURACY, SHORT_STEPS),
            RUNNER_UP: (0.944, SHORT_STEPS),
            CHAMPION_RUN: (0.931, SHORT_STEPS),
            LONG_RUN: (0.902, LONG_STEPS),
        }
        names = list(special) + [f"trial-{i:02d}" for i in range(RUN_COUNT - len(special))]
        for index, name in enumerate(names):
            accuracy, history = special.get(name, (0.0, 1))
            if name not in special:
                accuracy = round(rnd.uniform(0.31, 0.89), 3)
                history = SHORT_STEPS if index % 9 == 0 else 1
            seed.runs[name] = _create_run(
                scientist, seed.experiment_id, name, index, accuracy=accuracy, history=history
            )

        best = seed.best.run_id
        png = tiny_png()
        files = {
            "notes.txt": NOTES.encode(),
            "metrics.json": json.dumps({"accuracy": BEST_ACCURACY, "threshold": 0.42}).encode(),
            "plots/roc.png": png,
            "model/MLmodel": MLMODEL.encode(),
            "model/requirements.txt": b"scikit-learn==1.5.0\n",
        }
        for path, data in files.items():
            _put(scientist, seed.experiment_id, best, path, data)
        scientist.call(
            "POST",
            f"{API}/runs/log-inputs",
            json={
                "run_id": best,
                "datasets": [
                    {
                        "tags": [{"key": "mlflow.data.context", "value": "training"}],
                        "dataset": {
                            "name": "transactions-2024-03",
                            "digest": "9f2c1e7a",
                            "source_type": "s3",
                            "source": '{"uri": "s3://fraud-data/2024-03/"}',
                        },
                    }
                ],
            },
        )
        for name in (CHAMPION_RUN, RUNNER_UP):
            run_id = seed.run(name).run_id
            _put(scientist, seed.experiment_id, run_id, "model/MLmodel", MLMODEL.encode())
        for run in seed.runs.values():
            _finish(scientist, run.run_id)

        # fraud-detector: version 1 (the champion) goes to Production before the gate exists.
        admin.call("POST", f"{API}/registered-models/create", json={"name": MODEL})
        champion = seed.run(CHAMPION_RUN).run_id
        admin.call(
            "POST",
            f"{API}/model-versions/create",
            json={"name": MODEL, "source": f"runs:/{champion}/model", "run_id": champion},
        )
        admin.call(
            "POST",
            f"{API}/model-versions/transition-stage",
            json={"name": MODEL, "version": "1", "stage": "Production"},
        )
        admin.call(
            "POST",
            f"{API}/registered-models/alias",
            json={"name": MODEL, "alias": "champion", "version": "1"},
        )
        secret = _gate(
            admin,
            "fraud-detector-production",
            MODEL,
            metrics=["accuracy >= 0.9"],
            champion={"metric": "accuracy", "higher_is_better": True, "min_improvement": 0.01},
            required_approvals=1,
        )
        decision = _promote(
            admin,
            secret,
            {
                "model": MODEL,
                "run_id": best,
                "target": "Production",
                "idempotency_key": f"seed-{best}",
                "requested_by": "scientist",
            },
            expect=202,
        )
        assert decision["outcome"] == "pending_approval", decision
        assert decision["version"] == seed.candidate_version, decision
        seed.model_request_id = decision["approval_request_id"]

        # fraud-scorer: a request the approver opened themselves.
        admin.call("POST", f"{API}/registered-models/create", json={"name": SECOND_MODEL})
        scorer_secret = _gate(
            admin,
            "fraud-scorer-production",
            SECOND_MODEL,
            metrics=["accuracy >= 0.5"],
            required_approvals=1,
        )
        runner_up = seed.run(RUNNER_UP).run_id
        assert scorer_secret
        # The approver promotes with their own credentials, so they are the requester (a
        # ``requested_by`` in a signed body would only be a claim, barring nobody).
        approver = Api(url, "approver", PASSWORDS["approver"])
        clients.append(approver)
        own = approver.call(
            "POST",
            f"{MLGATE}/gates/promote",
            json={
                "model": SECOND_MODEL,
                "run_id": runner_up,
                "target": "Production",
                "idempotency_key": f"seed-{runner_up}",
            },
            expect=202,
        )
        assert own["outcome"] == "pending_approval", own
        seed.own_request_id = own["approval_request_id"]
        return seed
    finally:
        for client in clients:
            client.close()


def model_version(url: str, admin_user: str, admin_password: str, name: str, version: str) -> Any:
    api = Api(url, admin_user, admin_password)
    try:
        return api.call(
            "GET", f"{API}/model-versions/get", params={"name": name, "version": version}
        )["model_version"]
    finally:
        api.close()


def approval_request(url: str, admin_user: str, admin_password: str, request_id: str) -> Any:
    api = Api(url, admin_user, admin_password)
    try:
        return api.call("GET", f"{MLGATE}/approvals/get", params={"request_id": request_id})
    finally:
        api.close()
