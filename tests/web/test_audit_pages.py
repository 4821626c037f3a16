"""The audit trail page and the webhook pages: filters, paging, the delivery log, redeliver."""

from __future__ import annotations

import html
import re
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gates.server import migrate
from gates.server.web.pages.audit_pages import shown_url
from tests.conftest import LiveServer, start_server, stop_server
from tests.gates.events_support import FAST_WORKER
from tests.gates.webhook_receiver import Received, Receiver, wait_until
from tests.security.auth_world import (
    ADMIN_PASSWORD,
    ADMIN_USER,
    MLGATE,
    PASSWORD,
    World,
    auth_env,
    build_world,
)
from tests.web.support import Browser, csrf_of

ROW_RE = re.compile(
    r'<tr data-testid="audit-row" data-seq="(\d+)" data-kind="([^"]+)">(.*?)</tr>', re.S
)


def _audit_rows(page_html: str) -> list[dict[str, Any]]:
    rows = []
    for seq, kind, body in ROW_RE.findall(page_html):
        actor = re.search(r'data-testid="audit-actor">([^<]*)<', body)
        subject = re.search(r"<code>([^<]*)</code>", body)
        rows.append(
            {
                "seq": int(seq),
                "kind": kind,
                "actor": html.unescape(actor.group(1)) if actor else None,
                "subject": html.unescape(subject.group(1)) if subject else None,
                "links": re.findall(r'<a href="([^"]+)" data-testid="audit-subject-link">', body),
                "hash": re.search(r'title="([0-9a-f]{64})">([0-9a-f]{12})<', body),
                "body": body,
            }
        )
    return rows


def _next_link(page_html: str) -> str | None:
    found = re.search(r'<a href="([^"]+)" data-testid="next-page">', page_html)
    return html.unescape(found.group(1)) if found else None


# --- audit ---------------------------------------------------------------------------------------


@dataclass
class AuditModel:
    name: str
    versions: list[str]


@pytest.fixture(scope="module")
def audited(web_world: World) -> AuditModel:
    """A model with two versions, a stage move and an alias move: four entries about it."""
    name = web_world.new_model("audit")
    v1 = web_world.new_version(name)
    v2 = web_world.new_version(name)
    web_world.transition(name, v1, "Staging")
    web_world.set_alias(name, "champion", v2)
    return AuditModel(name, [v1, v2])


def test_audit_page_lists_a_models_entries_newest_first_with_links_and_hashes(
    audited: AuditModel, web_world: World, browser_for: Callable[[str], Browser]
) -> None:
    admin = browser_for("admin")
    page = admin.get("/audit", params={"model": audited.name})
    assert page.status_code == 200, page.text[:500]
    assert 'data-testid="audit-table"' in page.text
    rows = _audit_rows(page.text)
    assert [r["kind"] for r in rows] == [
        "alias.moved",
        "stage.transitioned",
        "model_version.created",
        "model_version.created",
    ]
    assert [r["seq"] for r in rows] == sorted((r["seq"] for r in rows), reverse=True)
    assert {r["subject"] for r in rows} == {f"model:{audited.name}"}
    assert {r["actor"] for r in rows} == {ADMIN_USER}
    # Subject links to the model and to the version the entry is about.
    stage = rows[1]
    assert stage["links"] == [
        f"/models/{audited.name}",
        f"/models/{audited.name}/versions/{audited.versions[0]}",
    ]
    assert "&#34;to_stage&#34;:&#34;Staging&#34;" in stage["body"]
    # The hash shown is the trail's own (the API's answer for the same entry).
    api = web_world.admin_json(
        "GET", f"{MLGATE}/audit", params={"subject": f"model:{audited.name}"}
    )["entries"]
    by_seq = {e["seq"]: e["hash"] for e in api}
    for row in rows:
        assert row["hash"] is not None
        assert row["hash"].group(1) == by_seq[row["seq"]]
        assert row["hash"].group(2) == by_seq[row["seq"]][:12]


