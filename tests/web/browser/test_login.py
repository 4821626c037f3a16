"""Signing in through the form: a wrong password is refused, the right one lands on /models."""

from __future__ import annotations

import re

from tests.web.browser.conftest import Browsers, sign_in
from tests.web.browser.seed import PASSWORDS


def test_wrong_password_shows_error_and_right_one_lands_on_models(browsers: Browsers) -> None:
    ui = browsers.anonymous()
    ui.allow_status(401)  # the refused sign-in answers 401, which Chromium logs
    ui.goto("/models")
    assert "/login" in ui.page.url  # signed out: sent to the login form
    sign_in(ui, "scientist", "not-the-password")
    error = ui.page.get_by_test_id("login-error")
    assert "Wrong user name or password" in error.inner_text()
    assert ui.page.get_by_test_id("current-user").count() == 0
    ui.shot("login-error")

    sign_in(ui, "scientist", PASSWORDS["scientist"])
    ui.page.wait_for_url(re.compile(r"/models(\?|$)"))
    assert ui.page.get_by_test_id("current-user").inner_text().strip() == "scientist"
    assert ui.page.get_by_test_id("login-error").count() == 0
    ui.assert_no_browser_errors()
