"""Observability: Prometheus metrics, the readiness check, JSON logs and the access line."""

from __future__ import annotations

import asyncio
import contextvars
import hmac
import json
import logging
import os
import re
import sys
import time
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from litestar import Litestar, Request, Response, get
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from pythonjsonlogger.json import JsonFormatter
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

import gates.approvals.store
import gates.events.store
import gates.policies.store
from gates.server.hardening import SECURITY_HEADERS
from gates.server.observe_setup import MULTIPROC_ENV
from registry.artifacts.api import STORAGE_STATE_KEY
from registry.artifacts.paths import ArtifactPath
from tracking.core.auth import ACCESS_ACTOR_SCOPE_KEY, PRINCIPAL_SCOPE_KEY, PUBLIC, permission_opt
from tracking.core.clock import now_ms
from tracking.core.db import Database
from tracking.core.settings import Settings

REQUESTS = Counter(
    "mlgate_http_requests_total",
    "HTTP requests answered, by route template, method and status.",
    ["route", "method", "status"],
)
LATENCY = Histogram(
    "mlgate_http_request_duration_seconds",
    "Time from a request's arrival to the end of its answer, by route template and method.",
    ["route", "method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
POOL_IN_USE = Gauge(
    "mlgate_db_pool_connections_in_use",
    "Database connections checked out of the pool, summed over live worker processes.",
    multiprocess_mode="livesum",
)

# A route never seen by the router (404, a refused Host): one label value, not the raw path,
# so a scanner cannot grow the series without bound.
UNMATCHED = "<unmatched>"

access_log = logging.getLogger("mlgate.access")
request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "mlgate_request_id", default=None
)

# X-Request-Id from a caller is echoed and logged only in this shape (no spaces, quotes or
# control characters that could forge a log line); anything else is replaced by a new id.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")


def new_request_id() -> str:
    """A random id in the shape of ``uuid.uuid4().hex`` (version 4, RFC 4122 variant)."""
    raw = bytearray(os.urandom(16))
    raw[6] = raw[6] & 0x0F | 0x40
    raw[8] = raw[8] & 0x3F | 0x80
    return raw.hex()


def request_id_from(value: bytes | None) -> str:
    if value is not None:
        try:
            candidate = value.decode("ascii")
        except UnicodeDecodeError:
            candidate = ""
        if _REQUEST_ID.fullmatch(candidate):
            return candidate
    return new_request_id()


# --- logs -------------------------------------------------------------------------------


class _RequestIdFilter(logging.Filter):
    """Stamp every record logged while a request runs with that request's id."""

    def filter(self, record: logging.LogRecord) -> bool:
        rid = request_id_var.get()
        if rid is not None and not hasattr(record, "request_id"):
            record.request_id = rid
        # uvicorn's terminal-coloured copy of its message: noise in a JSON line.
        record.__dict__.pop("color_message", None)
        return True


def configure_logging(settings: Settings) -> None:
    """One stderr handler on the root logger, JSON or text; idempotent per process."""
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format.strip().lower() == "text":
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    else:
        handler.setFormatter(
            JsonFormatter(
                "%(levelname)s %(name)s %(process)d %(message)s",
                rename_fields={"levelname": "level", "name": "logger", "process": "pid"},
                timestamp="time",
            )
        )
    handler.addFilter(_RequestIdFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "mlgate", False):
            root.removeHandler(old)
    handler.mlgate = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    global _json_handler
    _json_handler = handler if isinstance(handler.formatter, JsonFormatter) else None
    root.setLevel(settings.log_level.upper())
    # The access line has its own switch: it is written even when MLGATE_LOG_LEVEL=warning.
    access_log.setLevel(logging.INFO if settings.access_log else logging.CRITICAL + 1)


# mlgate's own JSON handler on the root logger (None with text logs): see write_access_line.
_json_handler: logging.StreamHandler[Any] | None = None


def _sole_json_handler() -> logging.StreamHandler[Any] | None:
    """mlgate's JSON handler when it is the only place an access record would go (no other
    handler or filter on the way, and the access line switched on), else None."""
    handler = _json_handler
    root = logging.root
    if (
        handler is None
        or not access_log.isEnabledFor(logging.INFO)
        or access_log.handlers
        or access_log.filters
        or not access_log.propagate
        or root.filters
        or len(root.handlers) != 1
        or root.handlers[0] is not handler
        or len(handler.filters) != 1
        or handler.level > logging.INFO
    ):
        return None
    return handler


_ACCESS_JSON = (
    '{"level": "INFO", "logger": "mlgate.access", "pid": %d, "message": %s, "method": %s, '
    '"route": %s, "status": %d, "duration_ms": %r, "principal": %s, "request_id": %s, '
    '"time": "%s"}'
)
# json.dumps' own string quoting (ensure_ascii=True), in C.
_json_string = json.encoder.encode_basestring_ascii


def write_access_line(
    method: str, route: str, status: int, duration_ms: float, principal: str, rid: str
) -> None:
    """The access line of one request. The JSON line is formatted here, byte for byte what the
    JSON formatter makes of the record, without a record; text logs (or any other handler or
    filter in the way) get the record through ``logging``."""
    message = f"{method} {route} {status} {duration_ms:.1f}ms principal={principal} " + (
        f"request_id={rid}"
    )
    handler = _sole_json_handler()
    if handler is not None:
        # What json.dumps writes for these fields in this order (its separators, its
        # ASCII-escaping of strings, repr() of a float), without building the dict.
        line = _ACCESS_JSON % (
            os.getpid(),
            _json_string(message),
            _json_string(method),
            _json_string(route),
            status,
            duration_ms,
            _json_string(principal),
            _json_string(rid),
            datetime.fromtimestamp(time.time(), tz=UTC).isoformat(),
        )
        try:
            handler.acquire()
            try:
                handler.stream.write(line + "\n")
                handler.stream.flush()
            finally:
                handler.release()
            return
        except Exception:  # noqa: S110 - the logging path below reports it
            pass
    access_log.info(
        "%s",
        message,
        extra={
            "method": method,
            "route": route,
            "status": status,
            "duration_ms": duration_ms,
            "principal": principal,
            "request_id": rid,
        },
    )


def check_log_format(settings: Settings) -> str | None:
    if settings.log_format.strip().lower() not in ("json", "text"):
        return f"MLGATE_LOG_FORMAT must be json or text, not {settings.log_format!r}"
    return None


# --- the per-request wrapper ------------------------------------------------------------


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value)
    return None