def test_audit_filters_by_kind_family_actor_and_dates(
    audited: AuditModel, browser_for: Callable[[str], Browser]
) -> None:
    admin = browser_for("admin")

    def kinds(**params: str) -> list[str]:
        page = admin.get("/audit", params={"model": audited.name, **params})
        assert page.status_code == 200, page.text[:300]
        return [r["kind"] for r in _audit_rows(page.text)]

    assert kinds(kind="stage.transitioned") == ["stage.transitioned"]
    assert kinds(kind="model_version.*") == ["model_version.created"] * 2
    assert kinds(kind="approval.approved") == []
    assert kinds(actor=ADMIN_USER) == [
        "alias.moved",
        "stage.transitioned",
        "model_version.created",
        "model_version.created",
    ]
    assert kinds(actor="somebody-else") == []
    today = datetime.now(UTC).date()
    assert len(kinds(**{"from": str(today - timedelta(days=1)), "to": str(today)})) == 4
    assert kinds(**{"from": str(today + timedelta(days=1))}) == []
    assert kinds(to=str(today - timedelta(days=1))) == []
    # The form keeps what was typed.
    page = admin.get("/audit", params={"model": audited.name, "actor": "a<b"})
    assert 'name="actor" value="a&lt;b"' in page.text


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"from": "yesterday"}, "Invalid &#39;from&#39; date"),
        ({"to": "2026-13-45"}, "Invalid &#39;to&#39; date"),
        ({"from": "2026-02-02", "to": "2026-02-01"}, "must not be after"),
        ({"page_token": "not-a-token"}, "Invalid page token"),
        ({"max_results": "0"}, "max_results must be"),
        ({"actor": "x" * 300}, "longer than 256"),
    ],
)
def test_bad_audit_filters_are_explained_not_500(
    params: dict[str, str], message: str, browser_for: Callable[[str], Browser]
) -> None:
    page = browser_for("admin").get("/audit", params=params)
    assert page.status_code == 400
    assert 'data-testid="filter-error"' in page.text
    assert message in page.text
    assert 'data-testid="audit-row"' not in page.text


def test_audit_pages_through_the_trail_with_tokens(
    audited: AuditModel, browser_for: Callable[[str], Browser]
) -> None:
    admin = browser_for("admin")
    page = admin.get("/audit", params={"model": audited.name, "max_results": "3"})
    first = _audit_rows(page.text)
    assert len(first) == 3
    link = _next_link(page.text)
    assert link is not None and "page_token=" in link and "max_results=3" in link
    second_page = admin.get(link)
    assert second_page.status_code == 200
    second = _audit_rows(second_page.text)
    assert [r["kind"] for r in second] == ["model_version.created"]
    assert second[0]["seq"] < first[-1]["seq"]
    assert _next_link(second_page.text) is None
    # A token belongs to its filters: reusing it with others is refused, not misread.
    token = link.split("page_token=")[1].split("&")[0]
    other = admin.get("/audit", params={"actor": ADMIN_USER, "page_token": token})
    assert other.status_code == 400


def test_verify_chain_is_an_explicit_admin_action(browser_for: Callable[[str], Browser]) -> None:
    admin = browser_for("admin")
    page = admin.get("/audit")
    assert 'data-testid="verify-chain"' in page.text
    assert 'data-testid="chain-status"' not in page.text
    verified = admin.get("/audit", params={"verify": "1"})
    assert re.search(
        r'data-testid="chain-status" data-ok="true">Hash chain verified', verified.text
    )


@pytest.mark.parametrize("level", ["reader", "approver", "owner"])
def test_non_admins_cannot_read_the_audit_trail(
    level: str, audited: AuditModel, browser_for: Callable[[str], Browser]
) -> None:
    page = browser_for(level).get("/audit", params={"model": audited.name})
    assert page.status_code == 403
    assert 'data-testid="audit-row"' not in page.text
    assert audited.name not in page.text


