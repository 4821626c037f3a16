"""``mlgate history`` and ``mlgate pointer-at``: a model's stage and alias moves over time."""

from __future__ import annotations

import argparse
import asyncio
from datetime import UTC, datetime
from typing import Any

import msgspec

from gates.server.cli.family import Family, Subcommands, add_db_flag
from tracking.core.settings import Settings

COMMANDS = ("history", "pointer-at")


def add_commands(sub: Subcommands) -> None:
    history = sub.add_parser("history", help="show a registered model's stage and alias moves")
    history.add_argument("name", help="registered model name")
    history.add_argument(
        "--pointer", help="only this pointer: a stage (Production) or an alias (@champion)"
    )
    history.add_argument("--limit", type=int, default=50, help="newest N events (default 50)")
    history.add_argument("--json", action="store_true", help="print JSON lines")
    add_db_flag(history)

    at = sub.add_parser("pointer-at", help="which version a stage or alias pointed at, at a time")
    at.add_argument("name", help="registered model name")
    at.add_argument("pointer", help="a stage (Production) or an alias (@champion)")
    at.add_argument(
        "--at",
        dest="at",
        help="ISO 8601 time (naive means UTC) or epoch milliseconds; default now",
    )
    at.add_argument("--json", action="store_true", help="print JSON")
    add_db_flag(at)


def parse_instant(text: str) -> int:
    """Epoch milliseconds from ``1700000000000`` or an ISO 8601 time (naive = UTC)."""
    if text.strip().isdigit():
        return int(text)
    moment = datetime.fromisoformat(text.strip())
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds")


def _history_line(e: Any) -> str:
    move = f"{e.from_version or '-'} -> {e.to_version or '-'}"
    line = f"{_iso(e.timestamp)}  {e.pointer:<14} {move:<10} {e.action:<15} by {e.actor}"
    return f"{line}  ({e.comment})" if e.comment else line


async def _pointer_at(s: Any, args: argparse.Namespace) -> int:
    from registry import service

    at = parse_instant(args.at) if args.at else None
    answer = await service.pointer_at(s, args.name, args.pointer, at)
    if args.json:
        print(msgspec.json.encode(answer).decode())
    elif answer.version is None:
        print(f"{answer.name} {answer.pointer} at {_iso(answer.timestamp)}: (none)")
    else:
        print(
            f"{answer.name} {answer.pointer} at {_iso(answer.timestamp)}: version {answer.version}"
        )
        if answer.event is not None:
            print(f"  since {_history_line(answer.event)}")
    return 0


async def _history(s: Any, args: argparse.Namespace) -> int:
    from registry import service

    token: str | None = None
    shown = 0
    while shown < args.limit:
        page = min(args.limit - shown, 1000)
        events, token = await service.pointer_history(s, args.name, args.pointer, page, token)
        for e in events:
            print(msgspec.json.encode(e).decode() if args.json else _history_line(e))
        shown += len(events)
        if not token:
            break
    return 0


async def _run(args: argparse.Namespace, settings: Settings) -> int:
    from tracking.core.db import Database

    db = Database(settings.database_url, pool_size=1)
    try:
        async with db.read() as s:
            if args.command == "pointer-at":
                return await _pointer_at(s, args)
            return await _history(s, args)
    finally:
        await db.dispose()


def run(args: argparse.Namespace, settings: Settings) -> int:
    return asyncio.run(_run(args, settings))


FAMILY = Family(commands=COMMANDS, add_commands=add_commands, run=run)
