"""POSTs a signed body to a subscriber, connecting only to addresses the SSRF policy allows.

Each hop (the URL and up to three redirects) is resolved and checked, and the request goes to
the checked IP with the original ``Host`` header and TLS server name, so certificates are still
verified against the host name. Connections are not kept alive: a pooled connection to an IP
could otherwise carry a request for another host name served from the same address.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

import httpx

from gates.events.ssrf import Allowlist, UnsafeUrl, check_url, resolve_checked

MAX_REDIRECTS = 3
RESPONSE_SNIPPET = 1024
USER_AGENT = "mlgate-webhooks/0.1"


@dataclass(frozen=True, slots=True)
class SendOutcome:
    url: str
    duration_ms: int
    status_code: int | None = None
    error: str | None = None
    response_body: str | None = None
    content: bytes = b""
    truncated: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None and self.status_code is not None and 200 <= self.status_code < 300


def _host_header(url: httpx.URL) -> str:
    host = f"[{url.host}]" if ":" in url.host else url.host
    default = 443 if url.scheme == "https" else 80
    return host if url.port in (None, default) else f"{host}:{url.port}"


class PinnedSender:
    """One per worker; ``post`` never raises for network or policy failures."""

    def __init__(self, allowlist: Allowlist, timeout: float) -> None:
        self.allowlist = allowlist
        self.timeout = timeout
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout),
            follow_redirects=False,
            # A proxy from the environment would make the proxy, not the checked address,
            # the peer.
            trust_env=False,
            limits=httpx.Limits(max_keepalive_connections=0),
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> SendOutcome:
        sent = {"Content-Type": "application/json", "User-Agent": USER_AGENT, **headers}
        return await self._send("POST", url, body, sent, RESPONSE_SNIPPET, MAX_REDIRECTS)

    async def get(self, url: str, headers: Mapping[str, str], *, limit: int) -> SendOutcome:
        """GET ``url`` under the same policy, following no redirect (an https document cannot
        send it elsewhere, e.g. to plain http); ``content`` holds at most ``limit`` bytes of
        the answer and ``truncated`` says there was more (OIDC discovery and key sets)."""
        sent = {"User-Agent": USER_AGENT, **headers}
        return await self._send("GET", url, None, sent, limit, 0)

    async def _send(
        self,
        method: str,
        url: str,
        body: bytes | None,
        headers: Mapping[str, str],
        limit: int,
        max_redirects: int,
    ) -> SendOutcome:
        started = time.monotonic()
        current = url

        def done(**kw: object) -> SendOutcome:
            elapsed = int((time.monotonic() - started) * 1000)
            return SendOutcome(url=current, duration_ms=elapsed, **kw)  # type: ignore[arg-type]

        for _ in range(max_redirects + 1):
            try:
                target = check_url(current)
                port = target.port or (443 if target.scheme == "https" else 80)
                ip = await resolve_checked(target.host, port, self.allowlist)
            except UnsafeUrl as exc:
                return done(error=f"refused: {exc}")
            request = self._client.build_request(
                method,
                target.copy_with(host=ip),
                content=body,
                headers={**headers, "Host": _host_header(target)},
                extensions={"sni_hostname": target.host} if target.scheme == "https" else {},
            )
            try:
                response = await self._client.send(request, stream=True)
                try:
                    content = await _read_snippet(response, limit + 1)
                finally:
                    await response.aclose()
            except httpx.HTTPError as exc:
                return done(
                    error=f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                )
            location = response.headers.get("location")
            if response.is_redirect and location:
                # Send the same request (a webhook: the same signed body) to the new location,
                # checked like the first.
                current = str(target.join(location))
                continue
            return done(
                status_code=response.status_code,
                response_body=content[:limit].decode("utf-8", errors="replace"),
                content=content[:limit],
                truncated=len(content) > limit,
            )
        return done(error=f"refused: more than {max_redirects} redirects")


async def _read_snippet(response: httpx.Response, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_raw():
        chunks.append(chunk)
        size += len(chunk)
        if size >= limit:
            break
    return b"".join(chunks)[:limit]