def test_signed_out_audit_goes_to_login(browser_for: Callable[[str], Browser]) -> None:
    response = browser_for("anonymous").get("/audit", follow=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/login?next=%2Faudit"


# --- webhooks ------------------------------------------------------------------------------------


@dataclass
class Responder:
    """The receiver's answers: the first request succeeds, later ones fail until ``healed``."""

    healed: threading.Event = field(default_factory=threading.Event)

    def __call__(self, got: Received, index: int) -> tuple[int, dict[str, str]]:
        if index == 0 or self.healed.is_set():
            return 200, {}
        return 500, {}


@dataclass
class Hooks:
    server: LiveServer
    world: World
    receiver: Receiver
    responder: Responder
    subscription_id: str
    secret: str
    delivered_id: str
    dead_id: str
    other_subscription_id: str
    browsers: list[Browser] = field(default_factory=list)

    def browser(self, level: str) -> Browser:
        browser = Browser(self.server.url)
        self.browsers.append(browser)
        if level == "admin":
            response = browser.login(ADMIN_USER, ADMIN_PASSWORD)
        else:
            response = browser.login(f"{level}-{self.world.u}", PASSWORD)
        assert response.status_code == 303, response.text[:300]
        return browser

    def deliveries(self, subscription_id: str | None = None) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.world.admin_json(
            "GET",
            f"{MLGATE}/deliveries",
            params={"subscription_id": subscription_id or self.subscription_id},
        )["deliveries"]
        return found

    def delivery(self, delivery_id: str) -> dict[str, Any]:
        found: dict[str, Any] = self.world.admin_json("GET", f"{MLGATE}/deliveries/{delivery_id}")[
            "delivery"
        ]
        return found


def _subscribe(world: World, url: str, model: str, name: str) -> tuple[str, str]:
    answer = world.admin_json(
        "POST",
        f"{MLGATE}/subscriptions",
        json={"name": name, "url": url, "events": ["model_version.created"], "model_name": model},
    )
    return answer["subscription"]["id"], answer["secret"]


@pytest.fixture(scope="module")
def hooks(make_database: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hooks]:
    """An auth-on server with a fast webhook worker, and a subscription whose log holds one
    delivered and one dead delivery."""
    url = make_database("web-hooks")
    migrate.upgrade(url)
    server = start_server(
        url, tmp_path_factory.mktemp("web-hooks"), extra_env={**auth_env(), **FAST_WORKER}
    )
    world = build_world(server)
    responder = Responder()
    receiver = Receiver(responder).start()
    try:
        model = world.new_model("hooked")
        sub_id, secret = _subscribe(world, receiver.url, model, "ui-hook")
        world.new_version(model)
        receiver.wait_for(1)
        world.new_version(model)

        def settled() -> list[dict[str, Any]] | None:
            found = world.admin_json(
                "GET", f"{MLGATE}/deliveries", params={"subscription_id": sub_id}
            )["deliveries"]
            ok = len(found) == 2 and all(d["status"] in ("succeeded", "dead") for d in found)
            return found if ok else None

        newest, oldest = wait_until(settled, what="a delivered and a dead delivery")
        assert (oldest["status"], newest["status"]) == ("succeeded", "dead")
        other_model = world.new_model("other")
        other_id, _ = _subscribe(world, receiver.url, other_model, "other-hook")
        hooks = Hooks(
            server,
            world,
            receiver,
            responder,
            sub_id,
            secret,
            oldest["delivery_id"],
            newest["delivery_id"],
            other_id,
        )
        yield hooks
        for browser in hooks.browsers:
            browser.close()
    finally:
        receiver.stop()
        world.close()
        stop_server(server)
        text = server.log.read_text(errors="replace")
        if "Traceback" in text:
            print(text[-5000:], file=sys.stderr)


def _delivery_rows(page_html: str) -> dict[str, str]:
    rows = re.findall(
        r'<tr data-testid="delivery-row" data-delivery-id="([^"]+)" data-status="[^"]+">(.*?)</tr>',
        page_html,
        re.S,
    )
    return dict(rows)


def _cell(row: str, testid: str) -> str:
    found = re.search(rf'data-testid="{testid}"[^>]*>([^<]*)<', row)
    assert found, testid
    return found.group(1).strip()


def test_webhooks_page_lists_subscriptions_with_last_delivery_and_no_secret(hooks: Hooks) -> None:
    page = hooks.browser("admin").get("/webhooks")
    assert page.status_code == 200, page.text[:500]
    assert 'data-testid="webhooks-table"' in page.text
    row = re.search(
        rf'<tr data-testid="webhook-row" data-id="{hooks.subscription_id}">(.*?)</tr>',
        page.text,
        re.S,
    )
    assert row, "the subscription is not listed"
    body = row.group(1)
    assert f'href="/webhooks/{hooks.subscription_id}">ui-hook</a>' in body
    assert hooks.receiver.url in body
    assert '<span class="badge">model_version.created</span>' in body
    assert _cell(body, "webhook-status") == "active"
    last = re.search(r'data-testid="last-delivery">(.*?)</td>', body, re.S)
    assert last
    assert '<span class="badge dead">dead</span>' in last.group(1)
    assert "HTTP 500" in last.group(1)
    # The other subscription has had no delivery yet.
    other = re.search(rf'data-id="{hooks.other_subscription_id}">(.*?)</tr>', page.text, re.S)
    assert other and "none yet" in other.group(1)
    assert hooks.secret not in page.text
    assert hooks.secret.removeprefix("whsec_") not in page.text


def test_delivery_log_shows_the_delivered_and_the_failed_delivery(hooks: Hooks) -> None:
    admin = hooks.browser("admin")
    page = admin.get(f"/webhooks/{hooks.subscription_id}")
    assert page.status_code == 200
    assert 'data-testid="deliveries-table"' in page.text
    assert hooks.secret not in page.text
    rows = _delivery_rows(page.text)
    # Newest first.
    assert list(rows) == [hooks.dead_id, hooks.delivered_id]
    dead, delivered = rows[hooks.dead_id], rows[hooks.delivered_id]
    assert _cell(dead, "delivery-status") == "dead"
    assert _cell(dead, "delivery-attempts") == "3 / 3"
    assert _cell(dead, "delivery-code") == "500"
    assert "model_version.created" in dead
    assert _cell(delivered, "delivery-status") == "succeeded"
    assert _cell(delivered, "delivery-attempts") == "1 / 1"
    assert _cell(delivered, "delivery-code") == "200"
    assert dead.count('data-testid="redeliver-button"') == 1
    # Each delivery's attempts can be opened.
    attempts = admin.get(f"/webhooks/{hooks.subscription_id}", params={"delivery": hooks.dead_id})
    section = re.search(r'data-testid="attempts-table">(.*?)</section>', attempts.text, re.S)
    assert section
    assert section.group(1).count('data-testid="attempt-row"') == 3
    # Filtering by status.
    only_dead = admin.get(f"/webhooks/{hooks.subscription_id}", params={"status": "dead"})
    assert list(_delivery_rows(only_dead.text)) == [hooks.dead_id]
    bad = admin.get(f"/webhooks/{hooks.subscription_id}", params={"status": "bogus"})
    assert bad.status_code == 400
    assert admin.get("/webhooks/no-such-subscription").status_code == 404


def test_redeliver_requeues_the_delivery_and_it_reaches_the_receiver(hooks: Hooks) -> None:
    admin = hooks.browser("admin")
    base = f"/webhooks/{hooks.subscription_id}"
    action = f"{base}/deliveries/{hooks.dead_id}/redeliver"
    page = admin.get(base)
    assert f'action="{action}"' in page.text
    before = len(hooks.receiver.requests)

    # Without the form's CSRF token: refused, and nothing is queued.
    refused = admin.post_form(action, {"back": base}, csrf=None)
    assert refused.status_code == 403
    forged = admin.post_form(action, {"back": base}, csrf="forged-token-0123456789abcdef")
    assert forged.status_code == 403
    assert hooks.delivery(hooks.dead_id)["status"] == "dead"

    # A delivery of another subscription is not reachable through this one's page.
    stranger = admin.post_form(
        f"/webhooks/{hooks.other_subscription_id}/deliveries/{hooks.dead_id}/redeliver",
        {},
        csrf=csrf_of(page.text),
    )
    assert stranger.status_code == 404
    assert hooks.delivery(hooks.dead_id)["status"] == "dead"

    hooks.responder.healed.set()
    response = admin.post_form(action, {"back": base}, csrf=csrf_of(page.text), follow=False)
    assert response.status_code == 303
    assert response.headers["location"] == base  # the message rides in a cookie, not the URL
    landed = admin.get(response.headers["location"])
    flash = re.search(r'data-testid="flash"[^>]*>([^<]*)<', landed.text)
    assert flash and f"Delivery {hooks.dead_id} was queued for redelivery." in flash.group(1)
    assert 'data-testid="flash"' not in admin.get(base).text  # shown once

    got = hooks.receiver.wait_for(before + 1)
    assert got[-1].headers["webhook-id"] == hooks.dead_id
    assert got[-1].json["data"]["version"] == "2"

    def succeeded() -> dict[str, Any] | None:
        found = hooks.delivery(hooks.dead_id)
        return found if found["status"] == "succeeded" else None

    final = wait_until(succeeded, what="the redelivery to succeed")
    assert final["total_attempts"] == 4
    row = _delivery_rows(admin.get(base).text)[hooks.dead_id]
    assert _cell(row, "delivery-status") == "succeeded"
    assert _cell(row, "delivery-attempts") == "1 / 4"
    assert _cell(row, "delivery-code") == "200"


@pytest.mark.parametrize("level", ["reader", "owner"])
def test_non_admins_cannot_see_webhooks_or_redeliver(hooks: Hooks, level: str) -> None:
    browser = hooks.browser(level)
    listing = browser.get("/webhooks")
    assert listing.status_code == 403
    assert "ui-hook" not in listing.text
    detail = browser.get(f"/webhooks/{hooks.subscription_id}")
    assert detail.status_code == 403
    assert hooks.receiver.url not in detail.text
    before = hooks.delivery(hooks.delivered_id)["total_attempts"]
    # Even with a valid token of their own session, the POST is refused.
    response = browser.post_form(
        f"/webhooks/{hooks.subscription_id}/deliveries/{hooks.delivered_id}/redeliver",
        {},
        csrf=csrf_of(listing.text),
    )
    assert response.status_code == 403
    assert hooks.delivery(hooks.delivered_id)["status"] == "succeeded"
    assert hooks.delivery(hooks.delivered_id)["total_attempts"] == before


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://hooks.example.com/in", "https://hooks.example.com/in"),
        ("https://u:pa55@hooks.example.com/in", "https://u:***@hooks.example.com/in"),
        (
            "https://hooks.example.com/in?token=abc&x=1",
            "https://hooks.example.com/in?token=***&x=***",
        ),
    ],
)
def test_subscriber_urls_are_shown_without_credentials(url: str, shown: str) -> None:
    assert shown_url(url) == shown


