"""The ``mlgate`` command line: one module per command family, registered in ``FAMILIES``.

Every family module (``server``, ``db``, ``history``, ``gates`` ...) holds its subcommands'
arguments and their runner and ends with a ``FAMILY``. ``main`` parses, builds the settings
once, and runs the family through the one error handler (``errors.run_guarded``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from gates.server.cli import (
    approvals,
    attest,
    audit,
    backup,
    db,
    follow,
    gates,
    history,
    identity,
    oidc,
    promote,
    server,
    subscriptions,
    verify,
)
from gates.server.cli.errors import run_guarded
from gates.server.cli.family import Family, settings_from_args
from gates.server.cli.history import parse_instant

__all__ = ["FAMILIES", "build_parser", "main", "parse_instant"]

# Every command family, in the order `mlgate --help` lists them. A new family: a module with
# `add_commands(sub)`, `run(args, settings)` and a `FAMILY`, added here and nowhere else.
FAMILIES: tuple[Family, ...] = (
    server.FAMILY,  # server
    db.FAMILY,  # db upgrade|current
    history.FAMILY,  # history, pointer-at
    gates.FAMILY,  # gates apply|list|secrets
    oidc.FAMILY,  # oidc-trust add|list|remove
    approvals.FAMILY,  # approvals list|approve|reject
    promote.FAMILY,  # promote
    identity.FAMILY,  # users, tokens, grants
    audit.FAMILY,  # audit verify|export
    subscriptions.FAMILY,  # subscriptions list|enable|disable|redeliver-dead
    verify.FAMILY,  # verify
    follow.FAMILY,  # follow models:/name@alias --exec ...
    attest.FAMILY,  # attest verify
    backup.FAMILY,  # backup, restore
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlgate", description="mlgate model registry and gates")
    sub = parser.add_subparsers(dest="command", required=True)
    for family in FAMILIES:
        family.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from_args(args)
    except ValueError as exc:
        print(f"mlgate: {exc}", file=sys.stderr)
        return 2
    for family in FAMILIES:
        if args.command in family.commands:
            if not family.guarded:
                return family.run(args, settings)
            return run_guarded(family, args, settings)
    return 2


if __name__ == "__main__":
    sys.exit(main())
