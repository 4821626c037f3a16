"""``mlgate users``, ``mlgate tokens`` and ``mlgate grants``: identity on the configured database.

They work through the identity service, like the API, but need no running server and no
credentials: whoever can reach the database is already the operator. Passwords are read from
a prompt or ``--password-stdin``, never from the command line (it shows in ``ps``).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from gates.identity import service
from gates.server.cli.family import Family, Subcommands, add_db_flag
from tracking.core.settings import Settings

COMMANDS = ("users", "tokens", "grants")
CLI_ACTOR = "cli"


def add_commands(sub: Subcommands) -> None:
    _add_users(sub)
    _add_tokens(sub)
    _add_grants(sub)


def _add_users(sub: Subcommands) -> None:
    users = sub.add_parser("users", help="users who may sign in when MLGATE_AUTH=true")
    users_sub = users.add_subparsers(dest="users_command", required=True)
    create = users_sub.add_parser("create", help="create a user (prompts for the password)")
    create.add_argument("username")
    create.add_argument("--admin", action="store_true", help="an administrator")
    source = create.add_mutually_exclusive_group()
    source.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    source.add_argument(
        "--no-password", action="store_true", help="a token-only account (e.g. for CI)"
    )
    add_db_flag(create)
    listing = users_sub.add_parser("list", help="list users")
    listing.add_argument("--json", action="store_true", help="print JSON lines")
    add_db_flag(listing)
    for verb, text in (
        ("disable", "disable a user (tokens and passwords stop working at once)"),
        ("enable", "enable a disabled user"),
        ("delete", "delete a user with its tokens and grants"),
    ):
        p = users_sub.add_parser(verb, help=text)
        p.add_argument("username")
        add_db_flag(p)
    password = users_sub.add_parser("set-password", help="set a user's password (prompts)")
    password.add_argument("username")
    password.add_argument("--password-stdin", action="store_true")
    add_db_flag(password)


def _add_tokens(sub: Subcommands) -> None:
    tokens = sub.add_parser("tokens", help="API tokens (MLFLOW_TRACKING_TOKEN)")
    tokens_sub = tokens.add_subparsers(dest="tokens_command", required=True)
    t_create = tokens_sub.add_parser(
        "create", help="create a token; its secret is printed once, on standard output"
    )
    t_create.add_argument("username")
    t_create.add_argument("name", help="what the token is for, e.g. ci-promote")
    expiry = t_create.add_mutually_exclusive_group()
    expiry.add_argument("--expires-in-days", type=float, help="expire after this many days")
    expiry.add_argument("--expires-at", help="expire at this ISO 8601 time (naive = UTC)")
    add_db_flag(t_create)
    t_list = tokens_sub.add_parser("list", help="list tokens (never their secrets)")
    t_list.add_argument("--user", help="only this user's tokens")
    t_list.add_argument("--json", action="store_true", help="print JSON lines")
    add_db_flag(t_list)
    t_revoke = tokens_sub.add_parser("revoke", help="revoke a token by id")
    t_revoke.add_argument("token_id")
    add_db_flag(t_revoke)


def _add_grants(sub: Subcommands) -> None:
    grants = sub.add_parser("grants", help="who may do what on experiments and models")
    grants_sub = grants.add_subparsers(dest="grants_command", required=True)
    add = grants_sub.add_parser(
        "add",
        help="grant a role on experiments or registered models matching a pattern",
        description="Roles: reader < editor < approver < admin. Patterns: an exact name, a "
        "glob (fraud-*), * for all, or an experiment id. --target limits what an approver may "
        "promote to, e.g. --target Staging --target @candidate.",
    )
    add.add_argument("username")
    add.add_argument("resource_type", choices=("experiment", "registered_model"))
    add.add_argument("pattern")
    add.add_argument("role", choices=("reader", "editor", "approver", "admin"))
    add.add_argument(
        "--target",
        action="append",
        dest="targets",
        help="a stage or @alias this grant may promote to (repeatable; default: all)",
    )
    add_db_flag(add)
    g_list = grants_sub.add_parser("list", help="list grants")
    g_list.add_argument("--user", help="only this user's grants")
    g_list.add_argument("--json", action="store_true", help="print JSON lines")
    add_db_flag(g_list)
    remove = grants_sub.add_parser("remove", help="remove a grant by id")
    remove.add_argument("grant_id")
    add_db_flag(remove)


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if not sys.stdin.isatty():
        raise ValueError("no terminal to prompt on: pass --password-stdin")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Repeat password: ") != first:
        raise ValueError("the passwords differ")
    return first


def _expiry(args: argparse.Namespace) -> int | None:
    if args.expires_in_days is not None:
        if args.expires_in_days <= 0:
            raise ValueError("--expires-in-days must be positive")
        moment = datetime.now(tz=UTC) + timedelta(days=args.expires_in_days)
    elif args.expires_at:
        moment = datetime.fromisoformat(args.expires_at)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
    else:
        return None
    return int(moment.timestamp() * 1000)


def _iso(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="seconds")


def _emit(items: list[Any], as_json: bool, line: Any) -> None:
    for item in items:
        print(msgspec.json.encode(item).decode() if as_json else line(item))


async def _all_pages(fetch: Any) -> list[Any]:
    items: list[Any] = []
    token = None
    while True:
        page, token = await fetch(token)
        items.extend(page)
        if not token:
            return items


async def _users(args: argparse.Namespace, db: Any) -> int:
    command = args.users_command
    if command == "create":
        password = None if args.no_password else _read_password(args.password_stdin)
        async with db.write() as s:
            user = await service.create_user(
                s, args.username, password, is_admin=args.admin, actor=CLI_ACTOR
            )
        print(f"created user {user.username}{' (admin)' if user.is_admin else ''}")
    elif command == "list":
        async with db.read() as s:
            users = await _all_pages(lambda t: service.list_users(s, service.MAX_PAGE, t))
        _emit(
            users,
            args.json,
            lambda u: (
                f"{u.username:<32} {'admin' if u.is_admin else 'user':<6} "
                f"{'disabled' if u.disabled else 'active':<9} "
                f"{'password' if u.has_password else 'tokens only'}"
            ),
        )
    elif command in ("disable", "enable"):
        async with db.write() as s:
            await service.update_user(
                s, args.username, disabled=command == "disable", actor=CLI_ACTOR
            )
        print(f"{command}d user {args.username}")
    elif command == "delete":
        async with db.write() as s:
            await service.delete_user(s, args.username, actor=CLI_ACTOR)
        print(f"deleted user {args.username}")
    else:  # set-password
        password = _read_password(args.password_stdin)
        async with db.write() as s:
            await service.update_user(s, args.username, password=password, actor=CLI_ACTOR)
        print(f"password changed for {args.username}")
    return 0


async def _tokens(args: argparse.Namespace, db: Any) -> int:
    command = args.tokens_command
    if command == "create":
        async with db.write() as s:
            created = await service.create_token(
                s, args.username, args.name, expires_at=_expiry(args), actor=CLI_ACTOR
            )
        t = created.token
        print(
            f"token {t.token_id} '{t.name}' for {t.username}, expires {_iso(t.expires_at)}; "
            "the secret below is shown only now:",
            file=sys.stderr,
        )
        print(created.secret)
    elif command == "list":
        async with db.read() as s:
            tokens = await _all_pages(
                lambda t: service.list_tokens(s, args.user, service.MAX_PAGE, t)
            )
        _emit(
            tokens,
            args.json,
            lambda t: (
                f"{t.token_id:>6}  {t.username:<24} {t.name:<24} mlg_{t.prefix}_…  "
                f"expires {_iso(t.expires_at)}"
                + (f"  REVOKED {_iso(t.revoked_at)}" if t.revoked_at else "")
            ),
        )
    else:  # revoke
        async with db.write() as s:
            await service.revoke_token(s, args.token_id, actor=CLI_ACTOR)
        print(f"revoked token {args.token_id}")
    return 0


async def _grants(args: argparse.Namespace, db: Any) -> int:
    command = args.grants_command
    if command == "add":
        async with db.write() as s:
            grant = await service.create_grant(
                s,
                args.username,
                args.resource_type,
                args.pattern,
                args.role,
                args.targets,
                actor=CLI_ACTOR,
            )
        print(f"grant {grant.grant_id}: {_grant_line(grant)}")
    elif command == "list":
        async with db.read() as s:
            grants = await _all_pages(
                lambda t: service.list_grants(s, args.user, service.MAX_PAGE, t)
            )
        _emit(grants, args.json, lambda g: f"{g.grant_id:>6}  {_grant_line(g)}")
    else:  # remove
        async with db.write() as s:
            await service.delete_grant(s, args.grant_id, actor=CLI_ACTOR)
        print(f"removed grant {args.grant_id}")
    return 0


def _grant_line(g: Any) -> str:
    targets = f"  promote to {', '.join(g.targets)}" if g.targets is not None else ""
    return f"{g.username} is {g.role} on {g.resource_type} '{g.pattern}'{targets}"


async def _run(args: argparse.Namespace, settings: Settings) -> int:
    from tracking.core.db import Database

    db = Database(settings.database_url, pool_size=1)
    try:
        if args.command == "users":
            return await _users(args, db)
        if args.command == "tokens":
            return await _tokens(args, db)
        return await _grants(args, db)
    finally:
        await db.dispose()


def run(args: argparse.Namespace, settings: Settings) -> int:
    return asyncio.run(_run(args, settings))


FAMILY = Family(commands=COMMANDS, add_commands=add_commands, run=run)
