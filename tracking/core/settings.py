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
    # Gates: how long a release approval request stays open.
    approval_ttl_hours: int = 72
    # Seconds between sweeps that close expired approval requests (approval.expired events);
    # 0 turns the sweep off in this process.
    approval_sweep_interval: float = 30.0
    # Gates, client side (`mlgate promote`): the server and the gate's signing secret.
    url: str = "http://127.0.0.1:5000"
    gate_secret: str = field(default="", repr=False)
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
    webhook_max_attempts: int = 8
    webhook_timeout: float = 10.0
    webhook_backoff_base: float = 2.0
    webhook_backoff_max: float = 600.0
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

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: Any) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(f"MLGATE_{f.name.upper()}")
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
    def allowed_host_names(self) -> tuple[str, ...]:
        """Host header names (ports stripped) accepted by the Host check."""
        configured = _split(self.allowed_hosts)
        if configured:
            return configured
        return ("127.0.0.1", "localhost", "[::1]", _bracketed(self.host))

    @property
    def cors_origin_list(self) -> tuple[str, ...]:
        return _split(self.cors_origins)


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
