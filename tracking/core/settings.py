"""The one typed settings object, read from ``MLGATE_*`` environment variables and CLI flags."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from tracking.core.object_uris import S3Location, parse_s3_prefixes

DEFAULT_DATA_DIR = Path("mlgate-data")


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"not a boolean: {value!r}")


def default_workers(cores: int | None = None) -> int:
    """Worker processes when none are configured: one per usable core, at most 4.

    Requests mostly wait on the database, so one worker per core keeps every core busy; past 4
    each worker's own pool (MLGATE_DB_POOL_SIZE connections) costs PostgreSQL more than it
    gains, and SQLite has one writer however many workers wait for it.
    """
    if cores is None:
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:  # not Linux
            cores = os.cpu_count() or 1
    return max(1, min(cores, 4))


@dataclass(frozen=True)
class Settings:
    """Every setting mlgate reads. Each field maps to ``MLGATE_<FIELD NAME>``."""

    host: str = "127.0.0.1"
    port: int = 5000
    # Default: the cores this process may use, at most 4 (see default_workers).
    workers: int = field(default_factory=lambda: default_workers())
    # With several workers: seconds a worker's event loop may go without a heartbeat before
    # the supervisor kills it and starts another (a hung worker would hold its connections).
    worker_timeout: float = 30.0
    # Seconds an idle keep-alive connection stays open. Clients (the MLflow client's pooled
    # session, a load balancer) reuse idle connections; one the server closes just as a request
    # is sent on it is reset. Longer than a load balancer's idle timeout (60 s on AWS ALB) and
    # than the pauses of a training script between calls, so that race is rare.
    keep_alive_timeout: int = 75
    database_url: str = field(
        default_factory=lambda: f"sqlite:///{(DEFAULT_DATA_DIR / 'mlgate.db').as_posix()}"
    )
    artifacts_destination: str = field(
        default_factory=lambda: (DEFAULT_DATA_DIR / "artifacts").as_posix()
    )
    s3_endpoint_url: str = ""
    db_auto_upgrade: bool = True
    db_pool_size: int = 10
    # SQLite: seconds a request waits for another process's lock before answering 503.
    db_lock_timeout: float = 30.0
    log_level: str = "info"
    # --- observability ---
    # Log lines as JSON objects ("json") or plain text ("text").
    log_format: str = "json"
    # One line per request (method, route template, status, duration, principal, request id).
    access_log: bool = True
    # Serve Prometheus metrics at /metrics. With auth off anyone who reaches the server may
    # scrape; with auth on a scraper sends "Authorization: Bearer <metrics_token>" (and with no
    # token set /metrics answers 403).
    metrics: bool = True
    metrics_token: str = field(default="", repr=False)
    # Gates: how long a release approval request stays open.
    approval_ttl_hours: int = 72
    # Seconds between sweeps that close expired approval requests (approval.expired events);
    # 0 turns the sweep off in this process.
    approval_sweep_interval: float = 30.0
    # Gates, client side (`mlgate promote`): the server and the gate's signing secret.
    url: str = "http://127.0.0.1:5000"
    gate_secret: str = field(default="", repr=False)
    # Client side (`mlgate approvals approve|reject`): the caller's own credentials, an API
    # token or a user name and password. Unset, they fall back to MLflow's variables
    # (MLFLOW_TRACKING_TOKEN, MLFLOW_TRACKING_USERNAME, MLFLOW_TRACKING_PASSWORD).
    tracking_token: str = field(default="", repr=False)
    tracking_username: str = ""
    tracking_password: str = field(default="", repr=False)
    # Abandoned uploads (temp files of a killed server, incomplete multipart uploads, local or
    # S3) untouched for this many seconds are removed by a sweep every interval; 0 turns the
    # sweep off in this process.
    staging_max_age: float = 86400.0
    staging_sweep_interval: float = 3600.0
    # --- serving follows the pointer (gates/deployments) ---
    # A deployment whose replicas differ from its pointer for this many seconds emits one
    # deployment.drift event (and deployment.converged when they match again).
    drift_after_seconds: float = 300.0
    # Seconds between drift sweeps in this process (every replica may sweep); 0 turns it off.
    drift_sweep_interval: float = 10.0
    # Long-polls (GET /api/2.0/mlgate/watch) served at once by each process; more answer 429.
    watch_max_watchers: int = 100
    # --- identity and hardening ---
    auth: bool = False
    # The first administrator, created at start-up when no administrator exists. There is no
    # default password: with auth on and no administrator, the server refuses to start.
    admin_username: str = ""
    admin_password: str = field(default="", repr=False)
    # Binding a non-loopback address with auth off is refused unless this says so explicitly.
    allow_unauthenticated_public_bind: bool = False
    # Comma-separated Host header names (``*.example.com`` wildcards, ``*`` for any). Empty:
    # 127.0.0.1, localhost and [::1] on any port, plus ``host`` itself.
    allowed_hosts: str = ""
    # Comma-separated addresses of reverse proxies whose X-Forwarded-For/-Proto are believed
    # (uvicorn's forwarded_allow_ips); empty believes nobody.
    forwarded_allow_ips: str = ""
    # Comma-separated origins allowed by CORS; empty turns CORS off.
    cors_origins: str = ""
    # Cap on JSON request bodies in bytes (artifact uploads are streamed and exempt).
    max_json_body: int = 1024 * 1024
    # Login throttling: this many failed logins per user name and client within the window
    # (seconds) answer 429 until the window ends. Counters live in the database (replicas).
    login_max_failures: int = 10
    login_failure_window: int = 300
    # Outbound webhooks (gates/events): the delivery worker every replica runs.
    webhook_worker: bool = True
    webhook_poll_interval: float = 1.0
    webhook_timeout: float = 10.0
    # Delays before each retry (comma-separated, units ms/s/m/h/d), jittered by up to 10%;
    # one attempt more than delays. The default spans a day-long outage (Standard Webhooks).
    webhook_retry_schedule: str = "5s,5m,30m,2h,5h,10h,10h"
    # Sends in flight at once per replica, over all subscriptions (one per subscription).
    webhook_concurrency: int = 32
    # A subscription whose every attempt failed for this many hours is disabled (0: never).
    webhook_disable_after_hours: float = 120.0
    # Comma-separated CIDRs and host names a subscriber URL may reach although they are
    # loopback, private or link-local (e.g. "10.0.0.0/8,hooks.internal").
    webhook_allowlist: str = ""
    # Keys that seal subscription and gate secrets at rest (AES-GCM), comma-separated: the
    # first seals, all open (rotation). Each at least 32 characters; empty stores them unsealed.
    webhook_secret_key: str = field(default="", repr=False)
    # OIDC trust of gates (CI identity without shared secrets): how long an issuer's signing
    # keys (JWKS) are cached, and the least time between two refetches that a token with an
    # unknown key id may cause (key rotation without letting callers hammer the issuer).
    oidc_jwks_cache_seconds: float = 300.0
    oidc_jwks_refetch_interval: float = 30.0
    # For tests and local development only: accept http:// issuers on a loopback address
    # (and let the key fetch reach loopback). Production issuers must be https.
    oidc_allow_http_loopback: bool = False
    # Object-store folders model versions may be registered from (copied in at registration):
    # comma-separated s3://bucket/prefix/ read with the S3 client settings above. Empty: none.
    external_sources: str = ""
    # --- web UI ---
    # How long a browser stays signed in, and whether its cookies are HTTPS-only. Browsers
    # accept Secure cookies from http://localhost and 127.0.0.1; turn this off only for plain
    # HTTP on another host (behind a TLS proxy it stays on).
    ui_session_hours: int = 12
    ui_cookie_secure: bool = True
    # --- signed audit checkpoints ---
    # Where the server keeps files it makes itself (a generated signing key). Empty: the
    # SQLite database's directory, or mlgate-data.
    data_dir: str = ""
    # The server's Ed25519 private key (PEM), shared by every replica. Empty: signing-key.pem
    # in the data dir, created (mode 0600) on first start.
    signing_key_file: str = ""
    # Seconds between checks of the audit chain's head; a moved head gets a signed checkpoint
    # in the artifact store (and MLGATE_AUDIT_CHECKPOINT_DIR). 0 turns the loop off here.
    audit_checkpoint_interval: float = 60.0
    # A directory that also receives every checkpoint (latest.json, checkpoints.jsonl).
    audit_checkpoint_dir: str = ""
    # --- promotion attestations ---
    # Comma-separated PEM files of the Ed25519 keys that sign promotion attestations: the
    # first (a private key) signs, the others (private or public) are retired keys still
    # published. Empty: attestation-key.pem in the data dir, created (mode 0600) on first start.
    attestation_keys: str = ""

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: Any) -> Settings:
        env = os.environ if environ is None else environ
        for name, replacement in _RETIRED.items():
            if name in env:
                # Refuse rather than ignore: silently dropping a retry budget an operator set
                # would change delivery behaviour without anyone noticing.
                raise ValueError(f"{name} is no longer a setting; {replacement}")
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(f"MLGATE_{f.name.upper()}")
            if raw is None and f.name in _MLFLOW_FALLBACKS:
                raw = env.get(_MLFLOW_FALLBACKS[f.name])
            if raw is None:
                continue
            values[f.name] = _coerce(f.type, raw, f.name)
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        """Refuse a value outside its setting's range or form, naming the setting and what it
        expects (raised as ValueError; the CLI prints it and exits 2)."""
        for name, rule in _RULES.items():
            value = getattr(self, name)
            if not rule.holds(value):
                # A secret's value never reaches a message (logs, CI output).
                shown = "(hidden)" if name in _SECRET_SETTINGS else repr(value)
                raise ValueError(
                    f"MLGATE_{name.upper()}={shown} is not valid: expected {rule.expected}"
                )

    def with_overrides(self, **overrides: Any) -> Settings:
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def to_env(self) -> dict[str, str]:
        """The settings as environment variables, so worker processes rebuild the same object."""
        out: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f"MLGATE_{f.name.upper()}"] = (
                ("true" if value else "false") if isinstance(value, bool) else str(value)
            )
        return out

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def data_path(self) -> Path:
        """Where server-made files live: ``data_dir``, the SQLite database's directory, or
        mlgate-data."""
        if self.data_dir:
            return Path(self.data_dir)
        prefix = "sqlite:///"
        if self.database_url.startswith(prefix) and ":memory:" not in self.database_url:
            path = self.database_url[len(prefix) :].split("?", 1)[0]
            if path:
                return Path(path).parent
        return DEFAULT_DATA_DIR

    @property
    def signing_key_path(self) -> Path:
        return (
            Path(self.signing_key_file)
            if self.signing_key_file
            else self.data_path / "signing-key.pem"
        )

    @property
    def attestation_key_paths(self) -> tuple[Path, ...]:
        return tuple(Path(p) for p in _split(self.attestation_keys))

    @property
    def default_attestation_key_path(self) -> Path:
        return self.data_path / "attestation-key.pem"

    @property
    def allowed_host_names(self) -> tuple[str, ...]:
        """Host header names (ports stripped) accepted by the Host check."""
        configured = _split(self.allowed_hosts)
        if configured:
            return configured
        return ("127.0.0.1", "localhost", "[::1]", _bracketed(self.host))

    @property
    def cors_origin_list(self) -> tuple[str, ...]:
        return _split(self.cors_origins)

    @property
    def external_source_prefixes(self) -> tuple[S3Location, ...]:
        return parse_s3_prefixes(self.external_sources)


# Settings that existed once, with what replaces them (named when a deployment still sets one).
_RETIRED = {
    "MLGATE_WEBHOOK_MAX_ATTEMPTS": "the attempts follow MLGATE_WEBHOOK_RETRY_SCHEDULE",
    "MLGATE_WEBHOOK_BACKOFF_BASE": "set the delays with MLGATE_WEBHOOK_RETRY_SCHEDULE",
    "MLGATE_WEBHOOK_BACKOFF_MAX": "set the delays with MLGATE_WEBHOOK_RETRY_SCHEDULE",
}


# Client credentials shared with the MLflow client, so one environment serves both.
_MLFLOW_FALLBACKS = {
    "tracking_token": "MLFLOW_TRACKING_TOKEN",
    "tracking_username": "MLFLOW_TRACKING_USERNAME",
    "tracking_password": "MLFLOW_TRACKING_PASSWORD",
}


def _split(value: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in value.split(",") if item.strip())


def _bracketed(host: str) -> str:
    # An IPv6 address appears in a Host header in brackets.
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


_KIND = {
    "bool": "a boolean (true/false, 1/0, yes/no, on/off)",
    "int": "a whole number",
    "float": "a number",
}


def _coerce(type_name: Any, raw: str, name: str) -> Any:
    kind = getattr(type_name, "__name__", type_name)
    try:
        if kind == "bool":
            return _bool(raw)
        if kind == "int":
            return int(raw.strip())
        if kind == "float":
            number = float(raw)
            if not math.isfinite(number):
                raise ValueError(raw)
            return number
    except ValueError:
        expected = _RULES[name].expected if name in _RULES else _KIND[kind]
        raise ValueError(
            f"MLGATE_{name.upper()}={raw!r} is not valid: expected {expected}"
        ) from None
    return raw


@dataclass(frozen=True)
class _Rule:
    expected: str
    holds: Callable[[Any], bool]


def _at_least(low: float, unit: str) -> _Rule:
    return _Rule(f"a number >= {low:g}{unit}", lambda v: v >= low)


def _above(low: float, unit: str) -> _Rule:
    return _Rule(f"a number > {low:g}{unit}", lambda v: v > low)


def _between(low: int, high: int, unit: str = "") -> _Rule:
    return _Rule(f"a whole number from {low} to {high}{unit}", lambda v: low <= v <= high)


def _one_of(*choices: str) -> _Rule:
    return _Rule("one of " + ", ".join(choices), lambda v: v in choices)


def _url(*schemes: str, optional: bool = False) -> _Rule:
    forms = " or ".join(f"{s}..." for s in schemes)
    return _Rule(
        f"a URL starting {forms}" + (", or empty" if optional else ""),
        lambda v: (optional and not v) or (v.startswith(schemes) and v not in schemes),
    )


def _parses(parse: Callable[[str], Any], value: str) -> bool:
    try:
        parse(value)
    except ValueError:
        return False
    return True


_SECRET_SETTINGS = {
    "webhook_secret_key",
    "gate_secret",
    "tracking_token",
    "tracking_password",
    "admin_password",
}
# Per-setting ranges and forms, checked once at start: a zero approval TTL would expire every
# request at once, a zero pool or concurrency would hang, and a mistyped URL would fail only at
# first use.
_RULES: dict[str, _Rule] = {
    "port": _between(1, 65535),
    "workers": _between(1, 64),
    "worker_timeout": _above(0, " seconds"),
    "keep_alive_timeout": _between(1, 3600, " seconds"),
    "database_url": _url("sqlite:///", "sqlite+aiosqlite:///", "postgresql://", "postgresql+"),
    "s3_endpoint_url": _url("http://", "https://", optional=True),
    "url": _url("http://", "https://"),
    "db_pool_size": _between(1, 1000),
    "db_lock_timeout": _above(0, " seconds"),
    "log_level": _one_of("critical", "error", "warning", "info", "debug", "trace"),
    "log_format": _one_of("json", "text"),
    "approval_ttl_hours": _between(1, 24 * 365, " hours"),
    "approval_sweep_interval": _at_least(0, " seconds (0 turns the sweep off)"),
    "staging_max_age": _above(0, " seconds"),
    "staging_sweep_interval": _at_least(0, " seconds (0 turns the sweep off)"),
    # Finite: the sweep turns the drift time into milliseconds.
    "drift_after_seconds": _Rule(
        "a number of seconds from 0 to 2592000 (30 days)", lambda v: 0 <= v <= 30 * 86400
    ),
    "drift_sweep_interval": _Rule(
        "a number of seconds from 0 to 86400 (0 turns the sweep off)", lambda v: 0 <= v <= 86400
    ),
    "watch_max_watchers": _between(1, 100_000),
    "max_json_body": _between(1024, 1024**3, " bytes"),
    "login_max_failures": _between(1, 1_000_000),
    "login_failure_window": _between(1, 30 * 86400, " seconds"),
    "webhook_poll_interval": _above(0, " seconds"),
    "webhook_timeout": _above(0, " seconds"),
    "webhook_concurrency": _between(1, 1024),
    "webhook_disable_after_hours": _at_least(0, " hours (0: never)"),
    "ui_session_hours": _between(1, 24 * 366, " hours"),
    "oidc_jwks_cache_seconds": _above(0, " seconds"),
    "oidc_jwks_refetch_interval": _at_least(0, " seconds"),
    "external_sources": _Rule(
        "empty, or comma-separated s3://bucket/prefix/ URIs (a valid bucket name; no '..', "
        "'//', '%', '?', '#', ';' or '\\')",
        lambda v: _parses(parse_s3_prefixes, v),
    ),
    "audit_checkpoint_interval": _at_least(0, " seconds (0 turns the loop off)"),
    # Only the sealing (first) key must be strong: older keys after it only open secrets sealed
    # before a rotation, and refusing a short one there would lose those secrets.
    "webhook_secret_key": _Rule(
        "empty, or comma-separated keys with the sealing key first, at least 32 characters "
        "(e.g. the output of `openssl rand -base64 32`); older keys after it only open",
        lambda v: (
            len(v.split(",")[0].strip()) >= 32 and all(k.strip() for k in v.split(","))
            if v.strip()
            else True
        ),
    ),
}


def export_to_environment(settings: Settings) -> None:
    """Publish settings for child processes (uvicorn workers re-read them at import)."""
    os.environ.update(settings.to_env())


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings.from_env()
