"""The administration pages driven as an admin would: create a user and sign in as them in a
second browser context; create a token and see its secret once; grant a scoped right; edit a
gate policy and compare its versions."""

from __future__ import annotations

import json
import re
import uuid

from tests.gates.webhook_receiver import Receiver
from tests.security.auth_world import ADMIN_PASSWORD, ADMIN_USER, API, MLGATE
from tests.web.browser.conftest import Browsers, BrowserServer, sign_in
from tests.web.browser.seed import Api

NEW_PASSWORD = "a-fresh-browser-password-1"


def test_admin_creates_a_user_who_then_signs_in_in_another_context(browsers: Browsers) -> None:
    admin = browsers.signed_in(ADMIN_USER)
    admin.page.get_by_test_id("nav-admin").click()
    admin.page.wait_for_url(re.compile(r"/admin/users$"))
    name = f"newcomer-{uuid.uuid4().hex[:6]}"
    admin.page.get_by_test_id("new-username").fill(name)
    admin.page.get_by_test_id("new-password").fill(NEW_PASSWORD)
    admin.page.get_by_test_id("create-user").click()
    admin.page.wait_for_load_state("load")
    assert f"Created user {name}" in admin.page.get_by_test_id("flash").inner_text()
    row = admin.page.locator(f"tr[data-user='{name}']")
    assert row.get_by_test_id("user-status").inner_text() == "active"
    admin.shot("admin-users")

    newcomer = browsers.anonymous("newcomer")
    sign_in(newcomer, name, NEW_PASSWORD)
    newcomer.page.wait_for_url(re.compile(r"/models(\?|$)"))
    assert newcomer.page.get_by_test_id("current-user").inner_text().strip() == name
    assert newcomer.page.get_by_test_id("nav-admin").count() == 0  # not an admin
    newcomer.assert_no_browser_errors()
    admin.assert_no_browser_errors()


def test_admin_creates_a_token_and_sees_the_secret_only_once(browsers: Browsers) -> None:
    admin = browsers.signed_in(ADMIN_USER)
    admin.goto("/admin/tokens")
    admin.page.get_by_test_id("token-username").fill(ADMIN_USER)
    token_name = f"ci-{uuid.uuid4().hex[:6]}"
    admin.page.get_by_test_id("token-name").fill(token_name)
    admin.page.get_by_test_id("create-token").click()
    admin.page.wait_for_load_state("load")
    secret = admin.page.get_by_test_id("token-secret-value").input_value()
    assert len(secret) >= 20
    assert "shown only this once" in admin.page.get_by_test_id("token-secret").inner_text()
    admin.shot("admin-token-created")

    admin.goto("/admin/tokens")
    assert admin.page.get_by_test_id("token-secret").count() == 0
    assert secret not in admin.page.content()
    assert admin.page.locator("tr[data-token]", has_text=token_name).count() == 1
    admin.assert_no_browser_errors()


def test_admin_grants_a_target_scoped_promotion_right(browsers: Browsers) -> None:
    admin = browsers.signed_in(ADMIN_USER)
    admin.goto("/admin/grants")
    admin.page.get_by_test_id("grant-username").fill("scientist")
    admin.page.get_by_test_id("grant-resource-type").select_option("registered_model")
    pattern = f"scoped-{uuid.uuid4().hex[:6]}-*"
    admin.page.get_by_test_id("grant-pattern").fill(pattern)
    admin.page.get_by_test_id("grant-role").select_option("approver")
    admin.page.get_by_test_id("grant-targets").fill("Staging, @candidate")
    admin.page.get_by_test_id("create-grant").press("Enter")  # keyboard-usable
    admin.page.wait_for_load_state("load")
    assert "Granted approver" in admin.page.get_by_test_id("flash").inner_text()
    row = admin.page.locator("tr[data-grant]", has_text=pattern)
    assert "Staging" in row.inner_text() and "@candidate" in row.inner_text()
    admin.shot("admin-grants")
    admin.assert_no_browser_errors()


