"""The layering contract in pyproject.toml is enforced, not decorative.

A copy of the three packages gets one forbidden import at a time; lint-imports (what `make lint`
runs) must then fail and name the broken contract. The untouched copy must pass, so a failure
below is caused by the planted import alone.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _copy_tree(dest: Path) -> None:
    ignore = shutil.ignore_patterns("node_modules", "vendor", "__pycache__", "frontend", "*.html")
    for package in ("tracking", "registry", "gates"):
        shutil.copytree(ROOT / package, dest / package, ignore=ignore)
    shutil.copy(ROOT / "pyproject.toml", dest / "pyproject.toml")


def _lint(tree: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tree = tmp_path_factory.mktemp("layering")
    _copy_tree(tree)
    result = _lint(tree)
    assert result.returncode == 0, result.stdout + result.stderr
    return tree


@pytest.mark.parametrize(
    ("module", "planted", "contract"),
    [
        # A domain reaching up into the shell.
        (
            "registry/store/__init__.py",
            "import gates.server.app",
            "Nothing below the shell imports the shell",
        ),
        # The bottom domain reaching up into a higher domain.
        ("tracking/service/runs.py", "import registry.store", "Domains depend downward"),
        # The kernel reaching into a domain.
        (
            "tracking/core/clock.py",
            "import tracking.store",
            "The kernel (tracking.core) imports no domain",
        ),
    ],
)
def test_a_forbidden_import_breaks_the_contract(
    pristine: Path, tmp_path: Path, module: str, planted: str, contract: str
) -> None:
    tree = tmp_path / "tree"
    shutil.copytree(pristine, tree)
    target = tree / module
    target.write_text(target.read_text() + f"\n{planted}  # planted by the test\n")
    result = _lint(tree)
    assert result.returncode != 0, result.stdout
    broken = [line for line in result.stdout.splitlines() if line.endswith("BROKEN")]
    assert any(line.startswith(contract) for line in broken), result.stdout
