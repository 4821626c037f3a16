"""Shared by the deploy tests: which names are mlgate settings, and do the values parse."""

from __future__ import annotations

from dataclasses import fields

from tracking.core.settings import Settings


def known_setting_names() -> set[str]:
    return {f"MLGATE_{f.name.upper()}" for f in fields(Settings)}


def check_mlgate_settings(env: dict[str, str]) -> Settings:
    """Every ``MLGATE_*`` name in ``env`` is a real setting, and together they parse."""
    mlgate = {k: v for k, v in env.items() if k.startswith("MLGATE_")}
    unknown = set(mlgate) - known_setting_names()
    assert not unknown, f"not mlgate settings: {sorted(unknown)}"
    return Settings.from_env(mlgate)
