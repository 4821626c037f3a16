"""The events domain's view of the settings: SSRF allowlist, secret sealing, retry policy."""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import lru_cache

from gates.events.signing import SecretBox
from gates.events.ssrf import Allowlist
from tracking.core.settings import Settings


@dataclass(frozen=True)
class EventsConfig:
    allowlist: Allowlist
    secrets: SecretBox
    poll_interval: float
    max_attempts: int
    timeout: float
    backoff_base: float
    backoff_max: float

    @staticmethod
    @lru_cache(maxsize=8)
    def from_settings(settings: Settings) -> EventsConfig:
        return EventsConfig(
            allowlist=Allowlist.parse(settings.webhook_allowlist),
            secrets=SecretBox(settings.webhook_secret_key),
            poll_interval=max(0.01, settings.webhook_poll_interval),
            max_attempts=max(1, settings.webhook_max_attempts),
            timeout=max(0.1, settings.webhook_timeout),
            backoff_base=max(0.0, settings.webhook_backoff_base),
            backoff_max=max(0.0, settings.webhook_backoff_max),
        )

    def backoff_ms(self, failed_attempts: int) -> int:
        """Delay before the next attempt: exponential, capped, with "equal jitter".

        Half the delay is fixed and half random, so receivers that failed together (an
        outage) are not all retried in the same instant.
        """
        delay = min(self.backoff_max, self.backoff_base * (2 ** max(0, failed_attempts - 1)))
        return int(random.uniform(delay / 2, delay) * 1000)
