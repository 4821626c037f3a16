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
    log_level: str = "info"

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


def _coerce(type_name: Any, raw: str, name: str) -> Any:
    try:
        if type_name in (bool, "bool"):
            return _bool(raw)
        if type_name in (int, "int"):
            return int(raw)
    except ValueError as exc:
        raise ValueError(f"MLGATE_{name.upper()}: {exc}") from exc
    return raw


def export_to_environment(settings: Settings) -> None:
    """Publish settings for child processes (uvicorn workers re-read them at import)."""
    os.environ.update(settings.to_env())


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings.from_env()
