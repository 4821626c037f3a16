"""``mlgate db upgrade`` and ``mlgate db current``: the schema, through alembic."""

from __future__ import annotations

import argparse

from gates.server.cli.family import Family, Subcommands, add_db_flag
from tracking.core.settings import Settings


def add_commands(sub: Subcommands) -> None:
    db = sub.add_parser("db", help="database schema commands")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    up = db_sub.add_parser("upgrade", help="apply migrations up to the newest revision")
    add_db_flag(up)
    up.add_argument("--revision", default="head")
    cur = db_sub.add_parser("current", help="show the applied revision")
    add_db_flag(cur)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from gates.server import migrate

    if args.db_command == "upgrade":
        migrate.upgrade(settings.database_url, args.revision)
    else:
        migrate.current(settings.database_url)
    return 0


# Not guarded: alembic reports its own failures (the shared hint would say "run db upgrade").
FAMILY = Family(commands=("db",), add_commands=add_commands, run=run, guarded=False)
