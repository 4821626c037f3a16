"""The CLI's one error handler: a known failure becomes ``mlgate: <why>`` and exit status 1."""

from __future__ import annotations

import argparse
import sys

from sqlalchemy.exc import SQLAlchemyError

from gates.server.cli.family import Family
from tracking.core.errors import MlflowError
from tracking.core.settings import Settings

EXIT_FAILED = 1


def describe(exc: Exception, family: Family, command: str) -> str | None:
    """The line to print for ``exc``, or None when it is not a failure the CLI knows."""
    if family.labelled and isinstance(exc, family.labelled):
        return f"mlgate: {family.label.format(command=command)}{exc}"
    if isinstance(exc, (MlflowError, ValueError, OSError)):
        return f"mlgate: {getattr(exc, 'message', exc)}"
    if isinstance(exc, SQLAlchemyError):
        return (
            f"mlgate: database error ({type(getattr(exc, 'orig', None) or exc).__name__}); "
            "is the schema current? Run `mlgate db upgrade`."
        )
    return None


def run_guarded(family: Family, args: argparse.Namespace, settings: Settings) -> int:
    """Run one subcommand; a known failure is one line on stderr, anything else a traceback."""
    try:
        return int(family.run(args, settings))
    except Exception as exc:
        message = describe(exc, family, args.command)
        if message is None:
            raise
        print(message, file=sys.stderr)
        return EXIT_FAILED
