"""``mlgate audit verify`` and ``mlgate audit export``: check and dump the audit trail."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from tracking.core.settings import Settings

COMMANDS = ("audit",)


def add_commands(sub: Any, add_db_flag: Any) -> None:
    audit = sub.add_parser("audit", help="the hash-chained audit trail")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    verify = audit_sub.add_parser(
        "verify",
        help="walk the hash chain; exit 1 naming the first entry that does not verify",
    )
    add_db_flag(verify)
    export = audit_sub.add_parser("export", help="write every entry as JSON lines, oldest first")
    export.add_argument("--output", "-o", help="file to write (default: standard output)")
    add_db_flag(export)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    try:
        return asyncio.run(_run(args, settings))
    except OSError as exc:
        print(f"mlgate: {exc}", file=sys.stderr)
        return 1
    except SQLAlchemyError as exc:
        print(
            f"mlgate: database error ({type(getattr(exc, 'orig', None) or exc).__name__}); "
            "is the schema current? Run `mlgate db upgrade`.",
            file=sys.stderr,
        )
        return 1


@contextlib.contextmanager
def _output(path: str | None) -> Iterator[TextIO]:
    if not path or path == "-":
        yield sys.stdout
        return
    with Path(path).open("w", encoding="utf-8") as out:
        yield out


async def _run(args: argparse.Namespace, settings: Settings) -> int:
    from gates.audit import service
    from tracking.core.db import Database

    db = Database(settings.database_url, pool_size=1)
    try:
        if args.audit_command == "verify":
            result = await service.verify(db)
            if result.ok:
                print(
                    f"audit chain OK: {result.checked} entries; head seq {result.head_seq}, "
                    f"hash {result.head_hash}"
                )
                return 0
            print(
                f"audit chain BROKEN at seq {result.bad_seq}: {result.reason} "
                f"({result.checked} entries before it verify)"
            )
            return 1
        count = 0
        with _output(args.output) as out:
            async for row in service.iterate(db):
                out.write(service.export_line(row) + "\n")
                count += 1
        if args.output and args.output != "-":
            print(f"wrote {count} audit entries to {args.output}", file=sys.stderr)
        return 0
    finally:
        await db.dispose()
