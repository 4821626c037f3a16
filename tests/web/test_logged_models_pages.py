"""What MLflow 3's ``log_model(..., name=...)`` logged is visible where users look: the run page
lists the run's logged models (params, metrics, tags, flavours, registered versions) and the
artifact browser opens their files, through the same grants and path checks as a run's files.

The model is logged by the official MLflow client, signed in as an editor of the team's
experiments and models, against a live auth-on server.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import quote

import pytest

from tests.security.auth_world import PASSWORD, World
from tests.web.support import Browser

pytestmark = pytest.mark.compat

BrowserFor = Callable[[str], Browser]


@dataclass
class Logged:
    experiment_id: str
    run_id: str
    model_id: str
    model: str
    other_model_id: str  # a second logged model of the same run (its sibling folder)


@contextlib.contextmanager
def _as_editor(world: World) -> Iterator[None]:
    import mlflow

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_USERNAME", f"editor-{world.u}")
        patch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)
        mlflow.set_tracking_uri(world.server.url)
        mlflow.set_registry_uri(world.server.url)
        yield
        while mlflow.active_run() is not None:
            mlflow.end_run()


@pytest.fixture(scope="module")
def logged(web_world: World) -> Logged:
    """A run that logs two sklearn models (one registered) with params, metrics and a tag."""
    import mlflow
    from sklearn.linear_model import LogisticRegression

    experiment = web_world.experiment_name_for("logged-models")
    model = web_world.model_name_for("logged")
    with _as_editor(web_world):
        exp = mlflow.set_experiment(experiment)
        with mlflow.start_run(run_name="lm-run") as run:
            mlflow.log_param("C", 0.5)
            info = mlflow.sklearn.log_model(
                LogisticRegression(C=0.5).fit([[0.0], [1.0]], [0, 1]),
                name="model",
                registered_model_name=model,
                params={"solver": "lbfgs"},
                tags={"team": "fraud"},
            )
            mlflow.log_metric("val_auc", 0.91, model_id=info.model_id)
            other = mlflow.sklearn.log_model(
                LogisticRegression(C=2.0).fit([[0.0], [1.0]], [0, 1]), name="challenger"
            )
    return Logged(exp.experiment_id, run.info.run_id, info.model_id, model, other.model_id)


def _logged_model_block(page_html: str, model_id: str) -> str:
    found = re.search(
        rf'data-testid="logged-model" data-model-id="{model_id}".*?</article>', page_html, re.S
    )
    assert found, f"logged model {model_id} is not on the page"
    return found.group(0)


def _entries(page_html: str) -> list[str]:
    return re.findall(r'data-testid="artifact-entry" data-path="([^"]*)"', page_html)


def test_the_run_page_lists_its_logged_models_with_their_registered_version(
    logged: Logged, browser_for: BrowserFor
) -> None:
    reader = browser_for("reader")
    page = reader.get(f"/runs/{logged.run_id}")
    assert page.status_code == 200
    block = _logged_model_block(page.text, logged.model_id)
    assert 'data-testid="logged-model-name">model<' in block
    flavors = re.search(r'data-testid="logged-model-flavors">(.*?)</dd>', block, re.S)
    assert flavors and "sklearn" in flavors.group(1) and "python_function" in flavors.group(1)
    version_href = f"/models/{quote(logged.model, safe='')}/versions/1"
    assert f'href="{version_href}" data-testid="logged-model-version"' in block
    assert re.search(r"<th[^>]*>solver</th><td[^>]*>lbfgs</td>", block)
    assert re.search(r"<th[^>]*>val_auc</th><td[^>]*>0\.91</td>", block)
    assert re.search(r"<th[^>]*>team</th><td[^>]*>fraud</td>", block)
    assert "mlflow.modelVersions" not in block  # shown as links, not as raw JSON
    assert f'href="/logged-models/{logged.model_id}/artifacts"' in block
    # The version link leads to the version, which names the logged model it came from.
    assert reader.get(version_href).status_code == 200
    # The unregistered sibling is listed too, with no version.
    sibling = _logged_model_block(page.text, logged.other_model_id)
    assert "no registered version you can see" in sibling


def test_a_reader_of_the_experiment_but_not_the_model_sees_the_logged_model_without_the_version(
    logged: Logged, web_world: World
) -> None:
    name = web_world.fresh("exp-only")
    web_world.create_user(name)
    web_world.grant(name, "experiment", f"team-{web_world.u}-*", "reader")
    browser = Browser(web_world.server.url)
    try:
        assert browser.login(name, PASSWORD).status_code == 303
        page = browser.get(f"/runs/{logged.run_id}")
        assert page.status_code == 200
        block = _logged_model_block(page.text, logged.model_id)
        assert 'data-testid="logged-model-version"' not in block
        assert "no registered version you can see" in block
        assert logged.model not in page.text
    finally:
        browser.close()


def test_the_artifact_browser_lists_previews_and_serves_a_logged_models_files(
    logged: Logged, browser_for: BrowserFor
) -> None:
    reader = browser_for("reader")
    base = f"/logged-models/{logged.model_id}/artifacts"
    listing = reader.get(base)
    assert listing.status_code == 200
    entries = _entries(listing.text)
    assert {"MLmodel", "requirements.txt"} <= set(entries)
    # The serialized estimator (model.pkl or model.skops, by MLflow version).
    serialized = next(e for e in entries if e.startswith("model."))
    preview = reader.get(base, params={"path": "MLmodel"})
    assert preview.status_code == 200
    assert 'data-testid="artifact-preview"' in preview.text and "sklearn_version" in preview.text
    raw = reader.get(f"{base}/raw", params={"path": "MLmodel", "download": "1"})
    assert raw.status_code == 200
    assert raw.headers["content-disposition"].startswith("attachment")
    assert raw.headers["content-type"] == "application/octet-stream"
    assert b"flavors:" in raw.content and logged.model_id.encode() in raw.content
    binary = reader.get(f"{base}/raw", params={"path": serialized})
    assert binary.status_code == 200 and len(binary.content) > 0
    assert binary.headers["content-disposition"].startswith("attachment")
    assert reader.get(base, params={"path": "nope.txt"}).status_code == 404
    # The run's own artifact page points at the logged models' files.
    run_files = reader.get(f"/runs/{logged.run_id}/artifacts")
    assert run_files.status_code == 200
    assert f'href="{base}" data-testid="logged-model-files-link"' in run_files.text


@pytest.mark.parametrize("level", ["anonymous", "nobody", "outsider"])
def test_a_user_without_read_access_is_refused_the_logged_models_files(
    logged: Logged, browser_for: BrowserFor, level: str
) -> None:
    browser = browser_for(level)
    base = f"/logged-models/{logged.model_id}/artifacts"
    for path, params in (
        (base, {}),
        (base, {"path": "MLmodel"}),
        (f"{base}/raw", {"path": "MLmodel"}),
        (f"/runs/{logged.run_id}", {}),
    ):
        response = browser.get(path, params=params, follow=False)
        if level == "anonymous":
            assert response.status_code == 303 and "/login" in response.headers["location"]
        else:
            assert response.status_code == 403, (path, response.status_code)
            assert "PERMISSION_DENIED" in response.text
            assert "sklearn_version" not in response.text and "lbfgs" not in response.text


@pytest.mark.parametrize(
    "path",
    [
        "../MLmodel",
        "../../../../etc/passwd",
        "/etc/passwd",
        "..%2fMLmodel",
        "%2e%2e/MLmodel",
        "..\\MLmodel",
        "./../MLmodel",
        "file:///etc/passwd",
        "C:/Windows/win.ini",
        "a/../../MLmodel",
    ],
)
def test_paths_leaving_the_logged_models_root_are_refused(
    logged: Logged, browser_for: BrowserFor, path: str
) -> None:
    """No spelling reaches a sibling's files (the other logged model of the same run sits at
    ``../../<other id>/artifacts``) or anything else outside the model's own folder."""
    reader = browser_for("reader")
    base = f"/logged-models/{logged.model_id}/artifacts"
    for route in (base, f"{base}/raw"):
        response = reader.get(route, params={"path": path})
        assert response.status_code == 400, (route, path, response.status_code)
        assert "INVALID_PARAMETER_VALUE" in response.text
    sibling = f"../../{logged.other_model_id}/artifacts/MLmodel"
    response = reader.get(f"{base}/raw", params={"path": sibling})
    assert response.status_code == 400 and b"flavors:" not in response.content


def test_an_unknown_or_malformed_logged_model_is_not_found_for_an_admin(
    browser_for: BrowserFor,
) -> None:
    admin = browser_for("admin")
    for model_id in ("m-" + "0" * 32, "not-a-model"):
        response = admin.get(f"/logged-models/{model_id}/artifacts")
        assert response.status_code == 404, response.status_code
        assert "RESOURCE_DOES_NOT_EXIST" in response.text
