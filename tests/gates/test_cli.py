"""`mlgate gates apply/list`, `mlgate approvals list/approve/reject` and `mlgate promote`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import mlflow
import pytest

from tests.conftest import REPO_ROOT, LiveServer

pytestmark = pytest.mark.compat
MLGATE = "/api/2.0/mlgate"


def _mlgate(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gates.server", *args],
        cwd=REPO_ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _gates_file(path: Path, model: str, threshold: float, approvals: int) -> Path:
    path.write_text(
        f"""
gates:
  - name: {model}-staging
    model: {model}
    target: Staging
    metrics:
      - "val_auc >= {threshold}"
    required_tags: [git_commit]
  - name: {model}-production
    model: {model}
    target: Production
    prior_targets: [Staging]
    required_approvals: {approvals}
""",
        encoding="utf-8",
    )
    return path


def _run(unique: str, auc: float) -> str:
    mlflow.set_experiment(f"cli-{unique}")
    with mlflow.start_run() as run:
        mlflow.log_metric("val_auc", auc)
        mlflow.set_tag("git_commit", "abc")
        mlflow.log_text("flavors: {}\n", "model/MLmodel")
    return run.info.run_id


def test_apply_is_idempotent_and_edits_make_new_versions(
    database_url: str, tmp_path: Path, unique: str
) -> None:
    model = f"cli-{unique}"
    path = _gates_file(tmp_path / "gates.yaml", model, 0.9, 2)
    first = _mlgate("gates", "apply", str(path), "--database-url", database_url)
    assert first.returncode == 0, first.stderr
    assert first.stdout.split() == [
        f"{model}-staging",
        "created",
        "version",
        "1",
        f"{model}-production",
        "created",
        "version",
        "1",
    ]
    again = _mlgate("gates", "apply", str(path), "--database-url", database_url)
    assert again.stdout.count("unchanged") == 2
    _gates_file(path, model, 0.95, 2)
    edited = _mlgate("gates", "apply", str(path), "--database-url", database_url)
    assert f"{model}-staging" in edited.stdout and "updated    version 2" in edited.stdout
    listed = _mlgate("gates", "list", "--database-url", database_url)
    assert listed.returncode == 0
    line = next(x for x in listed.stdout.splitlines() if x.startswith(f"{model}-production"))
    assert "Production" in line and "approvals=2" in line
    bad = tmp_path / "bad.yaml"
    bad.write_text("gates:\n  - name: x\n    model: m\n    target: Staging\n    colour: red\n")
    refused = _mlgate("gates", "apply", str(bad), "--database-url", database_url)
    assert refused.returncode == 1 and "colour" in refused.stderr


def test_promote_signs_prints_the_decision_and_exits_by_outcome(
    mlflow_tracking: str, live_server: LiveServer, database_url: str, tmp_path: Path, unique: str
) -> None:
    model = f"cli-{unique}"
    path = _gates_file(tmp_path / "gates.yaml", model, 0.9, 1)
    assert _mlgate("gates", "apply", str(path), "--database-url", database_url).returncode == 0
    secrets = {}
    for gate in (f"{model}-staging", f"{model}-production"):
        answer = httpx.post(f"{live_server.url}{MLGATE}/gates/secrets/add", json={"gate": gate})
        secrets[gate] = answer.json()["secret"]["secret"]
    good, bad = _run(unique, 0.95), _run(unique, 0.5)

    def promote(
        run_id: str, target: str, gate: str, *extra: str
    ) -> subprocess.CompletedProcess[str]:
        return _mlgate(
            "promote",
            "--model",
            model,
            "--run",
            run_id,
            "--to",
            target,
            "--url",
            live_server.url,
            "--requested-by",
            "ci-bot",
            *extra,
            env={"MLGATE_GATE_SECRET": secrets[gate]},
        )

    dry = promote(good, "Staging", f"{model}-staging", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "outcome: PASSED  (dry run)" in dry.stdout
    refused = promote(bad, "Staging", f"{model}-staging")
    assert refused.returncode == 1
    assert "outcome: FAILED" in refused.stdout
    assert any(
        line.split()[:4] == ["metric:val_auc", "0.5", ">=", "0.9"]
        for line in refused.stdout.splitlines()
    ), refused.stdout
    staged = promote(good, "Staging", f"{model}-staging")
    assert staged.returncode == 0 and "outcome: PASSED" in staged.stdout
    retried = promote(good, "Staging", f"{model}-staging")  # the same derived idempotency key
    assert retried.returncode == 0 and retried.stdout == staged.stdout
    pending = promote(good, "Production", f"{model}-production")
    assert pending.returncode == 3 and "PENDING_APPROVAL" in pending.stdout
    unsigned = _mlgate(
        "promote",
        "--model",
        model,
        "--run",
        good,
        "--to",
        "Staging",
        "--url",
        live_server.url,
        env={"MLGATE_GATE_SECRET": ""},
    )
    assert unsigned.returncode == 2

    listed = _mlgate(
        "approvals", "list", "--status", "pending", "--model", model, "--database-url", database_url
    )
    assert listed.returncode == 0, listed.stderr
    request_id = listed.stdout.split()[0]
    # With auth off the server's anonymous caller approves over HTTP (no named users).
    approved = _mlgate(
        "approvals", "approve", request_id, "--comment", "ok", "--url", live_server.url
    )
    assert approved.returncode == 0, approved.stderr
    assert "approved (1/1 approvals)" in approved.stdout and "outcome: PASSED" in approved.stdout
    mv = mlflow.MlflowClient().get_model_version(model, "1")
    assert mv.current_stage == "Production"


def test_reject_from_the_cli(
    mlflow_tracking: str, live_server: LiveServer, database_url: str, tmp_path: Path, unique: str
) -> None:
    model = f"cli-{unique}"
    path = _gates_file(tmp_path / "gates.yaml", model, 0.9, 1)
    assert _mlgate("gates", "apply", str(path), "--database-url", database_url).returncode == 0
    secret = httpx.post(
        f"{live_server.url}{MLGATE}/gates/secrets/add", json={"gate": f"{model}-production"}
    ).json()["secret"]["secret"]
    staging_secret = httpx.post(
        f"{live_server.url}{MLGATE}/gates/secrets/add", json={"gate": f"{model}-staging"}
    ).json()["secret"]["secret"]
    run_id = _run(unique, 0.95)
    for target, key in (("Staging", staging_secret), ("Production", secret)):
        _mlgate(
            "promote",
            "--model",
            model,
            "--run",
            run_id,
            "--to",
            target,
            "--url",
            live_server.url,
            env={"MLGATE_GATE_SECRET": key},
        )
    listed = _mlgate("approvals", "list", "--model", model, "--database-url", database_url)
    request_id = listed.stdout.split()[0]
    rejected = _mlgate(
        "approvals", "reject", request_id, "--comment", "no", "--url", live_server.url
    )
    assert rejected.returncode == 0, rejected.stderr
    assert "rejected" in rejected.stdout


def _answering(status: int) -> tuple[str, object]:
    """A stand-in upstream (not mlgate) that answers every POST with ``status``: what a proxy
    in front of a down server sends."""
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", 0)))
            body = b'{"error_code": "TEMPORARILY_UNAVAILABLE", "message": "down"}'
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}", server


def test_promote_exit_codes_tell_auth_failure_and_retryable_outage_from_refusal(
    mlflow_tracking: str, live_server: LiveServer, database_url: str, tmp_path: Path, unique: str
) -> None:
    from tests.conftest import free_port

    model = f"cli-{unique}"
    path = _gates_file(tmp_path / "gates.yaml", model, 0.9, 1)
    assert _mlgate("gates", "apply", str(path), "--database-url", database_url).returncode == 0
    secret = httpx.post(
        f"{live_server.url}{MLGATE}/gates/secrets/add", json={"gate": f"{model}-staging"}
    ).json()["secret"]["secret"]
    run_id = _run(unique, 0.95)

    def promote(url: str, key: str) -> subprocess.CompletedProcess[str]:
        return _mlgate(
            "promote",
            *("--model", model, "--run", run_id, "--to", "Staging", "--url", url),
            *("--timeout", "10"),
            env={"MLGATE_GATE_SECRET": key},
        )

    wrong = promote(live_server.url, "whsec_" + "A" * 43)
    assert wrong.returncode == 8, (wrong.returncode, wrong.stderr)
    assert "401" in wrong.stderr or "403" in wrong.stderr
    closed = promote(f"http://127.0.0.1:{free_port()}", secret)
    assert closed.returncode == 9 and "retry" in closed.stderr, closed.stderr
    down_url, down = _answering(503)
    try:
        unavailable = promote(down_url, secret)
    finally:
        down.shutdown()  # type: ignore[attr-defined]
    assert unavailable.returncode == 9 and "retry later" in unavailable.stderr
    first = promote(live_server.url, secret)
    assert first.returncode == 0, first.stderr
    assert "stored decision" not in first.stderr
    replay = promote(live_server.url, secret)
    assert replay.returncode == 0 and replay.stdout == first.stdout
    assert "note: this is the stored decision" in replay.stderr, replay.stderr


def test_gate_secrets_cli_acts_through_the_server_as_the_authenticated_admin(
    make_database: object, tmp_path: Path, unique: str
) -> None:
    from tests.conftest import start_server, stop_server

    url = make_database(f"secrets_cli_{unique}")  # type: ignore[operator]
    admin, password = f"root-{unique}", "a-long-admin-password-1"
    server = start_server(
        url,
        tmp_path,
        extra_env={
            "MLGATE_AUTH": "true",
            "MLGATE_ADMIN_USERNAME": admin,
            "MLGATE_ADMIN_PASSWORD": password,
            "MLGATE_WEBHOOK_WORKER": "false",
            "MLGATE_AUDIT_CHECKPOINT_INTERVAL": "0",
        },
    )
    try:
        model = f"cli-{unique}"
        path = _gates_file(tmp_path / "gates.yaml", model, 0.9, 1)
        assert _mlgate("gates", "apply", str(path), "--database-url", url).returncode == 0
        gate = f"{model}-staging"
        me = {
            "MLFLOW_TRACKING_USERNAME": admin,
            "MLFLOW_TRACKING_PASSWORD": password,
            "MLGATE_URL": server.url,
        }

        def secrets(*args: str, env: dict[str, str] = me) -> subprocess.CompletedProcess[str]:
            return _mlgate("gates", "secrets", *args, "--gate", gate, env=env)

        added = secrets("add")
        assert added.returncode == 0, added.stderr
        secret_id = added.stdout.split()[0]
        shown = [x for x in added.stdout.splitlines() if x.startswith("secret whsec_")]
        assert len(shown) == 1 and f"created by {admin}" in added.stdout
        rotated = secrets("rotate", "--grace-seconds", "0")
        assert rotated.returncode == 0, rotated.stderr
        new_id = rotated.stdout.split()[0]
        listed = secrets("list")
        assert listed.returncode == 0 and "whsec_" not in listed.stdout  # values never listed
        assert {line.split()[0] for line in listed.stdout.splitlines()} >= {secret_id, new_id}
        revoked = secrets("revoke", "--secret-id", new_id)
        assert revoked.returncode == 0 and "revoked" in revoked.stdout, revoked.stdout
        as_json = secrets("list", "--json")
        states = {
            s["secret_id"]: s.get("revoked_at") for s in json.loads(as_json.stdout)["secrets"]
        }
        assert states[new_id] is not None
        wrong = secrets("add", env={**me, "MLFLOW_TRACKING_PASSWORD": "not-the-password"})
        assert wrong.returncode == 8 and "401" in wrong.stderr
        anonymous = secrets("list", env={"MLGATE_URL": server.url})
        assert anonymous.returncode == 8
        unknown = _mlgate("gates", "secrets", "add", "--gate", f"nope-{unique}", env=me)
        assert unknown.returncode == 1 and "nope" in unknown.stderr
    finally:
        stop_server(server)
