"""Where MLflow's built web UI lives: inside the installed ``mlflow`` package, if any.

``mlflow-skinny`` (the client) installs the same ``mlflow`` package without the UI bundle, so
"importable" is not enough: the bundle's ``index.html`` must be there.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

# The path of the bundle inside the mlflow package (mlflow/server/js/build).
BUNDLE_PARTS = ("server", "js", "build")
INSTALL_HINT = (
    "MLflow's web UI is not installed. Install mlgate's mlflow-ui extra "
    "(pip install 'mlgate[mlflow-ui]', which brings the full mlflow package) and restart."
)


def find_bundle() -> Path | None:
    """The directory holding MLflow's built UI (``index.html``), or None when absent.

    Found through the import system without importing mlflow (which is slow to import).
    """
    try:
        spec = importlib.util.find_spec("mlflow")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        build = Path(location).joinpath(*BUNDLE_PARTS)
        if (build / "index.html").is_file():
            return build.resolve()
    return None
