"""Which addresses a subscriber URL may reach: the SSRF policy, checked when connecting.

A webhook URL is attacker-controlled input that makes the server open connections, so
loopback, private (RFC 1918, ULA), link-local (including the cloud metadata address
169.254.169.254), CGNAT, multicast, unspecified and reserved addresses are refused unless
``MLGATE_WEBHOOK_ALLOWLIST`` names the address (CIDR) or the host. The check runs on the
addresses the host resolves to right before connecting, and the connection then goes to the
checked address itself, so DNS rebinding between check and connect has nothing to exploit
(MLflow closes the same gap in mlflow/webhooks/ssrf.py by checking the peer after connect).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import urllib.parse
from dataclasses import dataclass, field

import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_CGNAT = ipaddress.IPv4Network("100.64.0.0/10")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_METADATA = {ipaddress.IPv4Address("169.254.169.254"), ipaddress.IPv6Address("fd00:ec2::254")}
MAX_URL_LEN = 2000
RESOLVE_TIMEOUT_S = 5.0


class UnsafeUrl(Exception):
    """A subscriber URL (or one of its redirects) that mlgate will not connect to."""


@dataclass(frozen=True)
class Allowlist:
    networks: tuple[IPNetwork, ...] = ()
    hosts: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def parse(cls, text: str) -> Allowlist:
        """``"127.0.0.1/32, 10.0.0.0/8, hooks.internal"``: CIDRs or addresses, and host names."""
        networks: list[IPNetwork] = []
        hosts: set[str] = set()
        for raw in text.replace(",", " ").split():
            entry = raw.strip()
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                hosts.add(_host_key(entry))
        return cls(tuple(networks), frozenset(hosts))

    def allows_host(self, host: str) -> bool:
        return _host_key(host) in self.hosts

    def allows_address(self, ip: IPAddress) -> bool:
        candidates = {ip, embedded_ipv4(ip)}
        return any(
            c in net for c in candidates for net in self.networks if c.version == net.version
        )


def _host_key(host: str) -> str:
    return host.strip().strip("[]").rstrip(".").lower()


def embedded_ipv4(ip: IPAddress) -> IPAddress:
    """The IPv4 address inside IPv4-mapped, 6to4 and NAT64 IPv6 forms (else ``ip`` itself)."""
    if isinstance(ip, ipaddress.IPv6Address):
        inner = ip.ipv4_mapped or ip.sixtofour
        if inner is None and ip in _NAT64:
            inner = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if inner is not None:
            return inner
    return ip


def blocked_reason(ip: IPAddress) -> str | None:
    """Why ``ip`` is not a public unicast address, or None when it is."""
    ip = embedded_ipv4(ip)
    if ip in _METADATA:
        return "cloud metadata"
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT:
        return "shared (CGNAT)"
    if ip.is_private:
        return "private"
    if ip.is_reserved or not ip.is_global:
        return "reserved"
    return None


def check_url(url: str) -> httpx.URL:
    """The URL's shape: http(s), a host, no credentials. Addresses are checked at connect time."""
    if not isinstance(url, str) or not url.strip():
        raise UnsafeUrl("the URL is empty")
    if len(url) > MAX_URL_LEN:
        raise UnsafeUrl(f"the URL is longer than {MAX_URL_LEN} characters")
    try:
        parsed = httpx.URL(url.strip())
    except (httpx.InvalidURL, ValueError, TypeError) as exc:
        raise UnsafeUrl(f"the URL is malformed ({exc})") from None
    if parsed.scheme not in ("http", "https"):
        raise UnsafeUrl(f"scheme {parsed.scheme!r} is not allowed (use http or https)")
    if not parsed.host:
        raise UnsafeUrl("the URL has no host")
    if parsed.userinfo:
        raise UnsafeUrl("the URL must not contain credentials (user:password@)")
    return parsed


def _ip_literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(_host_key(host))
    except ValueError:
        return None


