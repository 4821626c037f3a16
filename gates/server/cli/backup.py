"""``mlgate backup`` and ``mlgate restore``: the command line of ``gates.server.backup``."""

from __future__ import annotations

import argparse
import sqlite3
from pathlib import Path

from gates.server.backup import CHECKPOINT_FILE, BackupError, backup, restore
from gates.server.cli.family import Family, Subcommands, add_db_flag
from tracking.core.settings import Settings

COMMANDS = ("backup", "restore")


def add_commands(sub: Subcommands) -> None:
    for name, text in (
        ("backup", "copy the embedded SQLite database, artifact folder and an audit checkpoint"),
        ("restore", "put a backup into a new database file and artifact folder"),
    ):
        p = sub.add_parser(name, help=text, description=text)
        if name == "backup":
            p.add_argument("--output", "-o", required=True, help="a new (or empty) folder")
        else:
            p.add_argument("backup", help="the folder `mlgate backup --output` wrote")
        add_db_flag(p)
        p.add_argument(
            "--artifacts-destination",
            help="the local artifact folder (env MLGATE_ARTIFACTS_DESTINATION)",
        )


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "backup":
        report = backup(settings, Path(args.output))
        print(
            f"backup written to {report.output}: database snapshot at audit seq "
            f"{report.audit_seq}, {report.files} artifact files ({report.bytes} bytes); "
            f"checkpoint: {report.checkpoint}"
        )
        return 0
    database, folder = restore(Path(args.backup), settings)
    print(
        f"restored into {database} and {folder}. Start the server on them "
        f"(MLGATE_DATABASE_URL=sqlite:///{database} MLGATE_ARTIFACTS_DESTINATION={folder}), "
        f"then check: mlgate audit verify --checkpoint {Path(args.backup) / CHECKPOINT_FILE}"
    )
    return 0


FAMILY = Family(
    commands=COMMANDS,
    add_commands=add_commands,
    run=run,
    labelled=(BackupError, OSError, sqlite3.Error),
    label="{command}: ",
)