def test_admin_edits_a_gate_policy_and_sees_the_new_version_and_the_diff(
    browsers: Browsers, browser_server: BrowserServer
) -> None:
    api = Api(browser_server.url, ADMIN_USER, ADMIN_PASSWORD)
    try:
        model = f"edited-{uuid.uuid4().hex[:6]}"
        api.call("POST", f"{API}/registered-models/create", json={"name": model})
        gate = f"{model}-staging"
        api.call(
            "POST",
            f"{MLGATE}/gates/create",
            json={"name": gate, "model": model, "target": "Staging", "metrics": ["auc >= 0.8"]},
        )
    finally:
        api.close()
    admin = browsers.signed_in(ADMIN_USER)
    admin.goto("/admin/gates")
    admin.page.locator(f"tr[data-gate='{gate}'] a").click()
    admin.page.wait_for_load_state("load")
    spec = json.loads(admin.page.get_by_test_id("gate-spec").input_value())
    spec["metrics"] = ["auc >= 0.85"]
    spec["required_approvals"] = 2
    admin.page.get_by_test_id("gate-spec").fill(json.dumps(spec, indent=2))
    admin.page.get_by_test_id("gate-save").click()
    admin.page.wait_for_load_state("load")
    assert "version 2" in admin.page.get_by_test_id("flash").inner_text()
    versions = admin.page.get_by_test_id("gate-versions")
    assert versions.locator("tr[data-version='2']").count() == 1
    assert "current" in versions.locator("tr[data-version='2']").inner_text()

    admin.page.get_by_test_id("diff-from").select_option("1")
    admin.page.get_by_test_id("diff-to").select_option("2")
    admin.page.get_by_test_id("diff-show").click()
    admin.page.wait_for_load_state("load")
    diff = admin.page.get_by_test_id("gate-diff").inner_text()
    assert '-  "required_approvals": 0' in diff and '+  "required_approvals": 2' in diff
    assert "0.85" in diff
    admin.shot("admin-gate-diff")
    admin.assert_no_browser_errors()


def test_admin_creates_a_subscription_for_all_events_and_tests_an_mlflow_webhook(
    browsers: Browsers, browser_server: BrowserServer
) -> None:
    receiver = Receiver().start()
    api = Api(browser_server.url, ADMIN_USER, ADMIN_PASSWORD)
    try:
        admin = browsers.signed_in(ADMIN_USER)
        admin.goto("/webhooks")
        admin.page.get_by_test_id("new-webhook").click()
        admin.page.wait_for_load_state("load")
        name = f"everything-{uuid.uuid4().hex[:6]}"
        admin.page.get_by_test_id("webhook-name").fill(name)
        admin.page.get_by_test_id("webhook-url").fill(receiver.url)
        admin.page.get_by_test_id("webhook-all-events").check()
        admin.page.get_by_label("Start paused").check()
        admin.page.get_by_test_id("create-webhook").click()
        admin.page.wait_for_load_state("load")
        assert len(admin.page.get_by_test_id("webhook-secret-value").input_value()) >= 16
        admin.shot("admin-webhook-created")
        admin.page.get_by_test_id("webhook-created-link").click()
        admin.page.wait_for_load_state("load")
        assert admin.page.get_by_test_id("webhook-secret-value").count() == 0

        hook = api.call(
            "POST",
            f"{API}/webhooks",
            json={
                "name": f"mlflow-{uuid.uuid4().hex[:6]}",
                "url": receiver.url,
                "events": [{"entity": "model_version", "action": "created"}],
            },
        )["webhook"]
        admin.goto(f"/webhooks/{hook['webhook_id']}")
        admin.page.get_by_test_id("test-webhook-button").click()
        admin.page.wait_for_load_state("load")
        assert "Test delivered" in admin.page.get_by_test_id("flash").inner_text()
        assert len(receiver.requests) == 1
        admin.assert_no_browser_errors()
    finally:
        api.close()
        receiver.stop()
