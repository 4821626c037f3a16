"""Every setting is checked at start: a bad value stops mlgate with exit 2 and one message that
names the setting and the form it expects."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import fields

import pytest

from tests.conftest import REPO_ROOT
from tracking.core.settings import Settings

# Bad values for every numeric, boolean, enum and URL setting: wrong type, out of range, or
# not finite. Each must be refused.
BAD_VALUES: dict[str, list[str]] = {
    "port": ["0", "65536", "http", "80.5"],
    "workers": ["0", "-1", "two", "65"],
    "worker_timeout": ["0", "-1", "nan", "inf", "soon"],
    "keep_alive_timeout": ["0", "-5", "3601", "1.5", "long"],
    "database_url": ["mysql://x/y", "mlgate.db", ""],
    "s3_endpoint_url": ["minio:9000", "ftp://x"],
    "url": ["mlgate:5000", "", "https://"],
    "db_auto_upgrade": ["maybe"],
    "db_pool_size": ["0", "-3", "lots"],
    "db_lock_timeout": ["0", "-1", "nan", "inf", "soon"],
    "log_level": ["loud", "INFO", ""],
    "log_format": ["xml", "JSON"],
    "access_log": ["loud"],
    "metrics": ["maybe"],
    "approval_ttl_hours": ["0.01", "0", "-1", "8761", "forever"],
    "approval_sweep_interval": ["-1", "nan"],
    "staging_max_age": ["0", "-5", "inf"],
    "staging_sweep_interval": ["-1", "x"],
    "auth": ["perhaps"],
    "allow_unauthenticated_public_bind": ["2"],
    "max_json_body": ["0", "1023", "1e6", "big"],
    "login_max_failures": ["0", "-1"],
    "login_failure_window": ["0", "1.5"],
    "webhook_worker": ["sometimes"],
    "webhook_poll_interval": ["0", "-0.1"],
    "webhook_timeout": ["0", "nan"],
    "webhook_concurrency": ["0", "2000"],
    "drift_after_seconds": ["-1", "nan", "inf", "2592001"],
    "drift_sweep_interval": ["-0.5", "inf", "x"],
    "watch_max_watchers": ["0", "1.5", "100001"],
    "webhook_disable_after_hours": ["-1", "-inf"],
    "ui_session_hours": ["0", "0.5"],
    "ui_cookie_secure": ["secure"],
    "audit_checkpoint_interval": ["-1", "nan"],
    "oidc_jwks_cache_seconds": ["0", "-5", "inf"],
    "oidc_jwks_refetch_interval": ["-1", "nan"],
    "oidc_allow_http_loopback": ["maybe"],
}

GOOD_EDGES: dict[str, str] = {
    "oidc_jwks_refetch_interval": "0",
    "port": "65535",
    "approval_ttl_hours": "1",
    "approval_sweep_interval": "0",
    "drift_after_seconds": "0",
    "drift_sweep_interval": "0",
    "staging_sweep_interval": "0",
    "audit_checkpoint_interval": "0",
    "webhook_disable_after_hours": "0",
    "s3_endpoint_url": "",
    "database_url": "postgresql+asyncpg://u@h/db",
    "log_level": "warning",
    "log_format": "text",
}


def test_every_typed_setting_has_bad_values_under_test() -> None:
    typed = {f.name for f in fields(Settings) if f.type in ("int", "float", "bool")}
    assert typed - set(BAD_VALUES) == set()


@pytest.mark.parametrize(
    ("name", "raw"), [(n, v) for n, values in BAD_VALUES.items() for v in values]
)
def test_bad_value_is_refused_naming_the_setting_and_its_form(name: str, raw: str) -> None:
    env_name = f"MLGATE_{name.upper()}"
    with pytest.raises(ValueError) as refused:
        Settings.from_env({env_name: raw})
    message = str(refused.value)
    assert message.startswith(f"{env_name}=") and "expected " in message, message
    assert "Traceback" not in message and "invalid literal" not in message


@pytest.mark.parametrize(("name", "raw"), list(GOOD_EDGES.items()))
def test_edge_values_inside_the_range_are_accepted(name: str, raw: str) -> None:
    settings = Settings.from_env({f"MLGATE_{name.upper()}": raw})
    assert str(getattr(settings, name)).replace(".0", "") == raw


def test_server_with_fractional_approval_ttl_stops_with_exit_2_and_one_clear_line() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLGATE_")}
    for raw in ("0.01", "0"):
        result = subprocess.run(
            [sys.executable, "-m", "gates.server", "server"],
            cwd=REPO_ROOT,
            env={**env, "MLGATE_APPROVAL_TTL_HOURS": raw},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 2, result.stderr
        line = result.stderr.strip()
        assert "\n" not in line, line
        assert line.startswith("mlgate: MLGATE_APPROVAL_TTL_HOURS=") and line.endswith(
            "is not valid: expected a whole number from 1 to 8760 hours"
        ), line


def test_default_workers_follow_usable_cores_capped_at_four() -> None:
    from tracking.core.settings import default_workers

    assert [default_workers(c) for c in (1, 2, 3, 4, 8, 64)] == [1, 2, 3, 4, 4, 4]
    assert Settings.from_env({}).workers == default_workers()
    assert Settings.from_env({"MLGATE_WORKERS": "7"}).workers == 7


def test_webhook_secret_key_must_seal_with_a_long_key_and_is_never_echoed() -> None:
    for bad in ("short", f"short,{'k' * 32}", f"{'k' * 32},,{'o' * 32}"):
        with pytest.raises(ValueError) as refused:
            Settings.from_env({"MLGATE_WEBHOOK_SECRET_KEY": bad})
        assert "(hidden)" in str(refused.value) and "short" not in str(refused.value)
        assert "at least 32 characters" in str(refused.value)
    keys = f"{'n' * 32}, {'o' * 40}"
    assert Settings.from_env({"MLGATE_WEBHOOK_SECRET_KEY": keys}).webhook_secret_key == keys
    # An older, shorter key after the sealing one still opens what it sealed before rotation.
    rotated = f"{'n' * 32},old-short-key"
    assert Settings.from_env({"MLGATE_WEBHOOK_SECRET_KEY": rotated}).webhook_secret_key == rotated
    assert Settings.from_env({"MLGATE_WEBHOOK_SECRET_KEY": ""}).webhook_secret_key == ""
