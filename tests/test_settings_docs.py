"""Settings, their documentation and the deployment example agree: no setting is undocumented,
and the example sets only settings that exist, with values that parse."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

from tracking.core.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def _env_name(field_name: str) -> str:
    return f"MLGATE_{field_name.upper()}"


def test_every_setting_is_in_the_readme_table() -> None:
    readme = (ROOT / "README.md").read_text()
    documented = set(re.findall(r"^\| `(MLGATE_[A-Z0-9_]+)` \|", readme, re.M))
    expected = {_env_name(f.name) for f in fields(Settings)}
    assert expected - documented == set(), "settings missing from README's table"
    assert documented - expected == set(), "README documents settings that do not exist"


def test_the_deployment_example_sets_real_settings_that_parse() -> None:
    pairs = {}
    for line in (ROOT / "deploy" / "mlgate.env.example").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            pairs[key] = value
    known = {_env_name(f.name) for f in fields(Settings)}
    assert set(pairs) <= known, set(pairs) - known
    settings = Settings.from_env(pairs)
    assert settings.auth is True
    assert settings.ui_cookie_secure is True
    assert settings.forwarded_allow_ips


def test_a_retired_setting_is_refused_naming_its_replacement() -> None:
    import pytest

    from tracking.core.settings import Settings

    with pytest.raises(ValueError, match="MLGATE_WEBHOOK_RETRY_SCHEDULE"):
        Settings.from_env({"MLGATE_WEBHOOK_MAX_ATTEMPTS": "8"})
    assert Settings.from_env({}).webhook_retry_schedule