class _RouteSeries:
    """The request counter's and latency histogram's children, bound once per label set
    (``labels()`` checks and locks on every call); at most ``LIMIT`` sets are kept."""

    LIMIT = 4096

    def __init__(self) -> None:
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, status)
        children = self._children.get(key)
        if children is None:
            children = (REQUESTS.labels(route, method, str(status)), LATENCY.labels(route, method))
            if len(self._children) < self.LIMIT:
                self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)


class RequestObserver:
    """Outermost ASGI wrapper: the request id, the security headers of every answer (each
    one the answer lacks), metrics and the access line of every request."""

    def __init__(self, app: ASGIApp, litestar: Litestar, settings: Settings) -> None:
        self.app = app
        self.litestar = litestar
        self.settings = settings
        self.series = _RouteSeries()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id_from(_header(scope, b"x-request-id"))
        token = request_id_var.set(rid)
        started = time.perf_counter()
        status = 500
        raw_send: Any = send
        rid_header = (b"x-request-id", rid.encode())

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = answer_headers(message.get("headers", ()), rid_header)
                message = {**message, "headers": headers}
            await raw_send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id_var.reset(token)
            self._record(scope, rid, status, time.perf_counter() - started)

    def _record(self, scope: Scope, rid: str, status: int, seconds: float) -> None:
        route = str(scope.get("path_template") or UNMATCHED)
        method = str(scope.get("method", "GET"))
        self.series.observe(route, method, status, seconds)
        db = self.litestar.state.get("db")
        if db is not None:
            show_pool_in_use(db)
        principal = scope.get(PRINCIPAL_SCOPE_KEY)
        name = str(getattr(principal, "name", None) or scope.get(ACCESS_ACTOR_SCOPE_KEY) or "-")
        # Route template only: a raw path or query string may carry names a caller chose.
        write_access_line(method, route, status, round(seconds * 1000, 1), name, rid)


def answer_headers(headers: Any, rid_header: tuple[bytes, bytes]) -> list[tuple[bytes, bytes]]:
    """An answer's headers with this request's id (replacing one the app set) and each
    security header the answer does not set itself (a page's own CSP is kept)."""
    kept = []
    present = set()
    for key, value in headers:
        name = bytes(key).lower()
        if name != b"x-request-id":
            kept.append((key, value))
            present.add(name)
    kept.append(rid_header)
    kept.extend(header for header in SECURITY_HEADERS if header[0] not in present)
    return kept


def pool_in_use(db: Database) -> int:
    engines = [db.write_engine]
    if db.read_engine is not db.write_engine:
        engines.append(db.read_engine)
    total = 0
    for engine in engines:
        checkedout = getattr(engine.sync_engine.pool, "checkedout", None)
        if checkedout is not None:
            total += int(checkedout())
    return total


