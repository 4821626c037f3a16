"""A data scientist in the browser: find the best run by filtering and sorting, compare two runs
with their curves, chart a long history, and preview a run's artifacts."""

from __future__ import annotations

import re
from typing import Any

from tests.web.browser.conftest import UI, Browsers
from tests.web.browser.seed import (
    BEST_RUN,
    EXPERIMENT,
    LONG_RUN,
    LONG_STEPS,
    NOTES,
    PNG_SIZE,
    RUNNER_UP,
    Seed,
)


def _column_index(table: Any, label: str) -> int:
    headers = [h.strip().lower() for h in table.locator("thead th").all_inner_texts()]
    for index, text in enumerate(headers):
        if re.search(rf"\b{label}\b", text):
            return index
    raise AssertionError(f"no '{label}' column in the runs table: {headers}")


def _column_values(table: Any, index: int) -> list[float]:
    rows = table.get_by_test_id("run-row")
    values = []
    for i in range(rows.count()):
        text = rows.nth(i).locator("td").nth(index).inner_text().strip()
        values.append(float(text))
    return values


def _filter_runs(ui: UI, expression: str) -> None:
    box = ui.page.locator("input[name=filter]:not([type=hidden])")
    box.fill(expression)
    box.press("Enter")
    ui.page.wait_for_load_state("load")


def _open_experiment(ui: UI) -> None:
    ui.goto("/experiments")
    table = ui.page.get_by_test_id("experiments-table")
    table.get_by_role("link", name=EXPERIMENT, exact=True).click()
    ui.page.wait_for_load_state("load")
    ui.page.get_by_test_id("runs-table").wait_for()


def test_find_the_best_run_by_filtering_and_sorting(browsers: Browsers, seed: Seed) -> None:
    ui = browsers.signed_in("scientist")
    _open_experiment(ui)
    assert re.search(rf"/experiments/{seed.experiment_id}(\?|$)", ui.page.url)

    # A bad filter is explained inline, not a 500.
    ui.allow_status(400)
    _filter_runs(ui, "metrics.accuracy >>> 0.5")
    assert ui.page.get_by_test_id("filter-error").inner_text().strip()

    _filter_runs(ui, "metrics.accuracy > 0.5")
    assert ui.page.get_by_test_id("filter-error").count() == 0
    table = ui.page.get_by_test_id("runs-table")
    header = table.locator("thead").get_by_role("link", name=re.compile(r"accuracy", re.I)).first
    header.click()
    ui.page.wait_for_load_state("load")
    table = ui.page.get_by_test_id("runs-table")
    column = _column_index(table, "accuracy")
    values = _column_values(table, column)
    if values != sorted(values, reverse=True):  # the first click sorted ascending: toggle
        assert values == sorted(values), values
        table.locator("thead").get_by_role("link", name=re.compile(r"accuracy", re.I)).first.click()
        ui.page.wait_for_load_state("load")
        table = ui.page.get_by_test_id("runs-table")
        values = _column_values(table, column)
    assert values == sorted(values, reverse=True), values
    assert values and all(v > 0.5 for v in values)
    expected = seed.accuracies_above(0.5)
    if ui.page.get_by_test_id("next-page").count() == 0:
        assert len(values) == len(expected)  # the filter kept exactly these runs
    first = table.get_by_test_id("run-row").first
    assert BEST_RUN in first.inner_text()
    assert seed.best.run_id in first.inner_html()
    assert values[0] == seed.best.accuracy
    # The filter survives the sort.
    assert (
        ui.page.locator("input[name=filter]:not([type=hidden])").input_value()
        == "metrics.accuracy > 0.5"
    )
    ui.shot("runs-table")
    ui.assert_no_browser_errors()


def _tick(ui: UI, run_name: str) -> None:
    row = ui.page.get_by_test_id("run-row").filter(has_text=re.compile(rf"\b{run_name}\b"))
    row.first.locator("input[name=run_ids]").check()


def _wait_for_chart(container: Any) -> None:
    container.locator(".uplot canvas").first.wait_for(state="visible")
    box = container.locator(".uplot canvas").first.bounding_box()
    assert box and box["width"] > 50 and box["height"] > 50


