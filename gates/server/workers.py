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
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import socket
import sys
import threading
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

logger = logging.getLogger("mlgate.server")

# uvicorn's exit status when a server could not start (``uvicorn.main.STARTUP_FAILURE``).
STARTUP_FAILURE = 3
# How long a stopping worker may take to finish its requests before it is killed.
STOP_GRACE_SECONDS = 30.0


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


def _worker(options: dict[str, Any], port: int) -> None:
    """One worker process: uvicorn on its own socket."""
    import uvicorn

    config = uvicorn.Config(**options, port=port)
    sock = listener(config.host, port)
    server = uvicorn.Server(config)
    server.run(sockets=[sock])
    if not server.started:
        sys.exit(STARTUP_FAILURE)


def serve(options: dict[str, Any], workers: int) -> int:
    """Run ``workers`` uvicorn workers with ``options`` (``uvicorn.Config`` keywords, ``host``
    and ``port`` included) until SIGINT or SIGTERM; the exit status."""
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

    def start() -> BaseProcess:
        process = context.Process(target=_worker, args=(worker_options, port), daemon=False)
        process.start()
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
                    continue
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