def _flash(browser: Browser, response: Any) -> str:
    landed = browser.get(response.headers["location"])
    flash = re.search(r'data-testid="flash"[^>]*>([^<]*)<', landed.text)
    assert flash, landed.text[:500]
    return html.unescape(flash.group(1))


def test_redeliver_all_dead_button_requeues_every_dead_delivery_of_the_subscription(
    hooks: Hooks,
) -> None:
    healed = threading.Event()

    def outage(_: Received, __: int) -> tuple[int, dict[str, str]]:
        return (200, {}) if healed.is_set() else (500, {})

    receiver = Receiver(outage).start()
    try:
        model = hooks.world.new_model("all-dead")
        sub_id, _ = _subscribe(hooks.world, receiver.url, model, "dead-hook")
        hooks.world.new_version(model)
        hooks.world.new_version(model)
        dead = wait_until(
            lambda: (
                (found := hooks.deliveries(sub_id))
                and len(found) == 2
                and all(d["status"] == "dead" for d in found)
                and found
            ),
            what="two dead deliveries",
        )
        tried = len(receiver.requests)
        admin = hooks.browser("admin")
        base = f"/webhooks/{sub_id}"
        action = f"{base}/redeliver-dead"
        page = admin.get(base)
        assert f'action="{action}"' in page.text
        assert 'data-testid="redeliver-dead-button"' in page.text

        # Without the form's CSRF token, or by a non-administrator: refused, nothing queued.
        assert admin.post_form(action, {"back": base}, csrf=None).status_code == 403
        reader = hooks.browser("reader")
        own = reader.get("/")
        assert reader.post_form(action, {}, csrf=csrf_of(own.text)).status_code == 403
        assert {d["status"] for d in hooks.deliveries(sub_id)} == {"dead"}

        healed.set()
        response = admin.post_form(action, {"back": base}, csrf=csrf_of(page.text), follow=False)
        assert response.status_code == 303 and response.headers["location"] == base
        assert "2 dead deliveries were queued for redelivery." in _flash(admin, response)
        again = receiver.wait_for(tried + 2)[tried:]
        # Oldest first, under the ids they had.
        assert [r.headers["webhook-id"] for r in again] == [
            d["delivery_id"] for d in reversed(dead)
        ]
        wait_until(
            lambda: all(d["status"] == "succeeded" for d in hooks.deliveries(sub_id)),
            what="the redeliveries to succeed",
        )
        entries = hooks.world.admin_json(
            "GET", f"{MLGATE}/audit", params={"subject": f"subscription:{sub_id}"}
        )["entries"]
        assert [(e["kind"], e["actor"], e["payload"]["count"]) for e in entries] == [
            ("subscription.redelivered_dead", ADMIN_USER, 2)
        ]
    finally:
        receiver.stop()


