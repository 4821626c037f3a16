"""Registry actions in the browser: a refused move that shows the gate's reason, a promotion
requested by one user and approved by another in a second browser session, editing a
description, and deleting a version with its confirmation step."""

from __future__ import annotations

import re
import uuid

from tests.security.auth_world import ADMIN_PASSWORD, ADMIN_USER
from tests.web.browser.conftest import Browsers
from tests.web.browser.seed import API, MLGATE, RUNNER_UP, Api, Seed, model_version


def gated_model(seed: Seed, *, approvals: int = 1) -> tuple[str, str, str]:
    """A fresh fraud-* model (the seed's grants apply) with version 1 from the runner-up run
    (accuracy 0.944, logged by scientist) and a gate on Production: (model, version, gate)."""
    model = f"fraud-ui-{uuid.uuid4().hex[:8]}"
    gate = f"{model}-production"
    admin = Api(seed.url, ADMIN_USER, ADMIN_PASSWORD)
    try:
        run_id = seed.run(RUNNER_UP).run_id
        admin.call("POST", f"{API}/registered-models/create", json={"name": model})
        admin.call(
            "POST",
            f"{API}/model-versions/create",
            json={"name": model, "source": f"runs:/{run_id}/model", "run_id": run_id},
        )
        admin.call(
            "POST",
            f"{MLGATE}/gates/create",
            json={
                "name": gate,
                "model": model,
                "target": "Production",
                "metrics": ["accuracy >= 0.9"],
                "required_approvals": approvals,
            },
        )
    finally:
        admin.close()
    return model, "1", gate


def stage_of(seed: Seed, model: str, version: str) -> str:
    return str(model_version(seed.url, ADMIN_USER, ADMIN_PASSWORD, model, version)["current_stage"])


def test_a_direct_move_onto_a_gated_stage_is_refused_with_the_gates_reason(
    browsers: Browsers, seed: Seed
) -> None:
    model, version, gate = gated_model(seed)
    ui = browsers.signed_in("approver")
    ui.goto(f"/models/{model}/versions/{version}")
    form = ui.page.get_by_test_id("move-form")
    form.get_by_label("Target (stage or @alias)").fill("Production")
    form.get_by_test_id("move-submit").click()
    ui.page.wait_for_load_state("load")
    flash = ui.page.get_by_test_id("flash")
    assert flash.get_attribute("class") == "error"
    message = flash.inner_text()
    assert f"guarded by gate '{gate}'" in message and "Request promotion" in message
    ui.shot("version-move-refused")
    ui.assert_no_browser_errors()
    assert stage_of(seed, model, version) == "None"


def test_a_promotion_requested_in_one_session_is_approved_in_another(
    browsers: Browsers, seed: Seed
) -> None:
    model, version, gate = gated_model(seed)
    requester = browsers.signed_in("approver")
    requester.goto(f"/models/{model}/versions/{version}")
    requester.shot("version-actions")
    promote = requester.page.get_by_test_id("promote-form")
    promote.get_by_label("Target (stage or @alias)").fill("Production")
    # Keyboard only: Enter in the field submits the form.
    promote.get_by_label("Target (stage or @alias)").press("Enter")
    requester.page.get_by_test_id("dry-run").wait_for()
    assert gate in requester.page.get_by_test_id("dry-run").inner_text()
    assert "approval request" in requester.page.get_by_test_id("dry-run-verdict").inner_text()
    requester.shot("promote-dry-run")
    requester.page.get_by_test_id("promote-confirm").click()
    requester.page.wait_for_load_state("load")
    notice = requester.page.get_by_test_id("flash").inner_text()
    assert "opened approval request" in notice, notice
    request_id = re.search(r"approval request (\S+) for", notice)
    assert request_id
    assert stage_of(seed, model, version) == "None"

    # The requester is offered Cancel, not Approve.
    requester.goto("/approvals")
    mine = requester.page.get_by_test_id(f"approval-{request_id.group(1)}")
    assert mine.get_by_test_id("approve-button").count() == 0
    assert mine.get_by_test_id("cancel-button").count() == 1
    requester.assert_no_browser_errors()

    # A second approver, in their own browser session, approves it.
    other = browsers.signed_in("approver2")
    other.goto("/approvals")
    card = other.page.get_by_test_id(f"approval-{request_id.group(1)}")
    card.locator("textarea[name=comment]").fill("Checked the metrics.")
    card.get_by_test_id("approve-button").click()
    other.page.wait_for_load_state("load")
    assert "moved to Production" in other.page.get_by_test_id("flash").inner_text()
    other.assert_no_browser_errors()
    assert stage_of(seed, model, version) == "Production"

    # Back in the first session, the timeline says the gate moved it.
    requester.goto(f"/models/{model}")
    story = requester.page.get_by_test_id("timeline").get_by_test_id("move-by-gate").first
    assert gate in story.inner_text()
    requester.shot("timeline-gate-move")
    requester.assert_no_browser_errors()


def test_editing_a_version_description(browsers: Browsers, seed: Seed) -> None:
    model, version, _ = gated_model(seed)
    ui = browsers.signed_in("scientist")
    ui.goto(f"/models/{model}/versions/{version}")
    form = ui.page.get_by_test_id("version-description-form")
    form.get_by_label(f"Description of version {version}").fill("Retrained on the April data.")
    form.get_by_test_id("description-save").click()
    ui.page.wait_for_load_state("load")
    assert ui.page.get_by_test_id("flash").inner_text() == "Description saved."
    assert "Retrained on the April data." in ui.page.locator("main").inner_text()
    ui.shot("version-description-saved")
    ui.assert_no_browser_errors()
    found = model_version(seed.url, ADMIN_USER, ADMIN_PASSWORD, model, version)
    assert found["description"] == "Retrained on the April data."


def test_an_admin_deletes_a_version_after_confirming(browsers: Browsers, seed: Seed) -> None:
    model, version, _ = gated_model(seed)
    ui = browsers.signed_in(ADMIN_USER)
    ui.goto(f"/models/{model}/versions/{version}")
    ui.page.get_by_test_id("delete-version").click()
    ui.page.get_by_test_id("delete-confirm").wait_for()
    ui.shot("version-delete-confirm")
    ui.page.get_by_label(f"Type the version number ({version}) to confirm").fill(version)
    ui.page.get_by_test_id("delete-confirm-button").click()
    ui.page.wait_for_url(re.compile(rf"/models/{model}$"))
    assert ui.page.get_by_test_id("flash").inner_text() == f"Deleted {model} version {version}."
    assert "No versions yet." in ui.page.get_by_test_id("versions-table").inner_text()
    ui.assert_no_browser_errors()


def test_an_admin_override_is_recorded_and_shown_on_the_timeline(
    browsers: Browsers, seed: Seed
) -> None:
    model, version, gate = gated_model(seed)
    ui = browsers.signed_in(ADMIN_USER)
    ui.goto(f"/models/{model}/versions/{version}")
    form = ui.page.get_by_test_id("move-form")
    form.get_by_label("Target (stage or @alias)").fill("Production")
    form.get_by_test_id("override-reason").fill("Hotfix for incident 4711")
    form.get_by_test_id("move-submit").click()
    ui.page.wait_for_load_state("load")
    assert "override recorded" in ui.page.get_by_test_id("flash").inner_text()
    assert stage_of(seed, model, version) == "Production"
    ui.goto(f"/models/{model}")
    story = ui.page.get_by_test_id("timeline").get_by_test_id("move-override").first
    assert "Hotfix for incident 4711" in story.inner_text() and gate in story.inner_text()
    ui.shot("timeline-override")
    ui.assert_no_browser_errors()
