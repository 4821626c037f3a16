"""The signing keys of trusted OIDC issuers: discovered, fetched through the SSRF-safe sender
that delivers webhooks, cached, and refetched when a token names a key not seen yet.

``<issuer>/.well-known/openid-configuration`` must name the issuer exactly and give a
``jwks_uri`` (https, or loopback http when the test setting allows it); the key set found
there is cached for ``MLGATE_OIDC_JWKS_CACHE_SECONDS``. A token whose ``kid`` is not in the
cache triggers one refetch, at most once per ``MLGATE_OIDC_JWKS_REFETCH_INTERVAL`` per
issuer, so an issuer that rotates its keys is followed at once while a caller sending made-up
key ids cannot make this server hammer the issuer. A key the issuer dropped is gone after the
next fetch. One object per app (replicas each keep their own), built by the app factory.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from gates.events.sender import PinnedSender
from gates.events.ssrf import Allowlist
from gates.policies.errors import OidcTokenRefused
from gates.policies.oidc import PublicKey, canonical_issuer, discovery_url, import_key_set
from tracking.core.errors import InvalidParameter, MlflowError
from tracking.core.settings import Settings

# The app-state key of the app's IssuerKeys.
OIDC_KEYS_STATE_KEY = "mlgate_oidc_keys"
MAX_DOCUMENT_BYTES = 256 * 1024
FETCH_TIMEOUT_S = 10.0
_LOOPBACK = "127.0.0.0/8,::1/128"


class IssuerUnavailable(MlflowError):
    """The issuer's discovery document or key set cannot be read now (the caller may retry)."""

    error_code = "TEMPORARILY_UNAVAILABLE"
    status_code = 503


@dataclass
class _Entry:
    keys: dict[str, PublicKey] = field(default_factory=dict)
    fetched_at: float | None = None  # the last successful fetch (monotonic seconds)
    attempted_at: float | None = None  # the last fetch, successful or not
    failed_at: float | None = None  # the last fetch, when it failed
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class IssuerKeys:
    """Cached key sets of the issuers gates trust (see the module docstring)."""

    def __init__(
        self,
        sender: PinnedSender,
        *,
        cache_seconds: float,
        refetch_interval: float,
        allow_http_loopback: bool,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sender = sender
        self._cache_seconds = cache_seconds
        self._refetch_interval = refetch_interval
        self._allow_http_loopback = allow_http_loopback
        self._clock = clock
        self._entries: dict[str, _Entry] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> IssuerKeys:
        allowed = settings.webhook_allowlist
        if settings.oidc_allow_http_loopback:
            allowed = f"{allowed},{_LOOPBACK}"
        return cls(
            PinnedSender(Allowlist.parse(allowed), FETCH_TIMEOUT_S),
            cache_seconds=settings.oidc_jwks_cache_seconds,
            refetch_interval=settings.oidc_jwks_refetch_interval,
            allow_http_loopback=settings.oidc_allow_http_loopback,
        )

    async def aclose(self) -> None:
        await self._sender.aclose()

    async def key(self, issuer: str, key_id: str) -> PublicKey:
        """The issuer's key ``key_id``, fetching the key set when stale or when it is unknown."""
        entry = self._entries.setdefault(issuer, _Entry())
        async with entry.lock:
            now = self._clock()
            if entry.fetched_at is None or now - entry.fetched_at >= self._cache_seconds:
                if entry.failed_at is not None and now - entry.failed_at < self._refetch_interval:
                    # Fail closed (a dropped key may have been compromised) without asking
                    # the issuer again on every request while it is down.
                    raise IssuerUnavailable(f"The keys of issuer {issuer} cannot be read now.")
                await self._refresh(issuer, entry)
            found = entry.keys.get(key_id)
            if found is None and (
                entry.attempted_at is None or now - entry.attempted_at >= self._refetch_interval
            ):
                # A rotation: the issuer may have published the key since the last fetch.
                await self._refresh(issuer, entry)
                found = entry.keys.get(key_id)
        if found is None:
            raise OidcTokenRefused(f"key '{key_id[:100]}' is not among the issuer's keys.")
        return found

    async def _refresh(self, issuer: str, entry: _Entry) -> None:
        entry.attempted_at = self._clock()
        try:
            entry.keys = await self._fetch(issuer)
        except IssuerUnavailable:
            entry.failed_at = self._clock()
            raise
        entry.fetched_at, entry.failed_at = self._clock(), None

    async def _fetch(self, issuer: str) -> dict[str, PublicKey]:
        document = await self._json(discovery_url(issuer), "discovery document")
        if document.get("issuer") != issuer:
            raise IssuerUnavailable(
                f"The discovery document of {issuer} names another issuer; its keys are not used."
            )
        jwks_uri = document.get("jwks_uri")
        try:
            canonical_issuer(jwks_uri, allow_http_loopback=self._allow_http_loopback)
        except InvalidParameter:
            raise IssuerUnavailable(
                f"The discovery document of {issuer} has no https jwks_uri."
            ) from None
        assert isinstance(jwks_uri, str)
        try:
            return import_key_set(await self._json(jwks_uri, "key set"))
        except ValueError as exc:
            raise IssuerUnavailable(f"The key set of {issuer} is not usable ({exc}).") from None

    async def _json(self, url: str, what: str) -> dict[str, object]:
        accept = {"Accept": "application/json"}
        outcome = await self._sender.get(url, accept, limit=MAX_DOCUMENT_BYTES)
        if outcome.error is not None or outcome.status_code != 200:
            reason = outcome.error or f"HTTP {outcome.status_code}"
            raise IssuerUnavailable(f"Cannot read the issuer's {what} at {url}: {reason}.")
        if outcome.truncated:
            raise IssuerUnavailable(f"The issuer's {what} at {url} is larger than allowed.")
        try:
            decoded = json.loads(outcome.content)
        except ValueError:
            decoded = None
        if not isinstance(decoded, dict):
            raise IssuerUnavailable(f"The issuer's {what} at {url} is not a JSON object.")
        return decoded
