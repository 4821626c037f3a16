"""Closed means closed (issue 12, case 5): replaying a promotion whose approval request was
closed reports that state, with its own exit code, and ``--reopen`` asks again."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import httpx
import mlflow
import msgspec
import pytest
from sqlalchemy import text

from tests.conftest import REPO_ROOT, LiveServer
from tests.gates.factories import signed

pytestmark = pytest.mark.compat
MLGATE = "/api/2.0/mlgate"
EXIT_CODES = {"expired": 4, "rejected": 5, "cancelled": 6, "failed": 7}


def _mlgate(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gates.server", *args],
        cwd=REPO_ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


class Promotion:
    """A gated Production target needing one approval, a run, and the promote call."""

    def __init__(self, server: LiveServer, unique: str) -> None:
        self.server = server
        self.model = f"closed-{unique}"
        gate = f"{self.model}-prod"
        created = httpx.post(
            f"{server.url}{MLGATE}/gates/create",
            json={
                "name": gate,
                "model": self.model,
                "target": "Production",
                "required_approvals": 1,
                "metrics": ["val_auc >= 0.9"],
            },
        )
        assert created.status_code == 200, created.text
        added = httpx.post(f"{server.url}{MLGATE}/gates/secrets/add", json={"gate": gate})
        self.secret = added.json()["secret"]["secret"]
        mlflow.set_experiment(f"closed-{unique}")
        with mlflow.start_run() as run:
            mlflow.log_metric("val_auc", 0.95)
            mlflow.log_text("flavors: {}\n", "model/MLmodel")
        self.run_id = run.info.run_id

    def cli(self, *extra: str) -> subprocess.CompletedProcess[str]:
        return _mlgate(
            "promote",
            "--model",
            self.model,
            "--run",
            self.run_id,
            "--to",
            "Production",
            "--url",
            self.server.url,
            *extra,
            env={"MLGATE_GATE_SECRET": self.secret},
        )

    def http(self, **extra: Any) -> httpx.Response:
        body = {
            "model": self.model,
            "run_id": self.run_id,
            "target": "Production",
            "idempotency_key": "closed-key",
            **extra,
        }
        raw = msgspec.json.encode(body)
        headers = {**signed(self.secret, raw), "content-type": "application/json"}
        return httpx.post(
            f"{self.server.url}{MLGATE}/gates/promote", content=raw, headers=headers, timeout=60
        )

    def act(self, verb: str, request_id: str) -> httpx.Response:
        return httpx.post(
            f"{self.server.url}{MLGATE}/approvals/{verb}",
            json={"request_id": request_id, "comment": verb},
            timeout=60,
        )


async def _close(state: str, p: Promotion, request_id: str, database: Any) -> None:
    if state in ("rejected", "cancelled"):
        verb = "reject" if state == "rejected" else "cancel"
        assert p.act(verb, request_id).status_code == 200
    elif state == "expired":
        # Let the request's deadline pass (the clock is the only thing simulated here).
        async with database.write() as s:
            await s.execute(
                text("UPDATE approval_requests SET expires_at = 1 WHERE id = :id"),
                {"id": request_id},
            )
    else:  # failed: the run's metric regresses, so the final approval's re-evaluation refuses
        mlflow.MlflowClient().log_metric(p.run_id, "val_auc", 0.1)
        assert p.act("approve", request_id).status_code == 422


@pytest.mark.parametrize("state", ["rejected", "cancelled", "expired", "failed"])
async def test_replaying_a_promotion_whose_request_closed_reports_that_state(
    state: str,
    mlflow_tracking: str,
    live_server: LiveServer,
    database: Any,
    unique: str,
) -> None:
    p = Promotion(live_server, unique)
    first = p.http()
    assert first.status_code == 202, first.text
    request_id = first.json()["approval_request_id"]
    await _close(state, p, request_id, database)

    replay = p.http()
    assert replay.status_code == 409, replay.text
    body = replay.json()
    assert body["approval_request_id"] == request_id
    assert body["approval_status"] == state
    assert body["error_code"] == "APPROVAL_CLOSED" and state in body["message"]
    decision = httpx.get(
        f"{live_server.url}{MLGATE}/gates/decisions/get",
        params={"decision_id": body["decision_id"]},
    ).json()["decision"]
    assert decision["approval_status"] == state
    # The CLI's replay of the same key exits with the state's own code, also with
    # --allow-pending (which is about pending requests only).
    replayed = p.cli("--idempotency-key", "closed-key", "--allow-pending")
    assert replayed.returncode == EXIT_CODES[state], (replayed.stdout, replayed.stderr)
    assert f"status: {state}" in replayed.stdout

    # The UI shows the request's state, not a stale "pending approval".
    version = httpx.get(f"{live_server.url}/models/{p.model}/versions/1")
    assert version.status_code == 200
    assert f"approval {state}" in version.text
    assert ">pending approval<" not in version.text
    model_page = httpx.get(f"{live_server.url}/models/{p.model}")
    assert f"approval-{request_id}" not in model_page.text


async def test_reopen_asks_again_with_a_new_request_linked_to_the_closed_one(
    mlflow_tracking: str, live_server: LiveServer, database: Any, unique: str
) -> None:
    p = Promotion(live_server, unique)
    first = p.cli()
    assert first.returncode == 3, first.stderr
    old = httpx.get(f"{live_server.url}{MLGATE}/approvals/list", params={"model": p.model}).json()[
        "approval_requests"
    ][0]
    assert p.act("reject", old["request_id"]).status_code == 200
    assert p.cli().returncode == EXIT_CODES["rejected"]

    reopened = p.cli("--reopen", "--json")
    assert reopened.returncode == 3, reopened.stderr
    new = msgspec.json.decode(reopened.stdout)
    assert new["approval_request_id"] != old["request_id"]
    assert new["approval_status"] == "pending" and new["supersedes"] == old["decision_id"]
    previous = httpx.get(
        f"{live_server.url}{MLGATE}/gates/decisions/get",
        params={"decision_id": old["decision_id"]},
    ).json()["decision"]
    assert previous["superseded_by"] == new["decision_id"]
    assert previous["approval_status"] == "rejected"
    # A plain replay now follows the link to the newest decision; no version was added.
    again = p.cli("--json")
    assert again.returncode == 3
    assert msgspec.json.decode(again.stdout)["decision_id"] == new["decision_id"]
    # A reopen of an open request is just a replay.
    assert (
        msgspec.json.decode(p.cli("--reopen", "--json").stdout)["decision_id"]
        == (new["decision_id"])
    )
    assert p.act("approve", new["approval_request_id"]).status_code == 200
    done = p.cli()
    assert done.returncode == 0, done.stdout
    versions = mlflow.MlflowClient().search_model_versions(f"name = '{p.model}'")
    assert [(v.version, v.current_stage) for v in versions] == [("1", "Production")]


async def test_concurrent_reopens_open_exactly_one_new_request(
    mlflow_tracking: str, live_server: LiveServer, unique: str
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    p = Promotion(live_server, unique)
    first = p.http()
    assert first.status_code == 202, first.text
    assert p.act("reject", first.json()["approval_request_id"]).status_code == 200
    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(lambda _: p.http(reopen=True), range(4)))
    assert all(a.status_code == 202 for a in answers), [a.text for a in answers]
    assert len({a.json()["decision_id"] for a in answers}) == 1
    requests = httpx.get(
        f"{live_server.url}{MLGATE}/approvals/list", params={"model": p.model}
    ).json()["approval_requests"]
    assert sorted(r["status"] for r in requests) == ["pending", "rejected"]
