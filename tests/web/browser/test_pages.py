"""The main pages render in a real browser, with their content and no console or CSP errors;
screenshots of each go to test-output/screenshots/<backend>/."""

from __future__ import annotations

from datetime import UTC, datetime

from tests.security.auth_world import ADMIN_USER
from tests.web.browser.conftest import Browsers
from tests.web.browser.seed import MODEL, SECOND_MODEL, Seed


def test_models_list_shows_stages_and_gates(browsers: Browsers, seed: Seed) -> None:
    ui = browsers.signed_in("scientist")  # sign-in lands here
    table = ui.page.get_by_test_id("models-table")
    text = table.inner_text()
    assert MODEL in text and SECOND_MODEL in text
    row = table.locator("tr", has_text=MODEL).first
    assert row.get_by_test_id("gate-badge").count() >= 1
    assert "Production" in row.inner_text()
    ui.shot("models")
    ui.assert_no_browser_errors()


def test_model_page_shows_versions_timeline_policies_and_approvals(
    browsers: Browsers, seed: Seed
) -> None:
    ui = browsers.signed_in("scientist")
    ui.page.get_by_test_id("models-table").get_by_role("link", name=MODEL, exact=True).click()
    ui.page.wait_for_load_state("load")
    assert ui.page.get_by_test_id("model-name").inner_text().strip() == MODEL
    versions = ui.page.get_by_test_id("versions-table")
    assert versions.locator("tr[data-version='1']").count() == 1
    assert versions.locator(f"tr[data-version='{seed.candidate_version}']").count() == 1
    assert "fraud-detector-production" in ui.page.get_by_test_id("policies").inner_text()
    assert ui.page.get_by_test_id("timeline").locator("li[data-pointer='Production']").count() >= 1
    ui.page.get_by_test_id("model-approvals").wait_for()
    # "What was in Production on date X": now, version 1 or the approved candidate.
    form = ui.page.get_by_test_id("as-of-form")
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    form.locator("input[name=at]").fill(now)
    form.locator("button[type=submit]").click()
    ui.page.wait_for_load_state("load")
    held = ui.page.get_by_test_id("as-of-result").locator("dd[data-pointer='Production']")
    assert held.get_attribute("data-version") in ("1", seed.candidate_version)
    ui.shot("model")
    ui.assert_no_browser_errors()


def test_version_page_shows_provenance_artifacts_decisions_and_comparison(
    browsers: Browsers, seed: Seed
) -> None:
    ui = browsers.signed_in("scientist")
    ui.goto(f"/models/{MODEL}/versions/{seed.candidate_version}")
    provenance = ui.page.get_by_test_id("provenance").inner_text()
    assert "lr" in provenance and "0.971" in provenance
    assert "transactions-2024-03" in provenance  # the dataset input
    assert "MLmodel" in ui.page.get_by_test_id("artifacts").inner_text()
    decisions = ui.page.get_by_test_id("decisions").inner_text()
    assert "metric:accuracy" in decisions
    assert "0.971" in ui.page.get_by_test_id("comparison").inner_text()
    ui.shot("version")
    # Against @champion (version 1 whether or not the approval test ran first).
    form = ui.page.get_by_test_id("comparison")
    form.locator("input[name=target]").fill("@champion")
    form.locator("button[type=submit]").click()
    ui.page.wait_for_load_state("load")
    compared = ui.page.get_by_test_id("comparison").locator("[data-holder]")
    assert compared.get_attribute("data-holder") == "1"
    row = compared.locator("tr[data-metric='accuracy']")
    assert row.locator("[data-field=candidate]").inner_text().strip() == "0.971"
    assert row.locator("[data-field=holder]").inner_text().strip() == "0.931"
    ui.assert_no_browser_errors()


def test_audit_page_lists_the_trail(browsers: Browsers, seed: Seed) -> None:
    ui = browsers.signed_in(ADMIN_USER)
    ui.goto("/audit")
    table = ui.page.get_by_test_id("audit-table")
    assert table.get_by_test_id("audit-row").count() >= 3
    assert MODEL in table.inner_text()
    ui.shot("audit")
    ui.assert_no_browser_errors()


def test_webhooks_page_lists_the_subscription(browsers: Browsers, seed: Seed) -> None:
    ui = browsers.signed_in(ADMIN_USER)
    ui.goto("/webhooks")
    table = ui.page.get_by_test_id("webhooks-table")
    assert "release-bot" in table.inner_text()
    ui.shot("webhooks")
    table.get_by_role("link", name="release-bot").first.click()
    ui.page.wait_for_load_state("load")
    ui.page.get_by_test_id("deliveries-table").wait_for()
    ui.shot("webhook-deliveries")
    ui.assert_no_browser_errors()


def test_experiments_list_renders(browsers: Browsers, seed: Seed) -> None:
    ui = browsers.signed_in("reader")
    ui.goto("/experiments")
    assert "lab-fraud" in ui.page.get_by_test_id("experiments-table").inner_text()
    ui.shot("experiments")
    ui.assert_no_browser_errors()