def test_disable_and_enable_buttons_show_the_reason_and_resume(hooks: Hooks) -> None:
    model = hooks.world.new_model("toggle")
    sub_id, _ = _subscribe(hooks.world, hooks.receiver.url, model, "toggle-hook")
    admin = hooks.browser("admin")
    base = f"/webhooks/{sub_id}"
    page = admin.get(base)
    assert 'data-testid="disable-button"' in page.text
    assert admin.post_form(f"{base}/disable", {}, csrf=None).status_code == 403
    off = admin.post_form(f"{base}/disable", {"back": base}, csrf=csrf_of(page.text), follow=False)
    assert off.status_code == 303
    assert "is disabled" in _flash(admin, off)
    page = admin.get(base)
    assert _cell(page.text, "disabled-reason") == f"disabled by {ADMIN_USER}"
    listing = admin.get("/webhooks")
    row = re.search(rf'data-id="{sub_id}">(.*?)</tr>', listing.text, re.S)
    assert row and _cell(row.group(1), "disabled-reason") == f"disabled by {ADMIN_USER}"
    assert 'data-testid="enable-button"' in page.text
    on = admin.post_form(f"{base}/enable", {"back": base}, csrf=csrf_of(page.text), follow=False)
    assert on.status_code == 303
    sub = hooks.world.admin_json("GET", f"{MLGATE}/subscriptions/{sub_id}")["subscription"]
    assert sub["status"] == "active" and "disabled_reason" not in sub
    assert admin.post_form(f"{base}/restart", {}, csrf=csrf_of(page.text)).status_code == 400
