"""No UI page answers bad input with a 500: odd ids, garbage query strings, hostile paths."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.security.auth_world import World
from tests.web.support import Browser

ODD_VALUES = (
    "0",
    "-1",
    "999999999999999999999999",
    "not-a-number",
    "'; DROP TABLE runs; --",
    "..%2f..%2fetc%2fpasswd",
    "%00",
    "x" * 2000,
    "ünïcødé-✓",
    "${jndi:ldap://x}",
    "<script>alert(1)</script>",
)
QUERY_KEYS = (
    "page_token",
    "max_results",
    "order_by",
    "filter",
    "q",
    "at",
    "path",
    "status",
    "target",
    "run_ids",
    "x",
    "y",
    "view",
    "kind",
    "from",
    "to",
    "files_token",
    "history_token",
    "versions_token",
    "params",
    "metrics",
    "tags",
    "download",
    "verify",
)


def _pages(world: World) -> list[str]:
    model = world.model
    return [
        "/models",
        f"/models/{model}",
        f"/models/{model}/versions/{world.version}",
        "/approvals",
        "/experiments",
        f"/experiments/{world.experiment_id}",
        f"/experiments/{world.experiment_id}/charts",
        f"/runs/{world.run_id}",
        f"/runs/{world.run_id}/artifacts",
        f"/runs/{world.run_id}/artifacts/raw",
        "/runs/compare",
        "/audit",
        "/webhooks",
    ]


@pytest.mark.parametrize("value", ODD_VALUES)
def test_garbage_query_strings_never_give_a_500(
    browser_for: Callable[[str], Browser], web_world: World, value: str
) -> None:
    admin = browser_for("admin")
    for page in _pages(web_world):
        params = {key: value for key in QUERY_KEYS}
        response = admin.get(page, params=params, follow=False)
        assert response.status_code < 500, (page, value, response.status_code, response.text[:300])
        assert "<script>alert(1)</script>" not in response.text


@pytest.mark.parametrize("value", ODD_VALUES)
def test_odd_path_ids_never_give_a_500(
    browser_for: Callable[[str], Browser], web_world: World, value: str
) -> None:
    admin = browser_for("admin")
    for template in (
        "/models/{v}",
        "/models/{v}/versions/1",
        "/models/" + web_world.model + "/versions/{v}",
        "/experiments/{v}",
        "/experiments/{v}/charts",
        "/runs/{v}",
        "/runs/{v}/artifacts",
        "/webhooks/{v}",
    ):
        path = template.format(v=value.replace("/", "%2F"))
        response = admin.get(path, follow=False)
        assert response.status_code < 500, (path, response.status_code, response.text[:300])
        assert response.status_code != 200 or "<script>alert(1)</script>" not in response.text


def test_forms_with_garbage_fields_never_give_a_500(
    browser_for: Callable[[str], Browser], web_world: World
) -> None:
    from tests.web.support import csrf_of

    admin = browser_for("admin")
    token = csrf_of(admin.get("/approvals").text)
    for action in (
        "/approvals/not-a-request/approve",
        "/approvals/" + "9" * 40 + "/reject",
        "/webhooks/nope/deliveries/nope/redeliver",
        "/webhooks/nope/redeliver-dead",
        "/webhooks/nope/enable",
        "/webhooks/nope/reboot",
    ):
        response = admin.post_form(
            action, {"comment": "x" * 20_000, "back": "//evil.example"}, csrf=token, follow=False
        )
        assert response.status_code < 500, (action, response.status_code, response.text[:300])
        location = response.headers.get("location", "")
        assert not location.startswith("//") and "evil.example" not in location