async def _addresses(host: str, port: int) -> list[IPAddress]:
    """The addresses ``host`` resolves to; the resolver's OSError/TimeoutError propagate."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(RESOLVE_TIMEOUT_S):
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses: list[IPAddress] = []
    for info in infos:
        ip = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if ip not in addresses:
            addresses.append(ip)
    return addresses


async def _resolve(host: str, port: int) -> list[IPAddress]:
    try:
        addresses = await _addresses(host, port)
    except (OSError, TimeoutError) as exc:
        raise UnsafeUrl(f"cannot resolve host {host!r} ({exc})") from None
    if not addresses:
        raise UnsafeUrl(f"host {host!r} resolves to no address")
    return addresses


async def resolve_checked(host: str, port: int, allowlist: Allowlist) -> str:
    """Resolve ``host`` and return the address to connect to, after checking every address.

    Every address the name resolves to must pass (an attacker's name could mix a public and a
    private one); an allow-listed host name skips the address check but is still pinned.
    """
    literal = _ip_literal(host)
    addresses = [literal] if literal is not None else await _resolve(host, port)
    if not allowlist.allows_host(host):
        for ip in addresses:
            reason = blocked_reason(ip)
            if reason is not None and not allowlist.allows_address(ip):
                raise UnsafeUrl(
                    f"host {host!r} resolves to {ip}, a {reason} address; add it to "
                    "MLGATE_WEBHOOK_ALLOWLIST to deliver there"
                )
    return str(addresses[0])


async def check_subscriber_url(url: str, allowlist: Allowlist) -> str:
    """Validate a URL when a subscription is created or changed; returns it normalised."""
    parsed = check_url(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    await resolve_checked(parsed.host, port, allowlist)
    return str(parsed)


async def check_mlflow_webhook_url(url: str, allowlist: Allowlist) -> str:
    """:func:`check_subscriber_url` for MLflow's webhooks API, refusing in mlflow server's words.

    The same checks, but the refusals MLflow also makes use its wording (its webhook URL
    validation), since scripts match on those messages; mlgate's extra refusals (credentials,
    length) keep their own. The policy stays mlgate's: http is allowed besides https, and
    ``MLGATE_WEBHOOK_ALLOWLIST`` opens private addresses.
    """
    if not isinstance(url, str) or not url.strip():
        raise UnsafeUrl(f"Webhook URL cannot be empty or just whitespace: {url!r}")
    try:
        shape = urllib.parse.urlparse(url)
        _ = shape.hostname  # urlparse checks brackets lazily
    except ValueError as exc:
        raise UnsafeUrl(f"Invalid webhook URL {url!r}: {exc!r}") from None
    if shape.scheme not in ("http", "https"):
        raise UnsafeUrl(
            f"Invalid webhook URL scheme: {shape.scheme!r}. Allowed schemes are: http, https."
        )
    if not shape.hostname:
        raise UnsafeUrl(f"Webhook URL must include a hostname: {url!r}")
    try:
        parsed = check_url(url)
    except UnsafeUrl as exc:
        shown = url if len(url) <= 200 else f"{url[:200]}..."
        raise UnsafeUrl(f"Invalid webhook URL {shown!r}: {exc}.") from None
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    host = parsed.host
    literal = _ip_literal(host)
    if literal is not None:
        addresses = [literal]
    else:
        try:
            addresses = await _addresses(host, port)
        except (OSError, TimeoutError) as exc:
            raise UnsafeUrl(
                f"Cannot resolve Webhook URL hostname {shape.hostname!r}: {str(exc) or 'timed out'}"
            ) from None
        if not addresses:
            raise UnsafeUrl(f"Cannot resolve Webhook URL hostname {shape.hostname!r}")
    if not allowlist.allows_host(host):
        for ip in addresses:
            if blocked_reason(ip) is not None and not allowlist.allows_address(ip):
                raise UnsafeUrl(
                    "Webhook URL must not resolve to a non-public IP address. "
                    f"{shape.hostname!r} resolves to {ip}."
                )
    return str(parsed)
