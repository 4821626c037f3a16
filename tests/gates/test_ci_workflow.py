"""deploy/github-actions-promote.yml runs as written: its steps in a clean shell, no mlgate installed."""

from __future__ import annotations

import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import mlflow
import numpy as np
import pytest
import yaml
from mlflow import MlflowClient

from gates.policies import promote_client
from gates.server.cli import promote as cli
from tests.conftest import REPO_ROOT, LiveServer, free_port, start_server, stop_server
from tests.gates.oidc_issuer import LocalIssuer

pytestmark = pytest.mark.compat
WORKFLOW = REPO_ROOT / "deploy" / "github-actions-promote.yml"
MLGATE = "/api/2.0/mlgate"
# A stock runner's tools, without this repository's virtualenv: python3 here is Debian's, which
# has no mlgate, mlflow or httpx installed.
CLEAN_PATH = "/usr/local/bin:/usr/bin:/bin"


@pytest.fixture(scope="module")
def ci_server(make_database: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server of its own: the workflow names its model 'fraud', as written."""
    from gates.server import migrate

    url = make_database("ciflow")
    migrate.upgrade(url)
    # The stand-in for GitHub's OIDC issuer serves on loopback over http.
    server = start_server(
        url,
        tmp_path_factory.mktemp("ci-server"),
        extra_env={"MLGATE_OIDC_ALLOW_HTTP_LOOPBACK": "true"},
    )
    yield server
    stop_server(server)
    assert "Traceback" not in server.log.read_text(errors="replace")


def _workflow() -> dict[str, Any]:
    return yaml.safe_load(WORKFLOW.read_text())  # type: ignore[no-any-return]


def _shell_argv(workflow: dict[str, Any]) -> list[str]:
    """How GitHub's runner starts a `run:` step on Linux for the workflow's default shell."""
    shell = workflow.get("defaults", {}).get("run", {}).get("shell")
    if shell == "bash":
        return ["bash", "--noprofile", "--norc", "-eo", "pipefail"]
    assert shell is None, f"the test does not model shell {shell!r}"
    return ["bash", "-e"]


def _expand(text: str, values: dict[str, str]) -> str:
    def one(match: re.Match[str]) -> str:
        expr = match.group(1).strip()
        assert expr in values, f"the test cannot supply {expr!r}"
        return values[expr]

    return re.sub(r"\$\{\{(.*?)\}\}", one, text)


def _run_job(
    job: str, values: dict[str, str], tmp_path: Path, runner: dict[str, str]
) -> list[subprocess.CompletedProcess[str]]:
    """Every `run:` step of the job, in order, in a clean shell; stops at the first failure.
    ``runner``: what GitHub's runner adds (its OIDC token service, with id-token: write)."""
    workflow = _workflow()
    assert workflow["permissions"]["id-token"] == "write"
    spec = workflow["jobs"][job]
    env = {name: _expand(str(v), values) for name, v in spec.get("env", {}).items()}
    env |= {"PATH": CLEAN_PATH, "HOME": str(tmp_path), "GITHUB_ACTOR": "ci-bot"} | runner
    done = []
    for step in spec["steps"]:
        if "run" not in step:
            # `uses:` steps are the runner's own actions (setup-python); python3 stands in.
            assert step["uses"].startswith("actions/"), step
            continue
        script = _expand(step["run"], values)
        step_env = env | {k: _expand(str(v), values) for k, v in step.get("env", {}).items()}
        result = subprocess.run(
            [*_shell_argv(workflow), "-c", script],
            env=step_env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        done.append(result)
        if result.returncode != 0:
            break
    return done


def _gate(server: LiveServer, github: LocalIssuer, target: str, **rules: Any) -> None:
    """A gate on ``fraud`` that trusts the (stand-in) GitHub issuer for octo/fraud on main."""
    name = f"fraud-{target.lower()}-{uuid.uuid4().hex[:6]}"
    body = {"name": name, "model": "fraud", "target": target, **rules}
    created = httpx.post(f"{server.url}{MLGATE}/gates/create", json=body)
    assert created.status_code == 200, created.text
    trust = {
        "gate": name,
        "issuer": github.url,
        "audience": server.url,
        "claims": {"repository": ["octo/fraud"], "ref": ["refs/heads/main"]},
    }
    added = httpx.post(f"{server.url}{MLGATE}/gates/oidc/add", json=trust)
    assert added.status_code == 200, added.text


def _train(server: LiveServer, val_auc: float) -> str:
    """Stands in for the workflow's train job (the user's own train.py)."""
    from sklearn.linear_model import LogisticRegression

    mlflow.set_tracking_uri(server.url)
    mlflow.set_experiment("fraud-training")
    model = LogisticRegression().fit(np.array([[0.0], [1.0], [2.0]]), np.array([0, 1, 1]))
    with mlflow.start_run() as run:
        mlflow.log_metric("val_auc", val_auc)
        mlflow.set_tag("git_commit", "abc123")
        mlflow.sklearn.log_model(model, name="model", serialization_format="cloudpickle")
    return run.info.run_id


@pytest.fixture(scope="module")
def github() -> Iterator[LocalIssuer]:
    issuer = LocalIssuer()
    yield issuer
    issuer.close()


@pytest.fixture(scope="module")
def runner(github: LocalIssuer) -> dict[str, str]:
    return {
        "ACTIONS_ID_TOKEN_REQUEST_URL": f"{github.url}/token?api-version=2.0",
        "ACTIONS_ID_TOKEN_REQUEST_TOKEN": github.request_token,
    }


@pytest.fixture(scope="module")
def gate_secrets(ci_server: LiveServer, github: LocalIssuer) -> dict[str, str]:
    """The repository secrets the workflow reads: only the URL (no gate secret)."""
    _gate(ci_server, github, "Staging", metrics=["val_auc >= 0.90"], required_tags=["git_commit"])
    _gate(ci_server, github, "Production", required_approvals=1)
    return {"secrets.MLGATE_URL": ci_server.url}


def test_workflow_installs_nothing_and_its_clean_python_has_no_mlgate(tmp_path: Path) -> None:
    text = WORKFLOW.read_text()
    assert "pip install mlgate" not in text
    probe = subprocess.run(
        ["python3", "-c", "import gates"],
        env={"PATH": CLEAN_PATH},
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert probe.returncode != 0 and "ModuleNotFoundError" in probe.stderr


def test_workflow_steps_promote_to_staging_then_open_a_production_request(
    ci_server: LiveServer, gate_secrets: dict[str, str], runner: dict[str, str], tmp_path: Path
) -> None:
    run_id = _train(ci_server, val_auc=0.95)
    values = gate_secrets | {"needs.train.outputs.run_id": run_id}

    staging = _run_job("promote-staging", values, tmp_path, runner)
    assert staging and staging[-1].returncode == 0, [(r.stdout, r.stderr) for r in staging]
    assert "outcome: PASSED" in staging[-1].stdout
    client = MlflowClient(ci_server.url, ci_server.url)
    (version,) = [v for v in client.search_model_versions("name='fraud'") if v.run_id == run_id]
    assert client.get_model_version("fraud", version.version).current_stage == "Staging"
    # The actor is the job's verified OIDC subject; no shared secret was involved.
    decisions = httpx.get(
        f"{ci_server.url}{MLGATE}/gates/decisions/list", params={"model": "fraud"}
    )
    mine = [d for d in decisions.json()["decisions"] if d.get("run_id") == run_id]
    assert mine and mine[0]["actor"].endswith("/repo:octo/fraud:environment:production")
    assert mine[0]["verified_identity"]["repository"] == "octo/fraud"

    # A retried job gets the first decision back (same idempotency key), still exit 0.
    again = _run_job("promote-staging", values, tmp_path, runner)
    assert again[-1].returncode == 0 and staging[-1].stdout.split()[1] in again[-1].stdout

    production = _run_job("promote-production", values, tmp_path, runner)
    assert production[-1].returncode == 0, [(r.stdout, r.stderr) for r in production]
    assert "outcome: PENDING_APPROVAL" in production[-1].stdout
    listed = httpx.get(f"{ci_server.url}{MLGATE}/approvals/list", params={"model": "fraud"})
    assert listed.status_code == 200, listed.text
    pending = [
        r
        for r in listed.json().get("approval_requests", [])
        if str(r.get("version")) == version.version and r.get("status") == "pending"
    ]
    assert len(pending) == 1, listed.text
    assert client.get_model_version("fraud", version.version).current_stage == "Staging"


def test_workflow_step_fails_the_job_when_the_gate_refuses(
    ci_server: LiveServer, gate_secrets: dict[str, str], runner: dict[str, str], tmp_path: Path
) -> None:
    run_id = _train(ci_server, val_auc=0.50)
    values = gate_secrets | {"needs.train.outputs.run_id": run_id}
    staging = _run_job("promote-staging", values, tmp_path, runner)
    assert staging[-1].returncode == promote_client.EXIT_REFUSED, staging[-1].stderr
    assert "metric:val_auc" in staging[-1].stdout
    client = MlflowClient(ci_server.url, ci_server.url)
    assert not [v for v in client.search_model_versions("name='fraud'") if v.run_id == run_id]


def test_workflow_step_fails_when_the_server_is_unreachable(
    gate_secrets: dict[str, str], runner: dict[str, str], tmp_path: Path
) -> None:
    values = gate_secrets | {
        "secrets.MLGATE_URL": f"http://127.0.0.1:{free_port()}",
        "needs.train.outputs.run_id": uuid.uuid4().hex,
    }
    steps = _run_job("promote-staging", values, tmp_path, runner)
    # Without pipefail, python3 would run an empty script and the step would pass.
    assert steps[-1].returncode != 0


def test_served_client_is_the_packaged_file_and_agrees_with_the_cli(
    ci_server: LiveServer, tmp_path: Path
) -> None:
    served = httpx.get(f"{ci_server.url}{MLGATE}/clients/promote.py")
    assert served.status_code == 200
    assert served.headers["content-type"] == "text/x-python; charset=utf-8"
    assert served.content == Path(promote_client.__file__).read_bytes()
    assert promote_client.CLOSED_EXIT_CODES == cli.CLOSED_EXIT_CODES
    # Every exit code `mlgate promote` knows, the served client knows by the same number.
    codes = {n: v for n, v in vars(cli).items() if n.startswith("EXIT_")}
    assert {n: getattr(promote_client, n, None) for n in codes} == codes
    key = promote_client.default_idempotency_key("fraud", "run:abc", "Staging")
    assert key == cli.default_idempotency_key("fraud", "run:abc", "Staging")
    # Standard library only: it imports in an interpreter that has nothing else installed.
    assert shutil.which("python3", path=CLEAN_PATH)
    probe = subprocess.run(
        ["python3", "-", "--help"],
        input=served.text,
        env={"PATH": CLEAN_PATH},
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert probe.returncode == 0 and "--allow-pending" in probe.stdout
