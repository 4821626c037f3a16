"""The fixed cost of every request stays lean: the access line is formatted without the logging
machinery (and reads exactly as the JSON formatter would write it), metric series are bound
once, no route handler is copied per request, and the Host check keeps its verdicts."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import pytest
from litestar import Litestar
from litestar.handlers import base as litestar_handlers
from litestar.testing import AsyncTestClient

from gates.server import hardening, observe
from gates.server.app import create_app
from gates.server.migrate import upgrade
from gates.server.web.render import PAGE_CSP
from tracking.core.settings import Settings

API = "/api/2.0/mlflow"


@pytest.fixture(scope="module")
def app(make_database: Any, tmp_path_factory: pytest.TempPathFactory) -> Litestar:
    url = make_database("request_path")
    upgrade(url)
    return create_app(
        Settings(
            database_url=url,
            artifacts_destination=str(tmp_path_factory.mktemp("request_path")),
            webhook_worker=False,
            approval_sweep_interval=0,
            staging_sweep_interval=0,
            audit_checkpoint_interval=0,
            drift_sweep_interval=0,
            log_level="warning",
        )
    )


@pytest.fixture
async def client(app: Litestar) -> AsyncIterator[AsyncTestClient[Litestar]]:
    async with AsyncTestClient(app) as c:
        yield c


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    """mlgate's own JSON handler, writing into a buffer for the test."""
    observe.configure_logging(Settings(log_level="warning"))
    handler = observe._json_handler
    assert handler is not None
    stream = io.StringIO()
    saved = handler.setStream(stream)
    yield stream
    handler.setStream(saved)


@contextmanager
def alone() -> Iterator[None]:
    """mlgate's handler as the root logger's only one, as in a server: pytest's log capture
    handlers (added for each test phase) are set aside meanwhile."""
    others = [h for h in logging.root.handlers if h is not observe._json_handler]
    for other in others:
        logging.root.removeHandler(other)
    try:
        yield
    finally:
        for other in others:
            logging.root.addHandler(other)


def _lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line]


