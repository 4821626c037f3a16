"""``mlgate subscriptions``: webhook subscriptions' health, re-enabling and redelivering the dead.

Like ``mlgate users``, it works through the service on the configured database and needs no
running server: whoever can reach the database is already the operator, recorded as ``cli``
in the audit trail. A server's workers pick the queued deliveries up at their next poll.
"""

from __future__ import annotations

import argparse
import asyncio
from datetime import UTC, datetime
from typing import Any

import msgspec

from gates.events import service
from gates.server.cli.family import Family, Subcommands, add_db_flag
from tracking.core.settings import Settings

COMMANDS = ("subscriptions",)
CLI_ACTOR = "cli"


def add_commands(sub: Subcommands) -> None:
    """Register ``mlgate subscriptions`` on the main parser."""
    subs = sub.add_parser("subscriptions", help="webhook subscriptions and their deliveries")
    subs_sub = subs.add_subparsers(dest="subscriptions_command", required=True)
    listing = subs_sub.add_parser("list", help="list subscriptions with their health")
    listing.add_argument("--json", action="store_true", help="print JSON lines")
    add_db_flag(listing)
    for verb, text in (
        ("redeliver-dead", "queue every dead delivery of a subscription again, in order"),
        ("enable", "enable a subscription; deliveries queued while disabled go out in order"),
        ("disable", "disable a subscription (no deliveries are queued while disabled)"),
    ):
        p = subs_sub.add_parser(verb, help=text)
        p.add_argument("subscription_id")
        add_db_flag(p)


def run(args: argparse.Namespace, settings: Settings) -> int:
    return asyncio.run(_run(args, settings))


def _when(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _line(sub: Any) -> str:
    line = f"{sub.id}  {sub.status:<8} {sub.name:<24} {sub.url}"
    if sub.failing_since is not None:
        line += f"  failing since {_when(sub.failing_since)}"
    if sub.status == "disabled" and sub.disabled_reason:
        line += f"  ({sub.disabled_reason})"
    return line


async def _run(args: argparse.Namespace, settings: Settings) -> int:
    from tracking.core.db import Database

    db = Database(settings.database_url, pool_size=1)
    try:
        command = args.subscriptions_command
        if command == "list":
            async with db.read() as s:
                token: str | None = None
                while True:
                    subs, token = await service.list_subscriptions(s, 1000, token)
                    for sub in subs:
                        print(msgspec.json.encode(sub).decode() if args.json else _line(sub))
                    if not token:
                        return 0
        async with db.write() as s:
            if command == "redeliver-dead":
                sub, count = await service.redeliver_dead(s, args.subscription_id, actor=CLI_ACTOR)
            else:
                sub = await service.set_subscription_enabled(
                    s, args.subscription_id, command == "enable", actor=CLI_ACTOR
                )
        if command == "redeliver-dead":
            print(f"{count} dead deliveries of {sub.name} queued again")
            if sub.status != "active":
                print(f"note: {sub.name} is disabled; they go out once it is enabled")
        else:
            print(_line(sub))
        return 0
    finally:
        await db.dispose()


FAMILY = Family(commands=COMMANDS, add_commands=add_commands, run=run)
