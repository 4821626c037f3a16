"""What a command family is (its commands, its parser, its runner) and the flags they share."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

from tracking.core.settings import Settings

Subcommands = argparse._SubParsersAction  # the object `add_subparsers` returns


@dataclass(frozen=True)
class Family:
    """One group of ``mlgate`` subcommands, registered once in ``gates.server.cli.FAMILIES``.

    ``run`` answers the exit status. ``guarded`` families go through the one error handler
    (``errors.run_guarded``); ``labelled`` errors are reported there as ``mlgate: <label><error>``
    before the shared rules apply (``{command}`` in the label is the subcommand's name).
    """

    commands: tuple[str, ...]
    add_commands: Callable[[Subcommands], None]
    run: Callable[[argparse.Namespace, Settings], int]
    guarded: bool = True
    labelled: tuple[type[Exception], ...] = ()
    label: str = ""


def add_db_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--database-url",
        help="SQLAlchemy URL: sqlite:///path.db or postgresql://user@host/db "
        "(env MLGATE_DATABASE_URL)",
    )


def settings_from_args(args: argparse.Namespace) -> Settings:
    """The settings, with every flag the subcommand has overriding its environment variable."""
    overrides = {
        "host": getattr(args, "host", None),
        "port": getattr(args, "port", None),
        "workers": getattr(args, "workers", None),
        "database_url": getattr(args, "database_url", None),
        "artifacts_destination": getattr(args, "artifacts_destination", None),
        "s3_endpoint_url": getattr(args, "s3_endpoint_url", None),
        "auth": getattr(args, "auth", None),
        "allowed_hosts": getattr(args, "allowed_hosts", None),
        "cors_origins": getattr(args, "cors_origins", None),
        "allow_unauthenticated_public_bind": getattr(
            args, "allow_unauthenticated_public_bind", None
        ),
    }
    if getattr(args, "no_db_upgrade", False):
        overrides["db_auto_upgrade"] = False
    return Settings.from_env(**overrides)
