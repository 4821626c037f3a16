"""`mlgate server` with several workers: each listens on its own socket, so connections spread.

uvicorn's own multi-worker mode shares one listening socket, and a burst of keep-alive
connections often all land on the worker that woke first (one core used of several). These
tests attack the supervisor in ``gates/server/workers.py`` on a live server: the listeners it
leaves, where a burst of connections goes, a worker killed with SIGKILL, a stop, a taken port.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from tests.conftest import REPO_ROOT, LiveServer, start_server, stop_server

LISTEN = "0A"  # TCP state in /proc/net/tcp


def _listening_inodes(port: int) -> set[str]:
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        cols = line.split()
        if int(cols[1].split(":")[1], 16) == port and cols[3] == LISTEN:
            found.add(f"socket:[{cols[9]}]")
    return found


def _children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(p) for p in text.split()]


def _workers(server_pid: int, port: int) -> list[int]:
    """The supervisor's children that own a listener on ``port`` (multiprocessing's resource
    tracker is a child too)."""
    children = _children(server_pid)
    return sorted(set(_owners(_listening_inodes(port), children).values()))


def _owners(inodes: set[str], pids: list[int]) -> dict[str, int]:
    owners = {}
    for pid in pids:
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except FileNotFoundError:  # the process exited meanwhile (a worker just killed)
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target in inodes:
                owners[target] = pid
    return owners


def _wait_for(condition: object, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _health_pids(log: Path) -> set[int]:
    """Workers that logged an access line for /health."""
    pids = set()
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{") and '"/health' in line:
            pids.add(json.loads(line)["pid"])
    return pids


def _burst(url: str, connections: int) -> list[int]:
    """``connections`` fresh keep-alive connections opened at once, three requests each."""
    statuses: list[int] = []
    start = threading.Barrier(connections)

    def one() -> None:
        with httpx.Client(timeout=30) as client:
            start.wait()
            statuses.extend(client.get(f"{url}/health").status_code for _ in range(3))

    threads = [threading.Thread(target=one) for _ in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return statuses


def test_each_worker_listens_on_its_own_socket_and_a_burst_reaches_both(
    database_url: str, tmp_path: Path
) -> None:
    server = start_server(database_url, tmp_path, workers=2, extra_env={"MLGATE_LOG_LEVEL": "info"})
    port = int(server.url.rsplit(":", 1)[1])
    try:
        # Both workers up: two listening sockets on the port, one per worker (uvicorn's shared
        # socket would be one), and the supervisor holds none of them.
        _wait_for(lambda: len(_listening_inodes(port)) == 2, 60, "two listeners")
        children = _children(server.process.pid)
        owners = _owners(_listening_inodes(port), [server.process.pid, *children])
        workers = sorted(owners.values())
        assert len(set(workers)) == 2 and server.process.pid not in workers, (owners, children)

        # 32 connections opened together: the kernel spreads them by address, so both
        # workers answer (all 32 on one worker has odds of 2**-31).
        statuses = _burst(server.url, 32)
        assert statuses == [200] * 96
        _wait_for(lambda: _health_pids(server.log) >= set(workers), 10, "both workers' lines")
    finally:
        stop_server(server)
    assert server.process.returncode == 0


def test_a_killed_worker_is_replaced_and_a_stop_ends_every_worker(
    database_url: str, tmp_path: Path
) -> None:
    server = start_server(database_url, tmp_path, workers=2)
    port = int(server.url.rsplit(":", 1)[1])
    _wait_for(lambda: len(_listening_inodes(port)) == 2, 60, "two listeners")
    first = _workers(server.process.pid, port)
    assert len(first) == 2, first
    os.kill(first[0], signal.SIGKILL)
    # Another worker takes its place, with its own socket; the server never stops answering.
    _wait_for(
        lambda: (
            len(_workers(server.process.pid, port)) == 2
            and first[0] not in _workers(server.process.pid, port)
        ),
        60,
        "the replacement worker",
    )
    assert _burst(server.url, 8) == [200] * 24
    workers = _workers(server.process.pid, port)

    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(timeout=40) == 0
    assert not _listening_inodes(port)
    for pid in workers:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()
    stop_server(server)  # reaps the group if anything was left


def test_a_port_in_use_stops_the_server_at_once(database_url: str, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {
            **os.environ,
            "MLGATE_DATABASE_URL": database_url,
            "MLGATE_ARTIFACTS_DESTINATION": str(tmp_path / "artifacts"),
            "MLGATE_PORT": str(port),
            "MLGATE_HOST": "127.0.0.1",
            "MLGATE_WORKERS": "2",
        }
        done = subprocess.run(
            [sys.executable, "-m", "gates.server", "server"],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            timeout=60,
            start_new_session=True,
        )
    assert done.returncode == 3, done.stderr[-2000:]
    assert b"cannot bind" in done.stderr, done.stderr[-2000:]


def test_a_hung_worker_is_killed_and_replaced(database_url: str, tmp_path: Path) -> None:
    # A stopped process is the hung worker: alive, holding its socket, its event loop silent.
    server = start_server(
        database_url, tmp_path, workers=2, extra_env={"MLGATE_WORKER_TIMEOUT": "3"}
    )
    port = int(server.url.rsplit(":", 1)[1])
    try:
        _wait_for(lambda: len(_workers(server.process.pid, port)) == 2, 60, "two workers")
        first = _workers(server.process.pid, port)
        time.sleep(1.5)  # both have stamped their first heartbeat
        os.kill(first[0], signal.SIGSTOP)
        _wait_for(
            lambda: (
                first[0] not in _workers(server.process.pid, port)
                and len(_workers(server.process.pid, port)) == 2
            ),
            60,
            "the hung worker's replacement",
        )
        assert not Path(f"/proc/{first[0]}").exists()
        assert "has not answered" in server.log.read_text(errors="replace")
        # The healthy worker was left alone, and the server answers on every connection.
        assert first[1] in _workers(server.process.pid, port)
        assert _burst(server.url, 8) == [200] * 24
    finally:
        stop_server(server)


def test_workers_exit_when_the_supervisor_is_killed(database_url: str, tmp_path: Path) -> None:
    server = start_server(database_url, tmp_path, workers=2)
    port = int(server.url.rsplit(":", 1)[1])
    try:
        _wait_for(lambda: len(_workers(server.process.pid, port)) == 2, 60, "two workers")
        workers = _workers(server.process.pid, port)
        server.process.kill()  # SIGKILL: the supervisor cannot stop its workers itself
        server.process.wait(timeout=10)

        def gone() -> bool:
            return all(
                not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()
                for pid in workers
            )

        # Without PR_SET_PDEATHSIG they would serve on, unsupervised, holding the port.
        _wait_for(gone, 40, "the orphaned workers to exit")
        _wait_for(lambda: not _listening_inodes(port), 10, "the port to be released")
    finally:
        stop_server(server)


def _get_on(sock: socket.socket, port: int) -> bytes:
    """One keep-alive ``GET /health`` on ``sock``; the answer's status line (b"" if closed)."""
    sock.sendall(f"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = sock.recv(65536)
        if not chunk:
            return b""
        answer += chunk
    head, body = answer.split(b"\r\n\r\n", 1)
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:  # the whole answer, so the next read finds only a close
        body += sock.recv(65536)
    return head.split(b"\r\n", 1)[0]


def test_idle_keep_alive_connections_stay_open_for_the_configured_time(
    live_server: LiveServer, database_url: str, tmp_path: Path
) -> None:
    # The MLflow client pools connections and sends its next call after whatever pause the
    # training script takes (log_model infers requirements for seconds). A connection the
    # server closes as that call is sent is reset, so an idle one must outlive such pauses:
    # uvicorn's own default (5 s) closed it. The setting reaches every worker.
    short = start_server(
        database_url, tmp_path, workers=2, extra_env={"MLGATE_KEEP_ALIVE_TIMEOUT": "1"}
    )
    try:
        default_port = int(live_server.url.rsplit(":", 1)[1])
        short_port = int(short.url.rsplit(":", 1)[1])
        with (
            socket.create_connection(("127.0.0.1", default_port), timeout=10) as kept,
            socket.create_connection(("127.0.0.1", short_port), timeout=10) as closed,
        ):
            assert _get_on(kept, default_port) == b"HTTP/1.1 200 OK"
            assert _get_on(closed, short_port) == b"HTTP/1.1 200 OK"
            time.sleep(3)
            assert closed.recv(1) == b""  # the server closed the idle connection
            time.sleep(4)  # 7 s idle in all: past uvicorn's default
            assert _get_on(kept, default_port) == b"HTTP/1.1 200 OK"
    finally:
        stop_server(short)
