"""Run-and-report helpers the benchmark scripts share: concurrent load, its numbers, the report.

``bench_tracking.py`` keeps the HTTP client, the server processes and the databases; this
module holds what every script repeated around them: driving a phase from N clients while
counting CPU, percentiles, the machine line of a report and writing the report out.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def machine_busy_seconds() -> float:
    """Non-idle CPU time of the whole machine, summed over cores."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:]]
    return (sum(ticks[:8]) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def percentile(samples: list[float], q: float) -> float:
    """The nearest-rank ``q`` quantile (0..1); NaN without samples."""
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


@dataclass
class LoadStats:
    """One measured phase: its size, duration, latencies, errors and the CPU it cost."""

    n: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str = ""
    client_cpu: float = 0.0
    server_cpu: float = 0.0
    machine_busy: float = 0.0  # every process on the box, from /proc/stat

    @property
    def rps(self) -> float:
        """Successful requests per second (a failed request does not count as work done)."""
        return (self.n - self.errors) / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float:
        return percentile(self.latencies_ms, q)

    def error(self, detail: str) -> None:
        self.errors += 1
        self.first_error = self.first_error or detail[:300]


async def drive(
    concurrency: int, total: int, attempt: Callable[[int, int], Awaitable[None]]
) -> None:
    """``total`` calls of ``attempt(client, k)`` shared by ``concurrency`` clients, k = 0, 1..."""
    counter = itertools.count()

    async def client(i: int) -> None:
        while (k := next(counter)) < total:
            await attempt(i, k)

    await asyncio.gather(*(client(i) for i in range(concurrency)))


class PhaseClock:
    """Wall time, this process's CPU, the server's CPU and the machine's, across one phase."""

    def __init__(self, server_cpu: Callable[[], float]) -> None:
        self.server_cpu = server_cpu
        self.c0, self.s0 = time.process_time(), server_cpu()
        self.m0, self.t0 = machine_busy_seconds(), time.perf_counter()

    def stop(self, stats: LoadStats) -> None:
        stats.seconds = time.perf_counter() - self.t0
        stats.client_cpu = time.process_time() - self.c0
        stats.server_cpu = self.server_cpu() - self.s0
        stats.machine_busy = machine_busy_seconds() - self.m0


def machine_line(load_at_start: float) -> str:
    return (
        f"{os.cpu_count()} cores; load average {load_at_start:.2f} at start, "
        f"{os.getloadavg()[0]:.2f} at end"
    )


def write_report(text: str, output: str | None, default: Path) -> Path:
    """Print the markdown report and write it to ``output`` (or ``default``)."""
    print(text)
    path = Path(output) if output else default
    path.write_text(text)
    log(f"wrote {path}")
    return path
