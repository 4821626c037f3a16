"""Charts and tables in the browser: the metric charts' x axis by step, wall time or relative
time; single-value metrics shown as values; the audit table fitting common widths; a run's
logged model and its files.

Screenshots go to test-output/screenshots/<backend>/.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.security.auth_world import ADMIN_PASSWORD, ADMIN_USER
from tests.web.browser.conftest import UI, Browsers
from tests.web.browser.seed import API, ARTIFACTS, BEST_RUN, MLMODEL, Seed

SINGLE_VALUE_RUN = "trial-00"  # logged accuracy and loss once each (seed.py: history 1)


def _wait_for_chart(container: Any) -> None:
    container.locator(".uplot canvas").first.wait_for(state="visible")


def _x_label(chart: Any) -> str:
    """The x series' name in the uPlot legend (the axis title is drawn on the canvas)."""
    return str(chart.locator(".u-legend .u-series").first.locator(".u-label").inner_text())


def _choose_axis(ui: UI, mode: str) -> None:
    ui.page.get_by_test_id("x-axis-mode").locator(f"input[value={mode}]").check()


def test_toggling_the_x_axis_redraws_the_charts_by_step_wall_time_and_relative_time(
    browsers: Browsers, seed: Seed
) -> None:
    ui = browsers.signed_in("scientist")
    ui.goto(f"/runs/{seed.best.run_id}")
    chart = ui.page.get_by_test_id("metric-chart").filter(has_text="accuracy").first
    _wait_for_chart(chart)
    assert chart.get_attribute("data-x-mode") == "step"
    assert _x_label(chart) == "step"
    pictures = {"step": chart.locator("canvas").first.screenshot()}
    for mode, label in (("wall", "time"), ("relative", "seconds since run start")):
        _choose_axis(ui, mode)
        ui.page.wait_for_function(
            "m => document.querySelector('[data-testid=metric-chart]')"
            ".getAttribute('data-x-mode') === m",
            arg=mode,
        )
        _wait_for_chart(chart)
        assert chart.get_attribute("data-x-mode") == mode
        assert _x_label(chart) == label
        # Exactly one plot per chart after redrawing (the old one is destroyed).
        assert chart.locator(".uplot").count() == 1
        pictures[mode] = chart.locator("canvas").first.screenshot()
        ui.shot(f"run-chart-x-{mode}")
    # The drawing changes with the axis (other tick labels, other spacing of the points).
    assert len(set(pictures.values())) == 3
    _choose_axis(ui, "step")
    ui.page.wait_for_function(
        "() => document.querySelector('[data-testid=metric-chart]')"
        ".getAttribute('data-x-mode') === 'step'"
    )
    assert chart.locator("canvas").first.screenshot() == pictures["step"]
    ui.assert_no_browser_errors()


def test_a_single_value_metric_shows_as_a_value_not_a_one_point_chart(
    browsers: Browsers, seed: Seed
) -> None:
    ui = browsers.signed_in("scientist")
    run = seed.run(SINGLE_VALUE_RUN)
    ui.goto(f"/runs/{run.run_id}")
    values = ui.page.get_by_test_id("metric-value")
    assert sorted(values.evaluate_all("els => els.map(e => e.dataset.key)")) == [
        "accuracy",
        "loss",
    ]
    accuracy = values.filter(has_text="accuracy").first
    assert str(run.accuracy) in accuracy.locator(".trk-single-value").inner_text()
    assert ui.page.get_by_test_id("metric-chart").count() == 0
    assert ui.page.locator(".uplot").count() == 0
    # Nothing to toggle when no chart is drawn.
    assert ui.page.get_by_test_id("x-axis-mode").count() == 0
    ui.shot("run-single-values")
    ui.assert_no_browser_errors()


@pytest.mark.parametrize("width", [1024, 1280])
def test_the_audit_page_has_no_horizontal_overflow_at_common_widths(
    browsers: Browsers, seed: Seed, width: int
) -> None:
    ui = browsers.signed_in(ADMIN_USER)
    ui.page.set_viewport_size({"width": width, "height": 800})
    ui.goto("/audit")
    table = ui.page.get_by_test_id("audit-table")
    assert table.get_by_test_id("audit-row").count() >= 3
    fits = ui.page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")
    assert fits, ui.page.evaluate("() => [document.documentElement.scrollWidth, innerWidth]")
    # The table itself fits its box too: nothing hides behind a horizontal scrollbar.
    assert table.evaluate("t => t.scrollWidth <= t.parentElement.clientWidth + 1")
    # Cut cells keep their full text as a tooltip.
    actor = table.get_by_test_id("audit-actor").first
    assert actor.get_attribute("title") == actor.inner_text().strip()
    ui.shot(f"audit-{width}")
    ui.assert_no_browser_errors()


def test_a_runs_logged_model_and_its_files_are_one_click_away(
    browsers: Browsers, seed: Seed
) -> None:
    """A logged model (as MLflow 3's log_model makes one) with its MLmodel file, created through
    the REST API for the best run; the run page lists it and its files open in the browser."""
    with httpx.Client(base_url=seed.url, auth=(ADMIN_USER, ADMIN_PASSWORD), timeout=30) as api:
        created = api.post(
            f"{API}/logged-models",
            json={
                "experiment_id": seed.experiment_id,
                "name": "model",
                "source_run_id": seed.best.run_id,
                "params": [{"key": "solver", "value": "lbfgs"}],
            },
        )
        assert created.status_code == 200, created.text
        model_id = created.json()["model"]["info"]["model_id"]
        path = f"{seed.experiment_id}/models/{model_id}/artifacts/MLmodel"
        assert api.put(f"{ARTIFACTS}/{path}", content=MLMODEL.encode()).status_code == 200
    ui = browsers.signed_in("scientist")
    ui.goto(f"/runs/{seed.best.run_id}")
    assert BEST_RUN in ui.page.content()
    block = ui.page.locator(f'[data-testid="logged-model"][data-model-id="{model_id}"]')
    assert "sklearn" in block.get_by_test_id("logged-model-flavors").inner_text()
    assert "lbfgs" in block.get_by_test_id("logged-model-params").inner_text()
    ui.shot("run-logged-model")
    block.get_by_test_id("logged-model-artifacts").click()
    ui.page.wait_for_load_state("load")
    assert f"/logged-models/{model_id}/artifacts" in ui.page.url
    ui.page.get_by_test_id("artifact-tree").get_by_role("link", name="MLmodel").click()
    ui.page.wait_for_load_state("load")
    assert "sklearn_version" in ui.page.get_by_test_id("artifact-preview").inner_text()
    ui.shot("logged-model-artifacts")
    ui.assert_no_browser_errors()
