"""MLflow's own web UI, served by mlgate at /mlflow/, in a real browser: the experiment list,
the runs table, a run's metric chart, the artifact browser, the registered model and version
pages, all with data logged by the official MLflow client and seen by a signed-in user through
their grants. Also the links the client prints (``<tracking uri>/#/experiments/<id>/runs/<id>``,
``#/models/<name>/versions/<v>``), which must open the object on mlgate's own pages.

Screenshots go to test-output/screenshots/<backend>/mlflow-ui-*.png.
"""

from __future__ import annotations

import contextlib
import io
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from gates.server.mlflow_ui.bundle import find_bundle
from tests.security.auth_world import ADMIN_PASSWORD, ADMIN_USER
from tests.web.browser.conftest import UI, Browsers, BrowserServer
from tests.web.browser.seed import PASSWORDS

pytestmark = pytest.mark.skipif(
    find_bundle() is None,
    reason="MLflow's UI bundle is not installed (pip install -e '.[mlflow-ui]'; make test does)",
)
USER = "scientist"  # editor of lab-* experiments and fraud-* registered models
RUN_LINK = re.compile(r"View run \S+ at: (\S+)")


@dataclass
class Logged:
    experiment: str
    experiment_id: str
    run_id: str
    run_name: str
    run_link: str
    model: str
    version: str
    hidden_experiment: str


@contextlib.contextmanager
def _as(url: str, username: str, password: str) -> Iterator[None]:
    import mlflow

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_USERNAME", username)
        patch.setenv("MLFLOW_TRACKING_PASSWORD", password)
        mlflow.set_tracking_uri(url)
        mlflow.set_registry_uri(url)
        yield


@pytest.fixture(scope="module")
def logged(browser_server: BrowserServer) -> Logged:
    """A scientist's training run logged with the official client, its model registered; an
    administrator's experiment the scientist may not read; an alias set by the administrator."""
    import mlflow
    from mlflow import MlflowClient
    from sklearn.linear_model import LogisticRegression

    u = uuid.uuid4().hex[:8]
    url = browser_server.url
    experiment, model = f"lab-mlflow-ui-{u}", f"fraud-mlflow-ui-{u}"
    printed = io.StringIO()
    with _as(url, USER, PASSWORDS[USER]):
        exp = mlflow.set_experiment(experiment)
        with contextlib.redirect_stdout(printed), mlflow.start_run(run_name=f"rf-{u}") as run:
            mlflow.log_param("n_estimators", 200)
            for step in range(30):
                mlflow.log_metric("val_loss", 1.0 / (step + 1), step=step)
            mlflow.log_metric("val_auc", 0.93)
            mlflow.log_text("hello from the artifact browser\n", "notes/readme.txt")
            mlflow.sklearn.log_model(
                LogisticRegression().fit([[0.0], [1.0]], [0, 1]),
                name="model",
                registered_model_name=model,
            )
    with _as(url, ADMIN_USER, ADMIN_PASSWORD):
        hidden = f"admin-only-{u}"
        mlflow.create_experiment(hidden)
        MlflowClient().set_registered_model_alias(model, "candidate", "1")
    link = RUN_LINK.search(printed.getvalue())
    assert link, printed.getvalue()
    return Logged(
        experiment=experiment,
        experiment_id=exp.experiment_id,
        run_id=run.info.run_id,
        run_name=f"rf-{u}",
        run_link=link.group(1),
        model=model,
        version="1",
        hidden_experiment=hidden,
    )


class Watched:
    """Every failed request the UI makes: only the ones MLflow's UI itself tolerates pass."""

    # users/current is MLflow's auth plugin (404 on a plain mlflow server too); 501 is
    # mlgate's "GenAI feature not supported" answer.
    TOLERATED = re.compile(r"/mlflow/ajax-api/2\.0/mlflow/users/current(\?|$)")

    def __init__(self, ui: UI) -> None:
        self.failed: list[tuple[int, str]] = []
        ui.allow_status(404)
        ui.allow_status(501)
        ui.page.on("response", self._seen)

    def _seen(self, response: Any) -> None:
        if response.status >= 400:
            self.failed.append((response.status, response.url))

    def assert_only_tolerated(self) -> None:
        bad = [
            (status, url)
            for status, url in self.failed
            if status != 501 and not (status == 404 and self.TOLERATED.search(url))
        ]
        assert not bad, f"MLflow's UI got unexpected errors: {bad}"


def _open(browsers: Browsers) -> tuple[UI, Watched]:
    ui = browsers.signed_in(USER)
    return ui, Watched(ui)


def test_experiment_list_and_runs_table(browsers: Browsers, logged: Logged) -> None:
    ui, watched = _open(browsers)
    ui.goto("/mlflow/#/experiments")
    ui.page.get_by_text(logged.experiment, exact=True).first.wait_for()
    # The list is filtered by the user's grants, as every mlgate search is.
    assert ui.page.get_by_text(logged.hidden_experiment).count() == 0
    ui.shot("mlflow-ui-experiments")
    ui.goto(f"/mlflow/#/experiments/{logged.experiment_id}/runs")
    ui.page.get_by_text(logged.run_name).first.wait_for()
    ui.shot("mlflow-ui-runs")
    watched.assert_only_tolerated()
    ui.assert_no_browser_errors()


