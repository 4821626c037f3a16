"""The Dockerfile passes hadolint and has the shape production asks for: a slim runtime stage
without build tools, a non-root user, a health check on /health, data only under a volume."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.deploy.dockerfile import env, one, stages
from tests.deploy.settings_check import check_mlgate_settings

DOCKERFILE = REPO_ROOT / "Dockerfile"


def _tool(name: str) -> str:
    found = Path(sys.executable).parent / name
    if found.exists():
        return str(found)
    path = shutil.which(name)
    assert path, f"{name} is not installed (pip install -e '.[dev]')"
    return path


def _hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_tool("hadolint"), "--no-color", str(path)], capture_output=True, text=True, timeout=60
    )


def test_hadolint_passes_the_dockerfile() -> None:
    done = _hadolint(DOCKERFILE)
    assert done.returncode == 0, done.stdout + done.stderr


def test_hadolint_catches_a_root_runtime_and_an_unpinned_install(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:3.12-slim\nRUN pip install mlgate\nUSER root\n")
    done = _hadolint(bad)
    assert done.returncode != 0
    assert "DL3013" in done.stdout and "DL3002" in done.stdout, done.stdout


def test_the_runtime_stage_has_no_build_tools_and_runs_as_a_non_root_user() -> None:
    runtime = stages(DOCKERFILE.read_text())["runtime"]
    commands = " ".join(args for keyword, args in runtime if keyword == "RUN")
    for tool in ("apt-get", "apk ", "gcc", "build-essential", "npm", "node"):
        assert tool not in commands, tool
    assert "--no-index" in commands  # installs only the wheels built in the build stage
    user = one(runtime, "USER").split(":")[0]
    assert user not in {"0", "root"} and int(user) >= 1000


def test_the_image_health_check_probes_health_on_the_exposed_port() -> None:
    runtime = stages(DOCKERFILE.read_text())["runtime"]
    image_env = env(runtime)
    assert one(runtime, "EXPOSE") == image_env["MLGATE_PORT"]
    check = one(runtime, "HEALTHCHECK")
    probe = json.loads(check[check.index("CMD [") + 4 :])
    assert "/health" in probe[-1]
    assert json.loads(one(runtime, "ENTRYPOINT")) == ["mlgate"]
    assert json.loads(one(runtime, "CMD")) == ["server"]


def test_the_image_env_sets_real_settings_and_keeps_data_under_the_volume() -> None:
    runtime = stages(DOCKERFILE.read_text())["runtime"]
    settings = check_mlgate_settings(env(runtime))
    volume = json.loads(one(runtime, "VOLUME"))[0]
    assert one(runtime, "WORKDIR") == volume
    assert str(settings.data_path) == volume
    assert settings.database_url.startswith(f"sqlite:///{volume}/")
    assert settings.artifacts_destination.startswith(f"{volume}/")
    assert settings.signing_key_path.parent == Path(volume)


def test_the_wheel_carries_the_ui_assets_and_the_migrations() -> None:
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    data = pyproject["tool"]["setuptools"]["package-data"]
    assert "static/vendor/*" in data["gates.server.web"]
    assert "migrations/versions/*.py" in data["gates.server"]


@pytest.mark.parametrize("excluded", ["node_modules", "vendor", "__pycache__"])
def test_dockerignore_keeps_local_builds_out_of_the_context(excluded: str) -> None:
    lines = (REPO_ROOT / ".dockerignore").read_text().splitlines()
    assert lines.count("**") == 1  # everything is excluded unless named
    assert any(line.endswith(excluded) and not line.startswith("!") for line in lines)
