"""`mlgate backup` of a live embedded server (SQLite + local artifacts) taking writes, restored
into a fresh location: no acknowledged write before the backup is lost, the audit chain and its
signed checkpoint verify, and every version's files match their recorded digest."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import mlflow
import pytest

from tests.conftest import REPO_ROOT, start_server, stop_server

API = "/api/2.0/mlgate"


def _mlgate(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MLGATE_")}
    return subprocess.run(
        [sys.executable, "-m", "gates.server", *args],
        cwd=REPO_ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


class Writer(threading.Thread):
    """Registers versions (run files + model version) and adds gate secrets (audited) in a
    bounded loop, recording what the server acknowledged and when."""

    def __init__(self, url: str, model: str, gate: str) -> None:
        super().__init__(daemon=True)
        self.url, self.model, self.gate = url, model, gate
        self.stop = threading.Event()
        self.acked: list[tuple[float, str]] = []  # (monotonic time of the answer, version)
        self.secrets_acked: list[float] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            client = mlflow.MlflowClient(tracking_uri=self.url, registry_uri=self.url)
            experiment = client.create_experiment(f"{self.model}-exp")
            for i in range(400):
                if self.stop.is_set():
                    return
                run = client.create_run(experiment)
                client.log_text(run.info.run_id, f"flavors: {{}}\nn: {i}\n", "model/MLmodel")
                client.log_text(run.info.run_id, "x" * (1000 + i), "model/weights.bin")
                client.set_terminated(run.info.run_id)
                mv = client.create_model_version(
                    self.model, f"runs:/{run.info.run_id}/model", run.info.run_id
                )
                self.acked.append((time.monotonic(), str(mv.version)))
                r = httpx.post(
                    f"{self.url}{API}/gates/secrets/rotate",
                    json={"gate": self.gate, "grace_seconds": 0},
                )
                r.raise_for_status()
                self.secrets_acked.append(time.monotonic())
                self.stop.wait(0.4)  # steady, not flat out: the test re-verifies every version
        except BaseException as exc:  # reported by the test
            self.error = exc


def test_backup_of_a_live_server_restores_with_audit_chain_and_every_digest_verifying(
    tmp_path: Path, unique: str
) -> None:
    source = tmp_path / "source"
    source.mkdir()
    db_url = f"sqlite:///{source / 'mlgate.db'}"
    key_file = source / "signing-key.pem"
    model, gate = f"bk-{unique}", f"bk-{unique}-staging"
    gates_file = tmp_path / "gates.yaml"
    gates_file.write_text(
        f"gates:\n  - name: {gate}\n    model: {model}\n    target: Staging\n", encoding="utf-8"
    )
    server = start_server(
        db_url,
        source,
        extra_env={
            "MLGATE_SIGNING_KEY_FILE": str(key_file),
            "MLGATE_AUDIT_CHECKPOINT_INTERVAL": "0.2",
            "MLGATE_WEBHOOK_WORKER": "false",
        },
    )
    restored_server = None
    try:
        applied = _mlgate("gates", "apply", str(gates_file), env={"MLGATE_DATABASE_URL": db_url})
        assert applied.returncode == 0, applied.stderr
        mlflow.MlflowClient(
            tracking_uri=server.url, registry_uri=server.url
        ).create_registered_model(model)
        writer = Writer(server.url, model, gate)
        writer.start()
        deadline = time.monotonic() + 60
        while len(writer.acked) < 3 and writer.error is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert writer.error is None and len(writer.acked) >= 3, writer.error
        backup_dir = tmp_path / "backup"
        started = time.monotonic()
        made = _mlgate(
            "backup",
            "--output",
            str(backup_dir),
            env={
                "MLGATE_DATABASE_URL": db_url,
                "MLGATE_ARTIFACTS_DESTINATION": str(server.artifacts),
                "MLGATE_SIGNING_KEY_FILE": str(key_file),
            },
        )
        finished = time.monotonic()
        writer.stop.set()
        writer.join(60)
        assert made.returncode == 0, made.stderr
        assert writer.error is None, writer.error
        # The server kept taking writes while the backup ran.
        assert any(started <= at <= finished for at, _ in writer.acked), (started, finished)
        acked_before = {v for at, v in writer.acked if at < started}
        secrets_before = sum(1 for at in writer.secrets_acked if at < started)
        manifest = json.loads((backup_dir / "backup.json").read_text())
        assert manifest["audit_head_seq"] >= secrets_before + 1  # + policy.created
        assert "signed now" in manifest["audit_checkpoint"]
        staging = backup_dir / "artifacts" / ".mlgate-staging"
        assert not staging.exists() or not any(staging.iterdir())
    finally:
        stop_server(server)

    target = tmp_path / "restored"
    target_db = f"sqlite:///{target / 'mlgate.db'}"
    restored = _mlgate(
        "restore",
        str(backup_dir),
        env={
            "MLGATE_DATABASE_URL": target_db,
            "MLGATE_ARTIFACTS_DESTINATION": str(target / "artifacts"),
        },
    )
    assert restored.returncode == 0, restored.stderr
    # A fresh data dir: the restored server makes a new signing key; the backup's checkpoint
    # still verifies through the old public key kept in the store.
    fresh_key = target / "data" / "signing-key.pem"
    check_env = {
        "MLGATE_DATABASE_URL": target_db,
        "MLGATE_ARTIFACTS_DESTINATION": str(target / "artifacts"),
        "MLGATE_SIGNING_KEY_FILE": str(fresh_key),
    }
    try:
        restored_server = start_server(
            target_db,
            target,
            extra_env={
                "MLGATE_SIGNING_KEY_FILE": str(fresh_key),
                "MLGATE_AUDIT_CHECKPOINT_INTERVAL": "0",
                "MLGATE_WEBHOOK_WORKER": "false",
            },
        )
        client = mlflow.MlflowClient(
            tracking_uri=restored_server.url, registry_uri=restored_server.url
        )
        versions = {mv.version for mv in client.search_model_versions(f"name='{model}'")}
        assert acked_before <= versions, acked_before - versions
        chain = _mlgate("audit", "verify", env=check_env)
        assert chain.returncode == 0 and "audit chain OK" in chain.stdout, chain.stdout
        for checkpoint in (str(backup_dir / "audit-checkpoint.json"), "store"):
            verified = _mlgate("audit", "verify", "--checkpoint", checkpoint, env=check_env)
            assert verified.returncode == 0, verified.stdout + verified.stderr
        print(f"{len(versions)} versions restored, {len(acked_before)} acknowledged before")
        for version in sorted(versions, key=int):
            digest = _mlgate("verify", f"models:/{model}/{version}", "--json", env=check_env)
            report = json.loads(digest.stdout)
            assert digest.returncode == 0 and report["ok"], report
            assert report["recorded_digest"] and len(report["files"]) == 2
        # The restored server takes writes where the backup left off.
        mv = client.create_model_version(model, f"runs:/{_any_run(client, model)}/model")
        assert int(mv.version) == max(int(v) for v in versions) + 1
    finally:
        if restored_server is not None:
            stop_server(restored_server)


def _any_run(client: mlflow.MlflowClient, model: str) -> str:
    return str(client.search_model_versions(f"name='{model}'")[0].run_id)


def test_backup_and_restore_refuse_what_they_cannot_do_safely(tmp_path: Path) -> None:
    postgres = _mlgate(
        "backup",
        "--output",
        str(tmp_path / "b1"),
        env={"MLGATE_DATABASE_URL": "postgresql://postgres@127.0.0.1/x"},
    )
    assert postgres.returncode == 1 and "pg_dump" in postgres.stderr
    s3 = _mlgate(
        "backup",
        "--output",
        str(tmp_path / "b2"),
        env={
            "MLGATE_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}",
            "MLGATE_ARTIFACTS_DESTINATION": "s3://bucket/prefix",
        },
    )
    assert s3.returncode == 1 and "aws s3 sync" in s3.stderr
    db = tmp_path / "src" / "mlgate.db"
    env = {
        "MLGATE_DATABASE_URL": f"sqlite:///{db}",
        "MLGATE_ARTIFACTS_DESTINATION": str(tmp_path / "src" / "artifacts"),
        "MLGATE_SIGNING_KEY_FILE": str(tmp_path / "none.pem"),
    }
    assert _mlgate("db", "upgrade", env=env).returncode == 0
    made = _mlgate("backup", "--output", str(tmp_path / "b3"), env=env)
    assert made.returncode == 0, made.stderr
    again = _mlgate("backup", "--output", str(tmp_path / "b3"), env=env)
    assert again.returncode == 1 and "not empty" in again.stderr
    # Restoring over a live database is refused.
    over = _mlgate("restore", str(tmp_path / "b3"), env=env)
    assert over.returncode == 1 and "exists" in over.stderr
    # A database that does not match the backup's recorded digest is refused.
    with (tmp_path / "b3" / "mlgate.db").open("ab") as f:
        f.write(b"\0")
    fresh = {
        "MLGATE_DATABASE_URL": f"sqlite:///{tmp_path / 'new' / 'mlgate.db'}",
        "MLGATE_ARTIFACTS_DESTINATION": str(tmp_path / "new" / "artifacts"),
    }
    tampered = _mlgate("restore", str(tmp_path / "b3"), env=fresh)
    assert tampered.returncode == 1 and "digest" in tampered.stderr
    assert not (tmp_path / "new" / "mlgate.db").exists()


pytestmark = pytest.mark.compat