_pool_gauge: list[int] = []  # the value this process last gave POOL_IN_USE


def show_pool_in_use(db: Database) -> None:
    """Set the pool gauge (a write to the shared metrics file in multiprocess mode) when its
    value changed: setting a gauge to the value it holds changes nothing."""
    in_use = pool_in_use(db)
    if _pool_gauge != [in_use]:
        POOL_IN_USE.set(in_use)
        _pool_gauge[:] = [in_use]


# --- /metrics ---------------------------------------------------------------------------

# A scrape's database reads wait at most this long; a slow database shows as
# mlgate_database_up 0, never as a hung scrape.
SCRAPE_DB_TIMEOUT = 5.0


class _DatabaseFacts:
    """Cluster-wide gauges read from the database at scrape time (the same in every replica:
    aggregate them with max(), not sum())."""

    def __init__(self, facts: dict[str, Any] | None) -> None:
        self.facts = facts

    def collect(self) -> Any:
        up = GaugeMetricFamily(
            "mlgate_database_up", "1 when this scrape could read the database, else 0."
        )
        up.add_metric([], 0 if self.facts is None else 1)
        yield up
        if self.facts is None:
            return
        f = self.facts
        yield GaugeMetricFamily(
            "mlgate_webhook_outbox_backlog",
            "Webhook deliveries still to be made (pending or failed and awaiting a retry).",
            value=f["backlog"],
        )
        yield GaugeMetricFamily(
            "mlgate_webhook_outbox_oldest_pending_age_seconds",
            "Age of the oldest delivery still to be made; 0 when there is none.",
            value=f["oldest_age"],
        )
        deliveries = GaugeMetricFamily(
            "mlgate_webhook_deliveries",
            "Webhook deliveries by outcome (pending, failed, delivered, dead, ...).",
            labels=["outcome"],
        )
        for outcome, count in sorted(f["deliveries"].items()):
            deliveries.add_metric([outcome], count)
        yield deliveries
        decisions = GaugeMetricFamily(
            "mlgate_gate_decisions",
            "Gate decisions by outcome (passed, failed, pending_approval, ...).",
            labels=["outcome"],
        )
        for outcome, count in sorted(f["decisions"].items()):
            decisions.add_metric([outcome], count)
        yield decisions
        yield GaugeMetricFamily(
            "mlgate_approval_requests_open",
            "Approval requests pending and not yet expired.",
            value=f["open_approvals"],
        )


async def database_facts(db: Database) -> dict[str, Any]:
    now = now_ms()
    async with db.read() as s:
        deliveries = await gates.events.store.delivery_counts(s)
        oldest = await gates.events.store.oldest_open_delivery(s)
        decisions = await gates.policies.store.decision_counts(s)
        open_approvals = await gates.approvals.store.count_open(s, now)
    backlog = sum(deliveries.get(status, 0) for status in gates.events.store.OPEN_STATUSES)
    return {
        "deliveries": deliveries,
        "backlog": backlog,
        "oldest_age": max(0.0, (now - oldest) / 1000) if oldest is not None else 0.0,
        "decisions": decisions,
        "open_approvals": open_approvals,
    }


def process_metrics_text() -> bytes:
    """This process's metrics, or every worker's in multiprocess mode."""
    directory = os.environ.get(MULTIPROC_ENV)
    if directory:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=directory)
        return generate_latest(registry)
    return generate_latest(REGISTRY)


async def metrics_body(db: Database | None) -> bytes:
    facts: dict[str, Any] | None = None
    if db is not None:
        show_pool_in_use(db)
        try:
            facts = await asyncio.wait_for(database_facts(db), SCRAPE_DB_TIMEOUT)
        except Exception:
            logging.getLogger("mlgate.metrics").warning("metrics: the database could not be read")
            facts = None
    db_registry = CollectorRegistry(auto_describe=False)
    db_registry.register(_DatabaseFacts(facts))
    return process_metrics_text() + generate_latest(db_registry)


async def _answer(send: Send, status: int, body: bytes, content_type: bytes) -> None:
    raw: Any = send
    await raw(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
            ],
        }
    )
    await raw({"type": "http.response.body", "body": body})