def test_run_page_draws_the_metric_chart(browsers: Browsers, logged: Logged) -> None:
    ui, watched = _open(browsers)
    with ui.page.expect_response(lambda r: "get-history-bulk-interval" in r.url) as answer:
        ui.goto(f"/mlflow/#/experiments/{logged.experiment_id}/runs/{logged.run_id}/model-metrics")
    points = answer.value.json()["metrics"]
    assert answer.value.status == 200 and len(points) == 30
    assert ui.page.get_by_text(logged.run_name).count() >= 1
    ui.page.get_by_text("val_loss").first.wait_for()
    ui.page.locator(".js-plotly-plot, canvas, svg.main-svg").first.wait_for()
    ui.shot("mlflow-ui-run-metrics")
    ui.goto(f"/mlflow/#/experiments/{logged.experiment_id}/runs/{logged.run_id}")
    ui.page.get_by_text("n_estimators").first.wait_for()
    ui.shot("mlflow-ui-run")
    watched.assert_only_tolerated()
    ui.assert_no_browser_errors()


def test_artifact_browser_previews_a_file(browsers: Browsers, logged: Logged) -> None:
    ui, watched = _open(browsers)
    ui.goto(f"/mlflow/#/experiments/{logged.experiment_id}/runs/{logged.run_id}/artifacts")
    ui.page.get_by_text("notes", exact=True).first.click()
    ui.page.get_by_text("readme.txt", exact=True).first.click()
    ui.page.get_by_text("hello from the artifact browser").first.wait_for()
    ui.shot("mlflow-ui-artifacts")
    watched.assert_only_tolerated()
    ui.assert_no_browser_errors()


def test_registered_model_and_version_pages(
    browsers: Browsers, browser_server: BrowserServer, logged: Logged
) -> None:
    ui, watched = _open(browsers)
    ui.goto("/mlflow/#/models")
    ui.page.get_by_text(logged.model, exact=True).first.wait_for()
    ui.goto(f"/mlflow/#/models/{logged.model}")
    ui.page.get_by_text("Version 1").first.wait_for()
    ui.page.get_by_text("candidate").first.wait_for()
    ui.shot("mlflow-ui-model")
    # A write from the UI: the browser's same-origin fetch, signed in by the session cookie.
    ui.page.get_by_text("Tags", exact=True).first.click()  # the collapsed section
    with ui.page.expect_response(lambda r: "registered-models/set-tag" in r.url) as answer:
        ui.page.get_by_placeholder("Name").fill("reviewed-by")
        ui.page.get_by_placeholder("Value").fill("scientist")
        ui.page.get_by_test_id("add-tag-button").click()
    assert answer.value.status == 200
    ui.page.get_by_text("reviewed-by").first.wait_for()
    # The API agrees (read back with the administrator's credentials).
    got = httpx.get(
        f"{browser_server.url}/api/2.0/mlflow/registered-models/get",
        params={"name": logged.model},
        auth=(ADMIN_USER, ADMIN_PASSWORD),
    ).json()["registered_model"]
    assert {"key": "reviewed-by", "value": "scientist"} in got["tags"]
    ui.goto(f"/mlflow/#/models/{logged.model}/versions/{logged.version}")
    ui.page.get_by_text(logged.run_name).first.wait_for()
    ui.page.get_by_text("candidate").first.wait_for()
    ui.shot("mlflow-ui-version")
    watched.assert_only_tolerated()
    ui.assert_no_browser_errors()


# --- the links the MLflow client prints ----------------------------------------------------------


def test_the_printed_run_link_opens_the_run_on_mlgates_pages(
    browsers: Browsers, browser_server: BrowserServer, logged: Logged
) -> None:
    assert logged.run_link == (
        f"{browser_server.url}/#/experiments/{logged.experiment_id}/runs/{logged.run_id}"
    )
    ui = browsers.signed_in(USER)
    ui.page.goto(logged.run_link)
    ui.page.wait_for_url(f"{browser_server.url}/runs/{logged.run_id}")
    assert logged.run_name in ui.page.content()
    ui.assert_no_browser_errors()
    # Signed out, the link goes through the sign-in page and lands on the run.
    anonymous = browsers.anonymous()
    anonymous.page.goto(logged.run_link)
    anonymous.page.wait_for_url(re.compile(r"/login"))
    anonymous.page.fill("input[name=username]", USER)
    anonymous.page.fill("input[name=password]", PASSWORDS[USER])
    anonymous.page.click("form[action='/login'] button[type=submit]")
    anonymous.page.wait_for_url(f"{browser_server.url}/runs/{logged.run_id}")
    anonymous.assert_no_browser_errors()


def test_a_version_link_opens_the_version_on_mlgates_pages(
    browsers: Browsers, browser_server: BrowserServer, logged: Logged
) -> None:
    ui = browsers.signed_in(USER)
    ui.page.goto(f"{browser_server.url}/#/models/{logged.model}/versions/{logged.version}")
    ui.page.wait_for_url(f"{browser_server.url}/models/{logged.model}/versions/{logged.version}")
    ui.page.goto(f"{browser_server.url}/#/models/{logged.model}")
    ui.page.wait_for_url(f"{browser_server.url}/models/{logged.model}")
    # Anything else after "#/" is left alone: the home page goes to the models list.
    ui.page.goto(f"{browser_server.url}/#/somewhere/else")
    ui.page.wait_for_url(re.compile(r"/models#/somewhere/else$"))
    ui.assert_no_browser_errors()
