"""SSRF: subscriber URLs reach only public addresses unless allow-listed, checked when
connecting (every redirect too), and the connection goes to the address that was checked."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Any

import httpx
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from gates.events.sender import PinnedSender
from gates.events.ssrf import Allowlist, UnsafeUrl, blocked_reason, check_url, resolve_checked
from tests.conftest import LiveServer
from tests.gates.webhook_receiver import Received, receiving

LOOPBACK_ONLY = Allowlist.parse("127.0.0.1/32")


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.5.4", "private"),
        ("192.168.0.10", "private"),
        ("fd12:3456::1", "private"),
        ("169.254.169.254", "cloud metadata"),
        ("fd00:ec2::254", "cloud metadata"),
        ("169.254.10.1", "link-local"),
        ("fe80::1", "link-local"),
        ("224.0.0.251", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("100.64.0.1", "shared (CGNAT)"),
        ("192.0.2.1", "private"),
        ("240.0.0.1", "private"),
        # IPv6 spellings of IPv4 addresses are judged by the address they carry.
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:169.254.169.254", "cloud metadata"),
        ("64:ff9b::a00:1", "private"),
        ("2002:7f00:1::", "loopback"),
    ],
)
def test_non_public_addresses_are_refused(address: str, reason: str) -> None:
    assert blocked_reason(ipaddress.ip_address(address)) == reason


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"])
def test_public_addresses_pass(address: str) -> None:
    assert blocked_reason(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://example.com/hook", "scheme"),
        ("file:///etc/passwd", "scheme"),
        ("gopher://example.com:70/", "scheme"),
        ("http://user:pass@example.com/hook", "credentials"),
        ("http:///nohost", "host"),
        ("", "empty"),
    ],
)
def test_urls_must_be_http_with_a_host_and_no_credentials(url: str, why: str) -> None:
    with pytest.raises(UnsafeUrl, match=why):
        check_url(url)


def test_allowlist_takes_cidrs_and_host_names() -> None:
    allow = Allowlist.parse("127.0.0.1/32, 10.0.0.0/8 hooks.internal")
    assert allow.allows_address(ipaddress.ip_address("127.0.0.1"))
    assert allow.allows_address(ipaddress.ip_address("::ffff:10.9.8.7"))
    assert not allow.allows_address(ipaddress.ip_address("127.0.0.2"))
    assert allow.allows_host("HOOKS.internal.") and not allow.allows_host("other.internal")


async def test_loopback_private_and_link_local_are_refused_without_an_allowlist() -> None:
    for host in ("127.0.0.1", "localhost", "10.0.0.1", "169.254.169.254", "[::1]", "0.0.0.0"):
        with pytest.raises(UnsafeUrl, match="MLGATE_WEBHOOK_ALLOWLIST"):
            await resolve_checked(host, 80, Allowlist())
    assert await resolve_checked("127.0.0.1", 80, LOOPBACK_ONLY) == "127.0.0.1"
    assert await resolve_checked("localhost", 80, Allowlist.parse("localhost")) in {
        "127.0.0.1",
        "::1",
    }


async def _post(allow: Allowlist, url: str) -> Any:
    sender = PinnedSender(allow, timeout=10)
    try:
        return await sender.post(url, b'{"x":1}', {"webhook-id": "msg_1"})
    finally:
        await sender.aclose()


async def test_the_sender_refuses_a_loopback_receiver_unless_allow_listed() -> None:
    with receiving() as receiver:
        refused = await _post(Allowlist(), receiver.url)
        assert refused.error is not None and "loopback" in refused.error
        assert receiver.requests == []
        allowed = await _post(LOOPBACK_ONLY, receiver.url)
        assert allowed.ok and allowed.status_code == 200
        assert len(receiver.requests) == 1


@pytest.mark.parametrize(
    ("location", "why"),
    [
        ("http://127.0.0.2:{port}/hook", "loopback"),
        ("http://169.254.169.254/latest/meta-data/", "cloud metadata"),
        ("http://10.0.0.5/internal", "private"),
        ("http://[::1]:{port}/hook", "loopback"),
        ("file:///etc/passwd", "scheme"),
    ],
)
async def test_a_redirect_to_a_refused_address_is_not_followed(location: str, why: str) -> None:
    def redirect(_: Received, index: int) -> tuple[int, dict[str, str]]:
        return 307, {"location": location.format(port=port)}

    with receiving(redirect) as receiver:
        port = receiver.port
        outcome = await _post(LOOPBACK_ONLY, receiver.url)
        assert outcome.error is not None and why in outcome.error, outcome
        assert not outcome.ok
        assert len(receiver.requests) == 1  # the first hop only


async def test_allowed_redirects_are_followed_with_the_same_body_and_headers_up_to_three() -> None:
    def hops(request: Received, index: int) -> tuple[int, dict[str, str]]:
        return (302, {"location": f"/hop{index + 1}"}) if index < 2 else (200, {})

    with receiving(hops) as receiver:
        outcome = await _post(LOOPBACK_ONLY, receiver.url)
        assert outcome.ok and outcome.url.endswith("/hop2")
        got = receiver.requests
        assert [r.path for r in got] == ["/hook", "/hop1", "/hop2"]
        assert {r.body for r in got} == {b'{"x":1}'}
        assert {r.headers["webhook-id"] for r in got} == {"msg_1"}

    def loop(_: Received, index: int) -> tuple[int, dict[str, str]]:
        return 307, {"location": "/again"}

    with receiving(loop) as receiver:
        outcome = await _post(LOOPBACK_ONLY, receiver.url)
        assert outcome.error is not None and "more than 3 redirects" in outcome.error
        assert len(receiver.requests) == 4


async def test_connections_go_to_the_checked_address_so_dns_rebinding_cannot_switch_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The name is resolved once per hop; the request is sent to that IP with the name as Host.

    A rebinding resolver answering differently on a second lookup never gets asked again.
    """
    loop = asyncio.get_running_loop()
    answers = iter(["127.0.0.1", "169.254.169.254", "169.254.169.254"])
    lookups: list[str] = []

    async def rebinding(host: str, port: int, **kwargs: Any) -> list[Any]:
        lookups.append(host)
        ip = next(answers)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port))]

    monkeypatch.setattr(loop, "getaddrinfo", rebinding)
    with receiving() as receiver:
        outcome = await _post(LOOPBACK_ONLY, f"http://hooks.rebind.test:{receiver.port}/hook")
        assert outcome.ok, outcome
        assert lookups == ["hooks.rebind.test"]
        assert receiver.requests[0].headers["host"] == f"hooks.rebind.test:{receiver.port}"

        # A name that resolves to a refused address at connect time is refused.
        outcome = await _post(LOOPBACK_ONLY, f"http://evil.rebind.test:{receiver.port}/hook")
        assert outcome.error is not None and "cloud metadata" in outcome.error
        assert len(receiver.requests) == 1


