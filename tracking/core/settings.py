"""The one typed settings object, read from ``MLGATE_*`` environment variables and CLI flags."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

DEFAULT_DATA_DIR = Path("mlgate-data")


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"not a boolean: {value!r}")


@dataclass(frozen=True)
class Settings:
    """Every setting mlgate reads. Each field maps to ``MLGATE_<FIELD NAME>``."""

    host: str = "127.0.0.1"
    port: int = 5000
    workers: int = 1
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
    # Key that seals subscription secrets at rest (AES-GCM); empty stores them unsealed.
    webhook_secret_key: str = ""
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
        return cls(**values)

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
    def allowed_host_names(self) -> tuple[str, ...]:
        """Host header names (ports stripped) accepted by the Host check."""
        configured = _split(self.allowed_hosts)
        if configured:
            return configured
        return ("127.0.0.1", "localhost", "[::1]", _bracketed(self.host))

    @property
    def cors_origin_list(self) -> tuple[str, ...]:
        return _split(self.cors_origins)


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


def _coerce(type_name: Any, raw: str, name: str) -> Any:
    try:
        if type_name in (bool, "bool"):
            return _bool(raw)
        if type_name in (int, "int"):
            return int(raw)
        if type_name in (float, "float"):
            return float(raw)
    except ValueError as exc:
        raise ValueError(f"MLGATE_{name.upper()}: {exc}") from exc
    return raw


def export_to_environment(settings: Settings) -> None:
    """Publish settings for child processes (uvicorn workers re-read them at import)."""
    os.environ.update(settings.to_env())


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings.from_env()
