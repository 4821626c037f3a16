"""A real HTTP receiver for webhook tests: records every request, answers as told."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    peer: tuple[str, int] = ("", 0)  # the sender's address and source port

    @property
    def json(self) -> Any:
        return json.loads(self.body)


# Decides the answer to the n-th request (0-based): (status, extra headers).
Responder = Callable[[Received, int], tuple[int, dict[str, str]]]


def always_ok(_: Received, __: int) -> tuple[int, dict[str, str]]:
    return 200, {}


class Receiver:
    def __init__(self, respond: Responder = always_ok, host: str = "127.0.0.1") -> None:
        self.respond = respond
        self._lock = threading.Lock()
        self._requests: list[Received] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                got = Received(
                    self.path,
                    {k.lower(): v for k, v in self.headers.items()},
                    self.rfile.read(length),
                    (str(self.client_address[0]), int(self.client_address[1])),
                )
                with receiver._lock:
                    index = len(receiver._requests)
                    receiver._requests.append(got)
                status, headers = receiver.respond(got, index)
                body = b'{"ok": true}' if status < 300 else b"nope"
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer((host, 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    @property
    def requests(self) -> list[Received]:
        with self._lock:
            return list(self._requests)

    def wait_for(self, count: int, timeout: float = 90.0) -> list[Received]:
        """Poll until at least ``count`` requests arrived (generous timeout, no fixed sleep)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.requests
            if len(got) >= count:
                return got
            time.sleep(0.05)
        raise AssertionError(f"expected {count} webhook requests, got {len(self.requests)}")

    def start(self) -> Receiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@contextmanager
def receiving(respond: Responder = always_ok) -> Iterator[Receiver]:
    receiver = Receiver(respond).start()
    try:
        yield receiver
    finally:
        receiver.stop()


def wait_until(check: Callable[[], Any], timeout: float = 90.0, what: str = "condition") -> Any:
    """Poll ``check`` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")