class _Refuse(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        self.seen.append(record)
        return True


class _Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append(record)


def test_the_direct_access_line_is_what_the_json_formatter_writes(
    log_stream: io.StringIO,
) -> None:
    args = ("POST", f"{API}/runs/log-metric", 200, 1.5, 'ünïcode "user"', "rid-1")
    through_logging = _Refuse()
    with alone():
        observe.write_access_line(*args)
        # A filter on the access logger sends the record through logging and its formatter.
        observe.access_log.addFilter(through_logging)
        try:
            observe.write_access_line(*args)
        finally:
            observe.access_log.removeFilter(through_logging)
    assert len(through_logging.seen) == 1
    direct, formatted = log_stream.getvalue().splitlines()
    # Byte for byte, but for the time.
    direct_fields, formatted_fields = json.loads(direct), json.loads(formatted)
    assert list(direct_fields) == list(formatted_fields)
    stamps = direct_fields.pop("time"), formatted_fields.pop("time")
    assert direct_fields == formatted_fields
    assert direct.split('"time"')[0] == formatted.split('"time"')[0]
    for stamp in stamps:
        assert datetime.fromisoformat(stamp).utcoffset() is not None
    assert direct_fields["message"] == (
        f'POST {API}/runs/log-metric 200 1.5ms principal=ünïcode "user" request_id=rid-1'
    )


async def test_requests_make_no_access_log_record_yet_write_their_line(
    client: AsyncTestClient[Litestar], log_stream: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[str] = []
    original = logging.Logger.makeRecord

    def counting(self: logging.Logger, name: str, *args: Any, **kwargs: Any) -> Any:
        made.append(name)
        return original(self, name, *args, **kwargs)

    monkeypatch.setattr(logging.Logger, "makeRecord", counting)
    with alone():
        for i in range(3):
            r = await client.get("/health", headers={"X-Request-Id": f"line-{i}"})
            assert r.status_code == 200
    assert "mlgate.access" not in made
    lines = [x for x in _lines(log_stream) if x.get("logger") == "mlgate.access"]
    assert [x["request_id"] for x in lines] == ["line-0", "line-1", "line-2"]
    assert all(x["route"] == "/health" and x["status"] == 200 for x in lines)


async def test_a_handler_of_the_access_logger_still_gets_every_record(
    client: AsyncTestClient[Litestar], log_stream: io.StringIO
) -> None:
    seen = _Kept()
    observe.access_log.addHandler(seen)
    try:
        with alone():
            r = await client.get("/version", headers={"X-Request-Id": "to-both"})
    finally:
        observe.access_log.removeHandler(seen)
    assert r.status_code == 200
    [record] = [x for x in seen.seen if getattr(x, "request_id", None) == "to-both"]
    assert (record.method, record.route, record.status) == ("GET", "/version", 200)  # type: ignore[attr-defined]
    # ... and the JSON line still reaches mlgate's handler, once.
    assert [x["request_id"] for x in _lines(log_stream)].count("to-both") == 1


async def test_the_access_line_switch_still_silences_it(
    client: AsyncTestClient[Litestar], log_stream: io.StringIO
) -> None:
    observe.access_log.setLevel(logging.CRITICAL + 1)
    try:
        with alone():
            r = await client.get("/health", headers={"X-Request-Id": "quiet"})
            assert r.status_code == 200
    finally:
        observe.access_log.setLevel(logging.INFO)
    assert "quiet" not in log_stream.getvalue()


async def test_metric_series_are_bound_once_per_label_set(
    client: AsyncTestClient[Litestar], monkeypatch: pytest.MonkeyPatch
) -> None:
    bound: list[tuple[str, ...]] = []
    for metric in (observe.REQUESTS, observe.LATENCY):
        original = metric.labels

        def counting(*labels: str, original: Any = original) -> Any:
            bound.append(labels)
            return original(*labels)

        monkeypatch.setattr(metric, "labels", counting)
    route = f"{API}/experiments/get-by-name"
    before = observe.REQUESTS.labels(route, "GET", "404")._value.get()
    bound.clear()
    for _ in range(5):
        r = await client.get(route, params={"experiment_name": "no-such-experiment"})
        assert r.status_code == 404
    assert observe.REQUESTS.labels(route, "GET", "404")._value.get() == before + 5
    assert len(bound) <= 3  # the counter and the histogram, once each (+ the check above)


async def test_no_route_handler_is_copied_per_request(
    client: AsyncTestClient[Litestar], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Litestar copies the route handler for each guard it runs; the global check is a
    middleware, so an API request copies nothing."""
    copies: list[Any] = []
    original = litestar_handlers.copy

    def counting(obj: Any) -> Any:
        copies.append(obj)
        return original(obj)

    monkeypatch.setattr(litestar_handlers, "copy", counting)
    assert (await client.get("/health")).status_code == 200
    r = await client.get(f"{API}/experiments/get", params={"experiment_id": "0"})
    assert r.status_code == 200, r.text
    r = await client.post(f"{API}/experiments/search", json={"max_results": 1})
    assert r.status_code == 200, r.text
    assert copies == []


async def test_the_permission_check_still_refuses_before_the_handler(
    client: AsyncTestClient[Litestar],
) -> None:
    # A non-JSON mutation body is refused by the check, with the route's MLflow error.
    r = await client.post(
        f"{API}/experiments/create", content=b"name=x", headers={"Content-Type": "text/plain"}
    )
    assert r.status_code == 415, r.text
    assert r.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    assert r.headers["x-content-type-options"] == "nosniff"


async def test_answers_carry_one_request_id_and_the_security_headers(
    client: AsyncTestClient[Litestar],
) -> None:
    r = await client.get("/health", headers={"X-Request-Id": "one-id"})
    assert r.headers.get_list("x-request-id") == ["one-id"]
    for name, value in hardening.SECURITY_HEADERS:
        assert r.headers.get_list(name.decode()) == [value.decode()]
    # A page's own policy is kept, not doubled.
    page = await client.get("/login")
    assert page.status_code == 200
    assert page.headers.get_list("content-security-policy") == [PAGE_CSP]


def test_host_verdicts_are_kept_for_a_bounded_number_of_names() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("not reached")

    check = hardening.HostAllowlist(app, ("localhost", "127.0.0.1"))
    assert check.allowed_host("localhost:5000", "127.0.0.1")
    assert check.allowed_host("127.0.0.1:5000", "127.0.0.1")
    assert not check.allowed_host("evil.example", "127.0.0.1")
    for i in range(2 * check.CACHE_LIMIT):
        assert not check.allowed_host(f"evil-{i}.example", "127.0.0.1")
    assert len(check._verdicts) == check.CACHE_LIMIT
    # Verdicts past the limit are still checked, and remembered ones still answer.
    assert not check.allowed_host(f"evil-{3 * check.CACHE_LIMIT}.example", "127.0.0.1")
    assert check.allowed_host("localhost:5000", "127.0.0.1")
    assert check.allowed_host("[::1]:5000", "::1")


async def _messages(answer: Any) -> list[Any]:
    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    async def receive() -> Any:
        return {"type": "http.disconnect"}

    await answer({"type": "http"}, receive, send)
    return sent


@pytest.mark.parametrize(
    ("kwargs", "route"),
    [
        ({"content": b'{"a":1}', "media_type": "application/json", "status_code": 200}, {}),
        ({"content": b"OK", "media_type": "text/plain"}, {}),
        ({"content": b"{}", "media_type": "application/json", "status_code": 404}, {}),
        ({"content": b"{}", "media_type": "application/json", "headers": {"ETag": "x"}}, {}),
        ({"content": b"{}", "media_type": "application/json"}, {"headers": {"X-Layer": "1"}}),
        ({"content": b"", "media_type": "application/json", "status_code": 304}, {}),
    ],
)
async def test_an_encoded_answer_sends_what_litestar_would(
    kwargs: dict[str, Any], route: dict[str, Any]
) -> None:
    from litestar import Response

    from tracking.core.wire import Encoded

    ours = Encoded(**kwargs).to_asgi_response(None, None, **route)  # type: ignore[arg-type]
    theirs = Response(**kwargs).to_asgi_response(None, None, **route)  # type: ignore[arg-type]
    assert await _messages(ours) == await _messages(theirs)
