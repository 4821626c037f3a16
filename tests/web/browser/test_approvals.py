"""Release approvals in the browser: an approver signs off a Production move and sees the
timeline change; an approver's own request is refused; a reader gets no buttons."""

from __future__ import annotations

from typing import Any

from tests.security.auth_world import ADMIN_PASSWORD, ADMIN_USER
from tests.web.browser.conftest import Browsers
from tests.web.browser.seed import MODEL, SECOND_MODEL, Seed, approval_request, model_version


def _stage(seed: Seed, model: str, version: str) -> str:
    return str(model_version(seed.url, ADMIN_USER, ADMIN_PASSWORD, model, version)["current_stage"])


def _request(seed: Seed, request_id: str) -> dict[str, Any]:
    found: dict[str, Any] = approval_request(seed.url, ADMIN_USER, ADMIN_PASSWORD, request_id)
    return dict(found["approval_request"])


def test_approver_approves_pending_production_request_and_timeline_shows_the_move(
    browsers: Browsers, seed: Seed
) -> None:
    version = seed.candidate_version
    assert _stage(seed, MODEL, version) == "None"  # registered by the gate, not moved yet
    ui = browsers.signed_in("approver")
    ui.goto("/approvals")
    card = ui.page.get_by_test_id(f"approval-{seed.model_request_id}")
    card.wait_for()
    text = card.inner_text()
    assert MODEL in text and "scientist" in text  # the requester
    # Its decision record with the checks, and the champion next to the candidate.
    checks = card.get_by_test_id("checks")
    assert "metric:accuracy" in checks.inner_text()
    assert "champion:accuracy" in checks.inner_text()
    assert "0.971" in card.get_by_test_id("champion-comparison").inner_text()
    ui.shot("approvals-inbox")

    card.locator("textarea[name=comment]").fill("Beats the champion by 4 points; ship it.")
    card.get_by_test_id("approve-button").click()
    ui.page.wait_for_load_state("load")
    flash = ui.page.get_by_test_id("flash")
    assert "approved" in flash.inner_text().lower()
    assert "separation" not in flash.inner_text().lower()

    ui.goto(f"/models/{MODEL}")
    row = ui.page.get_by_test_id("versions-table").locator(f"tr[data-version='{version}']")
    assert row.get_by_test_id("stage").inner_text().strip() == "Production"
    previous = ui.page.get_by_test_id("versions-table").locator("tr[data-version='1']")
    assert previous.get_by_test_id("stage").inner_text().strip() == "Archived"
    timeline = ui.page.get_by_test_id("timeline")
    # The newest moves: version 1 archived and this version into Production, in one step.
    newest = timeline.locator("li").nth(0), timeline.locator("li").nth(1)
    moves = {(li.get_attribute("data-pointer"), li.get_attribute("data-to")) for li in newest}
    assert ("Production", version) in moves, timeline.inner_text()[:1000]
    promoted = timeline.locator(f"li[data-pointer='Production'][data-to='{version}']")
    assert "fraud-detector-production" in promoted.inner_text()  # the comment names the gate
    ui.shot("model-after-approval")
    ui.assert_no_browser_errors()

    # The server agrees: the version moved, the request is closed.
    assert _stage(seed, MODEL, version) == "Production"
    assert _stage(seed, MODEL, "1") == "Archived"
    assert _request(seed, seed.model_request_id)["status"] == "approved"


def test_approver_cannot_approve_their_own_request(browsers: Browsers, seed: Seed) -> None:
    ui = browsers.signed_in("approver")
    ui.goto("/approvals")
    card = ui.page.get_by_test_id(f"approval-{seed.own_request_id}")
    assert "approver" in card.locator("[data-field=requester]").inner_text()
    # Separation of duties: the requester is not offered approve or reject, and is told why.
    assert card.get_by_test_id("approve-button").count() == 0
    assert card.get_by_test_id("reject-button").count() == 0
    assert "separation of duties" in card.get_by_test_id("approval-barred").inner_text()
    assert card.get_by_test_id("cancel-button").count() == 1
    ui.shot("approval-refused")
    ui.assert_no_browser_errors()

    # Nothing moved, and the refusal left no approval behind.
    assert _stage(seed, SECOND_MODEL, "1") == "None"
    request = _request(seed, seed.own_request_id)
    assert request["status"] == "pending"
    assert request["approvals"] == 0


def test_reader_sees_requests_but_no_approve_buttons(browsers: Browsers, seed: Seed) -> None:
    # A control first: a second approver does get the buttons on the same card.
    approver2 = browsers.signed_in("approver2")
    approver2.goto("/approvals")
    card = approver2.page.get_by_test_id(f"approval-{seed.own_request_id}")
    assert card.get_by_test_id("approve-button").count() == 1
    approver2.assert_no_browser_errors()

    reader = browsers.signed_in("reader")
    reader.goto("/approvals")
    card = reader.page.get_by_test_id(f"approval-{seed.own_request_id}")
    card.wait_for()
    assert SECOND_MODEL in card.inner_text()
    assert reader.page.get_by_test_id("approve-button").count() == 0
    assert reader.page.get_by_test_id("reject-button").count() == 0
    assert reader.page.locator("textarea[name=comment]").count() == 0
    reader.shot("approvals-as-reader")
    reader.assert_no_browser_errors()
