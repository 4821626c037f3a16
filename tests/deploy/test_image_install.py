"""The Dockerfile's build and install steps, replayed in a clean directory (no container engine
runs here): its npm stage, its wheel stage and its runtime pip install run as written, then the
installed ``mlgate`` starts with the image's ENV, ENTRYPOINT and CMD and passes its HEALTHCHECK."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
import venv
from pathlib import Path

import httpx
import pytest

from tests.conftest import BACKEND, REPO_ROOT, free_port
from tests.deploy.dockerfile import env as _env
from tests.deploy.dockerfile import one as _one
from tests.deploy.dockerfile import stages as _stages

pytestmark = pytest.mark.slow

DOCKERFILE = REPO_ROOT / "Dockerfile"


def _run(command: str, cwd: Path, env: dict[str, str]) -> None:
    done = subprocess.run(
        ["/bin/sh", "-ec", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, f"{command}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_the_dockerfile_install_steps_give_a_working_mlgate(
    database_url: str, tmp_path: Path
) -> None:
    stages = _stages(DOCKERFILE.read_text())
    assert list(stages) == ["assets", "build", "runtime"]
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("MLGATE_", "PYTHON"))}

    # The build context: only what .dockerignore lets through and the stages COPY (no built
    # assets, no caches), so the assets below can only come from the npm stage.
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "alembic.ini"):
        shutil.copy2(REPO_ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "node_modules", "vendor")
    for name in ("tracking", "registry", "gates"):
        shutil.copytree(REPO_ROOT / name, src / name, ignore=ignore)
    assert not (src / "gates/server/web/static/vendor").exists()

    # Stage "assets": its RUN in its WORKDIR (build.mjs writes ../static/vendor in place, which
    # is what the build stage's COPY --from=assets picks up).
    assets = stages["assets"]
    workdir = _one(assets, "WORKDIR").removeprefix("/src/")
    _run(_one(assets, "RUN"), src / workdir, base_env)
    assert (src / "gates/server/web/static/vendor/uPlot.iife.min.js").is_file()

    # Stage "build": its RUN with /wheels moved into the temp dir.
    wheels = tmp_path / "wheels"
    # Its ENV, except the cache: the image discards it, a test run reuses pip's (speed only).
    build_env = {**base_env, **_env(stages["build"])}
    build_env.pop("PIP_NO_CACHE_DIR", None)
    _run(_one(stages["build"], "RUN").replace("/wheels", str(wheels)), src, build_env)
    names = {p.name for p in wheels.glob("*.whl")}
    assert "mlgate-0.1.0-py3-none-any.whl" in names
    assert any(n.startswith("litestar-") for n in names), names

    # Stage "runtime": the pip install into a clean virtualenv, offline from those wheels.
    # (groupadd/useradd need root inside an image; the user is checked by hadolint's rules and
    # test_dockerfile_runs_as_a_non_root_user instead.)
    runtime = stages["runtime"]
    install = _one(runtime, "RUN").split("&&")[0]
    install = install.split(" pip install ", 1)[1]
    prefix = tmp_path / "venv"
    # A bare virtualenv, filled by this interpreter's pip (`pip --python`): ensurepip would only
    # add seconds, and what is installed is the same.
    venv.EnvBuilder(with_pip=False, clear=True).create(prefix)
    pip = f"{sys.executable} -m pip --python {prefix}/bin/python"
    _run(f"{pip} install {install.replace('/wheels', str(wheels))}", tmp_path, base_env)
    assert (prefix / "bin/mlgate").is_file()

    # The image's ENV, its data dir moved into the temp dir; the test's own database.
    data = tmp_path / "var-lib-mlgate"
    data.mkdir()
    image_env = {k: v.replace("/var/lib/mlgate", str(data)) for k, v in _env(runtime).items()}
    port = free_port()
    env = {
        **base_env,
        **image_env,
        # Loopback only on a shared machine; the image binds 0.0.0.0.
        "MLGATE_HOST": "127.0.0.1",
        "MLGATE_PORT": str(port),
        "MLGATE_LOG_LEVEL": "warning",
    }
    if BACKEND == "postgres":
        env["MLGATE_DATABASE_URL"] = database_url
    entrypoint = json.loads(_one(runtime, "ENTRYPOINT"))
    cmd = json.loads(_one(runtime, "CMD"))
    assert entrypoint == ["mlgate"]
    healthcheck = _one(runtime, "HEALTHCHECK")
    probe = json.loads(healthcheck[healthcheck.index("CMD [") + 4 :])
    assert probe[0] == "python"
    probe[0] = str(prefix / "bin/python")

    before = _tree(prefix)
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen(
        [str(prefix / "bin" / entrypoint[0]), *cmd],
        cwd=data,  # the image's WORKDIR
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 45
        while True:
            check = subprocess.run(probe, env=env, capture_output=True, timeout=10)
            if check.returncode == 0:
                break
            assert proc.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "HEALTHCHECK never passed"
            time.sleep(0.5)
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/health").status_code == 200
        # The UI's vendored library is served from the installed wheel.
        asset = httpx.get(f"{base}/static/vendor/uPlot.iife.min.js")
        assert asset.status_code == 200 and len(asset.content) > 10_000
        # The code that answered is the installed copy, not this checkout.
        where = subprocess.run(
            [str(prefix / "bin/python"), "-c", "import registry; print(registry.__file__)"],
            cwd=data,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert where.startswith(str(prefix)), where
        created = subprocess.run(
            [
                str(prefix / "bin/python"),
                "-c",
                "import sys, urllib.request, json; "
                "r = urllib.request.Request(sys.argv[1] + '/api/2.0/mlflow/registered-models/create', "
                "data=json.dumps({'name': sys.argv[2]}).encode(), "
                "headers={'Content-Type': 'application/json'}); "
                "print(urllib.request.urlopen(r, timeout=10).status)",
                base,
                f"image-replay-{uuid.uuid4().hex[:8]}",
            ],
            env=env,
            capture_output=True,
            text=True,
        )
        assert created.stdout.strip() == "200", created.stderr[-2000:]
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()
    # Read-only-root friendly: serving wrote nothing into the installation.
    assert _tree(prefix) == before