class MetricsEndpoint:
    """Serves GET /metrics ahead of the application's authentication (scrapers carry no user
    credentials); with auth on, only a bearer of MLGATE_METRICS_TOKEN may read it."""

    def __init__(self, app: ASGIApp, litestar: Litestar, settings: Settings) -> None:
        self.app = app
        self.litestar = litestar
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/metrics" or not self.settings.metrics:
            await self.app(scope, receive, send)
            return
        scope["path_template"] = "/metrics"
        if scope.get("method") not in ("GET", "HEAD"):
            await _error(send, 405, "BAD_REQUEST", "Only GET is allowed on /metrics.")
            return
        if self.settings.auth:
            if not self.settings.metrics_token:
                await _error(
                    send,
                    403,
                    "PERMISSION_DENIED",
                    "With auth on, /metrics needs MLGATE_METRICS_TOKEN set on the server.",
                )
                return
            sent = (_header(scope, b"authorization") or b"").decode("latin-1").strip()
            scheme, _, token = sent.partition(" ")
            expected = self.settings.metrics_token.encode()
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                token.strip().encode("latin-1"), expected
            ):
                await _error(
                    send, 401, "UNAUTHENTICATED", "Send Authorization: Bearer <metrics token>."
                )
                return
        body = await metrics_body(self.litestar.state.get("db"))
        await _answer(send, 200, body, CONTENT_TYPE_LATEST.encode())


async def _error(send: Send, status: int, code: str, message: str) -> None:
    body = json.dumps({"error_code": code, "message": message}).encode()
    await _answer(send, status, body, b"application/json")


def host_exempt_paths(settings: Settings) -> frozenset[str]:
    """Paths the Host check lets through: kubelet probes and Prometheus address a pod by its
    IP, not by an allowed host name. The probes hold nothing a rebinding page could use;
    /metrics only when auth is on (then it needs the metrics token anyway)."""
    paths = {"/health", "/ready"}
    if settings.metrics and settings.auth:
        paths.add("/metrics")
    return frozenset(paths)


# --- /ready -----------------------------------------------------------------------------

READY_CHECK_TIMEOUT = 3.0


@lru_cache(maxsize=1)
def schema_heads() -> frozenset[str]:
    from alembic.script import ScriptDirectory

    from gates.server.migrate import MIGRATIONS_DIR, alembic_config

    config = alembic_config("")
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return frozenset(ScriptDirectory.from_config(config).get_heads())


async def _applied_revisions(db: Database) -> set[str] | None:
    """The revisions in alembic_version; None when the table is missing (never migrated)."""
    async with db.read() as s:
        await s.execute(text("SELECT 1"))
    try:
        async with db.read() as s:
            rows = await s.execute(text("SELECT version_num FROM alembic_version"))
            return {str(r[0]) for r in rows}
    except DBAPIError:
        return None


async def readiness(app: Litestar) -> tuple[bool, dict[str, str]]:
    """Each check's verdict; never an exception's text (it could name a host or a user)."""
    checks: dict[str, str] = {}
    db: Database = app.state["db"]
    try:
        applied = await asyncio.wait_for(_applied_revisions(db), READY_CHECK_TIMEOUT)
        checks["database"] = "ok"
        heads = schema_heads()
        if applied is None:
            checks["schema"] = "not migrated (run mlgate db upgrade)"
        elif applied == set(heads):
            checks["schema"] = "ok"
        else:
            checks["schema"] = (
                f"at {','.join(sorted(applied)) or 'nothing'}, head is {','.join(sorted(heads))}"
            )
    except TimeoutError:
        checks["database"] = "timed out"
        checks["schema"] = "unknown"
    except Exception as exc:
        checks["database"] = f"unreachable ({type(exc).__name__})"
        checks["schema"] = "unknown"
    storage = app.state[STORAGE_STATE_KEY]
    try:
        await asyncio.wait_for(storage.stat(ArtifactPath.root()), READY_CHECK_TIMEOUT)
        checks["artifacts"] = "ok"
    except TimeoutError:
        checks["artifacts"] = "timed out"
    except Exception as exc:
        checks["artifacts"] = f"unreachable ({type(exc).__name__})"
    return all(v == "ok" for v in checks.values()), checks


@get("/ready", opt=permission_opt(PUBLIC), include_in_schema=False)
async def ready(request: Request[Any, Any, Any]) -> Response[Any]:
    ok, checks = await readiness(request.app)
    if ok:
        return Response({"status": "ready", "checks": checks}, status_code=200)
    failed = ", ".join(f"{name}: {verdict}" for name, verdict in checks.items() if verdict != "ok")
    return Response(
        {
            "error_code": "TEMPORARILY_UNAVAILABLE",
            "message": f"not ready: {failed}",
            "checks": checks,
        },
        status_code=503,
        headers={"Retry-After": "5", "Cache-Control": "no-store"},
    )