# --- at subscription time, through the API (the shared live server has no allowlist) --------


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://127.0.0.1:9/hook", "loopback"),
        ("http://localhost:9/hook", "loopback"),
        ("http://10.0.0.1/hook", "private"),
        ("http://169.254.169.254/latest/meta-data/", "cloud metadata"),
        ("http://[fe80::1]/hook", "link-local"),
        ("ftp://example.com/hook", "scheme"),
        ("http://user:secret@example.com/hook", "credentials"),
    ],
)
def test_subscriptions_to_refused_urls_are_invalid_parameters(
    live_server: LiveServer, url: str, why: str
) -> None:
    r = httpx.post(
        f"{live_server.url}/api/2.0/mlgate/subscriptions",
        json={"name": "ssrf", "url": url, "events": ["model_version.created"]},
    )
    assert r.status_code == 400, r.text
    assert r.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    assert why in r.json()["message"]


def test_mlflow_create_webhook_to_loopback_is_refused(live_server: LiveServer) -> None:
    client = MlflowClient(tracking_uri=live_server.url, registry_uri=live_server.url)
    with pytest.raises(MlflowException) as err:
        client.create_webhook(
            name="ssrf", url="http://127.0.0.1:9/hook", events=["model_version.created"]
        )
    assert err.value.error_code == "INVALID_PARAMETER_VALUE"
    # MLflow's webhooks API refuses in mlflow server's words (scripts match on them).
    assert err.value.message.endswith(  # the client prefixes the error code
        "Webhook URL must not resolve to a non-public IP address. '127.0.0.1' resolves to 127.0.0.1."
    )
