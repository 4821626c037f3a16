"""Several uvicorn workers, each with its own listening socket on one port (``SO_REUSEPORT``).

uvicorn's own ``--workers`` shares one listening socket between its workers: whichever worker
wakes first accepts every connection waiting, so a burst of keep-alive connections (a serving
fleet, a load balancer's pool, a benchmark's clients) often lands on one worker and stays
there, and the server runs on one core however many it has. Here each worker binds its own
socket to the same address with ``SO_REUSEPORT``, and the kernel spreads new connections over
the workers' sockets by their addresses.

The supervisor (this process) holds the port with one more socket that never listens, so a
port already in use fails at once and a port of 0 becomes one fixed port for every worker. It
restarts a worker that dies, stops everything on SIGINT or SIGTERM (each worker drains its
requests, as uvicorn does on that signal), and exits with uvicorn's startup-failure status if a
worker cannot start.

Two faults a supervisor must survive are handled too:
- a hung worker (alive, but its event loop stuck): each worker's loop stamps a shared clock
  every second, and a worker whose stamp is older than ``MLGATE_WORKER_TIMEOUT`` is killed
  and replaced, as uvicorn's health pings do;
- a supervisor killed with SIGKILL: every worker asked the kernel for SIGTERM when its parent
  dies (``PR_SET_PDEATHSIG``), so it drains and exits rather than serving on, unsupervised.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

logger = logging.getLogger("mlgate.server")

# uvicorn's exit status when a server could not start (``uvicorn.main.STARTUP_FAILURE``).
STARTUP_FAILURE = 3
# How long a stopping worker may take to finish its requests before it is killed.
STOP_GRACE_SECONDS = 30.0
# How often a worker's event loop stamps its heartbeat.
HEARTBEAT_SECONDS = 1.0
# prctl(2) option: the signal this process gets when its parent dies (Linux).
PR_SET_PDEATHSIG = 1


def listener(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``(host, port)`` that shares the port with its siblings."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def _die_with_parent(parent: int) -> None:
    """Ask the kernel for SIGTERM when the supervisor dies; exit now if it already has."""
    if sys.platform == "linux":
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:  # the supervisor died before the request took effect
        sys.exit(0)


async def _heartbeat(stamp: ctypes.c_double) -> None:
    while True:
        stamp.value = time.monotonic()
        await asyncio.sleep(HEARTBEAT_SECONDS)


def _worker(options: dict[str, Any], port: int, parent: int, stamp: ctypes.c_double) -> None:
    """One worker process: uvicorn on its own socket, with a heartbeat from its event loop."""
    import uvicorn

    _die_with_parent(parent)
    config = uvicorn.Config(**options, port=port)
    sock = listener(config.host, port)
    server = uvicorn.Server(config)

    async def main() -> None:
        beat = asyncio.create_task(_heartbeat(stamp))
        try:
            await server.serve(sockets=[sock])
        finally:
            beat.cancel()

    with asyncio.Runner(loop_factory=config.get_loop_factory()) as runner:
        runner.run(main())
    if not server.started:
        sys.exit(STARTUP_FAILURE)


def _hung(stamp: ctypes.c_double, timeout: float) -> float | None:
    """Seconds since the worker's last heartbeat, if past ``timeout`` (None before its first:
    start-up, migrations included, is not timed)."""
    last = stamp.value
    if last == 0.0:
        return None
    silent = time.monotonic() - last
    return silent if silent > timeout else None


def serve(options: dict[str, Any], workers: int, timeout: float = 30.0) -> int:
    """Run ``workers`` uvicorn workers with ``options`` (``uvicorn.Config`` keywords, ``host``
    and ``port`` included) until SIGINT or SIGTERM; the exit status. A worker whose event loop
    is silent for ``timeout`` seconds is killed and replaced."""
    host, port = options["host"], options["port"]
    try:
        reserved = listener(host, port)
    except OSError as exc:
        logger.error("cannot bind %s:%s: %s", host, port, exc)
        return STARTUP_FAILURE
    port = reserved.getsockname()[1]
    worker_options = {k: v for k, v in options.items() if k != "port"}
    context = multiprocessing.get_context("spawn")
    stopping = threading.Event()

    def stop(signum: int, _frame: FrameType | None) -> None:
        stopping.set()

    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}

    stamps: dict[int, ctypes.c_double] = {}

    def start() -> BaseProcess:
        stamp: ctypes.c_double = context.RawValue(ctypes.c_double, 0.0)
        process = context.Process(
            target=_worker, args=(worker_options, port, os.getpid(), stamp), daemon=False
        )
        process.start()
        stamps[id(process)] = stamp
        return process

    status = 0
    processes = [start() for _ in range(workers)]
    logger.info(
        "mlgate running on http://%s:%s with %d workers (one socket each)", host, port, workers
    )
    try:
        while not stopping.wait(0.5):
            for i, process in enumerate(processes):
                if process.is_alive():
                    silent = _hung(stamps[id(process)], timeout)
                    if silent is None:
                        continue
                    logger.error(
                        "worker %s has not answered for %.0f s; killing it", process.pid, silent
                    )
                    process.kill()
                    process.join()
                if process.exitcode == STARTUP_FAILURE:
                    logger.error("a worker could not start; stopping")
                    status = STARTUP_FAILURE
                    stopping.set()
                    break
                logger.warning(
                    "worker %s exited with status %s; starting another",
                    process.pid,
                    process.exitcode,
                )
                stamps.pop(id(process), None)
                processes[i] = start()
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
        for process in processes:
            process.join(STOP_GRACE_SECONDS)
            if process.is_alive():
                process.kill()
                process.join()
        reserved.close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return status