def test_compare_two_runs_and_see_their_curves(browsers: Browsers, seed: Seed) -> None:
    ui = browsers.signed_in("scientist")
    _open_experiment(ui)
    _filter_runs(ui, "tags.history = '200'")
    _tick(ui, BEST_RUN)
    _tick(ui, RUNNER_UP)
    ui.page.get_by_test_id("compare-button").click()
    ui.page.wait_for_load_state("load")
    assert "/runs/compare" in ui.page.url

    params = ui.page.get_by_test_id("compare-params")
    changed = params.locator("tr.changed")
    assert changed.count() >= 1
    changed_text = " ".join(changed.all_inner_texts())
    best, runner_up = seed.best.params, seed.run(RUNNER_UP).params
    for key in ("lr", "depth", "optimizer"):
        if best[key] != runner_up[key]:
            assert key in changed_text, (key, changed_text)
    metrics = ui.page.get_by_test_id("compare-metrics").inner_text()
    assert str(seed.best.accuracy) in metrics and str(seed.run(RUNNER_UP).accuracy) in metrics

    chart = ui.page.get_by_test_id("metric-chart").first
    _wait_for_chart(chart)
    ui.shot("compare")
    ui.assert_no_browser_errors()


def test_charts_page_overlays_curves_and_downsamples_a_long_history(
    browsers: Browsers, seed: Seed
) -> None:
    ui = browsers.signed_in("scientist")
    sizes: list[tuple[str, int]] = []

    def remember(response: Any) -> None:
        if "/static/" not in response.url:
            try:
                sizes.append((response.url, len(response.body())))
            except Exception:  # a redirect has no body
                sizes.append((response.url, 0))

    ui.page.on("response", remember)
    best, long_run = seed.best.run_id, seed.run(LONG_RUN).run_id
    ui.goto(f"/experiments/{seed.experiment_id}/charts?run_ids={best}&run_ids={long_run}")
    charts = ui.page.get_by_test_id("metric-chart")
    _wait_for_chart(charts.first)
    long_chart = charts.filter(has_text="accuracy").first
    assert "downsampled" in long_chart.inner_text()
    # The scatter plot and the parallel coordinates are drawn as SVG by the page's script.
    scatter = ui.page.get_by_test_id("scatter-chart")
    scatter.locator("svg circle.dot").first.wait_for()
    assert scatter.locator("svg circle.dot").count() == 2
    parallel = ui.page.get_by_test_id("parallel-chart")
    parallel.locator("svg .pc-line").first.wait_for()
    ui.page.wait_for_load_state("networkidle")
    # Two metrics of 20,000 points each would weigh well over a megabyte as JSON: the server
    # must send a downsampled series instead.
    total = sum(size for _, size in sizes)
    assert total < 400_000, (total, sizes)
    assert LONG_STEPS > 10_000
    ui.shot("charts")
    ui.assert_no_browser_errors()


def _open_artifact(ui: UI, *parts: str) -> None:
    tree = ui.page.get_by_test_id("artifact-tree")
    for part in parts:
        tree.get_by_role("link", name=re.compile(rf"^{re.escape(part)}\/?$")).first.click()
        ui.page.wait_for_load_state("load")
        tree = ui.page.get_by_test_id("artifact-tree")


def test_preview_artifacts_text_image_and_mlmodel(browsers: Browsers, seed: Seed) -> None:
    ui = browsers.signed_in("scientist")
    ui.goto(f"/runs/{seed.best.run_id}")
    assert BEST_RUN in ui.page.content()
    ui.shot("run")
    ui.page.get_by_test_id("artifacts-link").first.click()
    ui.page.wait_for_load_state("load")
    assert f"/runs/{seed.best.run_id}/artifacts" in ui.page.url

    _open_artifact(ui, "notes.txt")
    preview = ui.page.get_by_test_id("artifact-preview")
    assert NOTES.splitlines()[0] in preview.inner_text()
    assert ui.page.get_by_test_id("download-link").count() >= 1
    ui.shot("artifact-preview")

    ui.goto(f"/runs/{seed.best.run_id}/artifacts")
    _open_artifact(ui, "metrics.json")
    assert "0.971" in ui.page.get_by_test_id("artifact-preview").inner_text()

    ui.goto(f"/runs/{seed.best.run_id}/artifacts")
    _open_artifact(ui, "plots", "roc.png")
    image = ui.page.get_by_test_id("artifact-preview").locator("img").first
    image.wait_for()
    ui.page.wait_for_function("(img) => img.complete", arg=image.element_handle())
    assert image.evaluate("(img) => img.naturalWidth") == PNG_SIZE[0]
    ui.shot("artifact-preview-image")

    ui.goto(f"/runs/{seed.best.run_id}/artifacts")
    _open_artifact(ui, "model", "MLmodel")
    text = ui.page.get_by_test_id("artifact-preview").inner_text()
    assert "python_function" in text and "sklearn" in text
    ui.shot("artifact-preview-mlmodel")
    ui.assert_no_browser_errors()
