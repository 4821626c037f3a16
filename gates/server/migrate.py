"""Schema upgrades through alembic, callable from the CLI and at server start-up."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from tracking.core.db import ensure_sqlite_directory

MIGRATIONS_DIR = Path(__file__).with_name("migrations")


def alembic_config(database_url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["database_url"] = database_url
    return cfg


def upgrade(database_url: str, revision: str = "head") -> None:
    """Bring the database to ``revision``. Safe to run from several replicas at once."""
    ensure_sqlite_directory(database_url)
    command.upgrade(alembic_config(database_url), revision)


def current(database_url: str) -> None:
    command.current(alembic_config(database_url), verbose=False)
