"""The events domain's view of the settings: SSRF allowlist, secret sealing, retry policy."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from functools import lru_cache

from gates.events.signing import SecretBox
from gates.events.ssrf import Allowlist
from tracking.core.settings import Settings

_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_DELAY_RE = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)$")
MAX_SCHEDULE_STEPS = 50
MAX_DELAY_MS = 7 * 86_400_000
# Each delay is stretched or shrunk by up to this fraction, so receivers that failed together
# (an outage) are not all retried in the same instant.
JITTER = 0.1


def parse_retry_schedule(text: str) -> tuple[int, ...]:
    """``"5s,5m,30m,2h"`` -> delays in ms before the 2nd, 3rd ... attempt; ValueError if bad."""
    delays: list[int] = []
    for raw in text.split(","):
        item = raw.strip().lower()
        if not item:
            continue
        found = _DELAY_RE.match(item)
        if not found:
            raise ValueError(
                f"MLGATE_WEBHOOK_RETRY_SCHEDULE: {raw.strip()!r} is not a delay "
                "(a number and one of ms, s, m, h, d, e.g. 30m)"
            )
        delay = int(float(found.group(1)) * _UNIT_MS[found.group(2)])
        if delay > MAX_DELAY_MS:
            raise ValueError(f"MLGATE_WEBHOOK_RETRY_SCHEDULE: {raw.strip()!r} is over 7 days")
        delays.append(delay)
    if len(delays) > MAX_SCHEDULE_STEPS:
        raise ValueError(f"MLGATE_WEBHOOK_RETRY_SCHEDULE: more than {MAX_SCHEDULE_STEPS} delays")
    return tuple(delays)


@dataclass(frozen=True)
class EventsConfig:
    allowlist: Allowlist
    secrets: SecretBox
    poll_interval: float
    timeout: float
    # Delays (ms) before each retry: attempt n+1 waits retry_delays[n-1] after attempt n fails.
    retry_delays: tuple[int, ...]
    concurrency: int
    # 0: subscriptions are never disabled automatically.
    disable_after_ms: int

    @staticmethod
    @lru_cache(maxsize=8)
    def from_settings(settings: Settings) -> EventsConfig:
        return EventsConfig(
            allowlist=Allowlist.parse(settings.webhook_allowlist),
            secrets=SecretBox(settings.webhook_secret_key),
            poll_interval=max(0.01, settings.webhook_poll_interval),
            timeout=max(0.1, settings.webhook_timeout),
            retry_delays=parse_retry_schedule(settings.webhook_retry_schedule),
            concurrency=max(1, settings.webhook_concurrency),
            disable_after_ms=max(0, int(settings.webhook_disable_after_hours * 3_600_000)),
        )

    @property
    def max_attempts(self) -> int:
        """Attempts before a delivery is dead: the first one plus one per scheduled retry."""
        return len(self.retry_delays) + 1

    def retry_delay_ms(self, failed_attempts: int) -> int | None:
        """Delay before the next attempt after ``failed_attempts`` failures; None: it is dead.

        The schedule's delay, jittered by up to 10% either way (so the default's 27.6 h is
        never shorter than 24.8 h).
        """
        if failed_attempts < 1 or failed_attempts > len(self.retry_delays):
            return None
        delay = self.retry_delays[failed_attempts - 1]
        return int(random.uniform(delay * (1 - JITTER), delay * (1 + JITTER)))

    def schedule_span_ms(self) -> int:
        """The schedule's nominal length: how long a receiver may be down without losing one."""
        return sum(self.retry_delays)
