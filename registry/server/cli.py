"""The ``mlgate`` command line: ``server``, ``db upgrade``, ``history`` and ``pointer-at``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from tracking.core.settings import Settings, export_to_environment


def _add_db_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--database-url",
        help="SQLAlchemy URL: sqlite:///path.db or postgresql://user@host/db "
        "(env MLGATE_DATABASE_URL)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlgate", description="mlgate model registry and gates")
    sub = parser.add_subparsers(dest="command", required=True)

    server = sub.add_parser("server", help="run the HTTP server")
    server.add_argument("--host", help="bind address (env MLGATE_HOST, default 127.0.0.1)")
    server.add_argument("--port", type=int, help="port (env MLGATE_PORT, default 5000)")
    server.add_argument(
        "--workers", type=int, help="worker processes (env MLGATE_WORKERS, default 1)"
    )
    _add_db_flag(server)
    server.add_argument(
        "--artifacts-destination",
        help="where artifacts are stored: a local directory or s3://bucket/prefix "
        "(env MLGATE_ARTIFACTS_DESTINATION)",
    )
    server.add_argument(
        "--no-db-upgrade",
        action="store_true",
        help="do not apply migrations at start-up (env MLGATE_DB_AUTO_UPGRADE=false)",
    )

    db = sub.add_parser("db", help="database schema commands")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    up = db_sub.add_parser("upgrade", help="apply migrations up to the newest revision")
    _add_db_flag(up)
    up.add_argument("--revision", default="head")
    cur = db_sub.add_parser("current", help="show the applied revision")
    _add_db_flag(cur)
    _add_history_commands(sub)
    return parser


def _add_history_commands(sub: Any) -> None:
    history = sub.add_parser("history", help="show a registered model's stage and alias moves")
    history.add_argument("name", help="registered model name")
    history.add_argument(
        "--pointer", help="only this pointer: a stage (Production) or an alias (@champion)"
    )
    history.add_argument("--limit", type=int, default=50, help="newest N events (default 50)")
    history.add_argument("--json", action="store_true", help="print JSON lines")
    _add_db_flag(history)

    at = sub.add_parser("pointer-at", help="which version a stage or alias pointed at, at a time")
    at.add_argument("name", help="registered model name")
    at.add_argument("pointer", help="a stage (Production) or an alias (@champion)")
    at.add_argument(
        "--at",
        dest="at",
        help="ISO 8601 time (naive means UTC) or epoch milliseconds; default now",
    )
    at.add_argument("--json", action="store_true", help="print JSON")
    _add_db_flag(at)


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


async def _run_history_command(args: argparse.Namespace, settings: Settings) -> int:
    import msgspec

    from registry import service
    from tracking.core.db import Database

    db = Database(settings.database_url, pool_size=1)
    try:
        async with db.read() as s:
            if args.command == "pointer-at":
                at = parse_instant(args.at) if args.at else None
                answer = await service.pointer_at(s, args.name, args.pointer, at)
                if args.json:
                    print(msgspec.json.encode(answer).decode())
                elif answer.version is None:
                    print(f"{answer.name} {answer.pointer} at {_iso(answer.timestamp)}: (none)")
                else:
                    print(
                        f"{answer.name} {answer.pointer} at {_iso(answer.timestamp)}: "
                        f"version {answer.version}"
                    )
                    if answer.event is not None:
                        print(f"  since {_history_line(answer.event)}")
                return 0
            token: str | None = None
            shown = 0
            while shown < args.limit:
                page = min(args.limit - shown, 1000)
                events, token = await service.pointer_history(
                    s, args.name, args.pointer, page, token
                )
                for e in events:
                    print(msgspec.json.encode(e).decode() if args.json else _history_line(e))
                shown += len(events)
                if not token:
                    break
            return 0
    finally:
        await db.dispose()


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {
        "host": getattr(args, "host", None),
        "port": getattr(args, "port", None),
        "workers": getattr(args, "workers", None),
        "database_url": getattr(args, "database_url", None),
        "artifacts_destination": getattr(args, "artifacts_destination", None),
    }
    if getattr(args, "no_db_upgrade", False):
        overrides["db_auto_upgrade"] = False
    return Settings.from_env(**overrides)


def run_server(settings: Settings) -> None:
    import uvicorn

    from registry.server import migrate

    if settings.db_auto_upgrade:
        migrate.upgrade(settings.database_url)
    export_to_environment(settings)
    uvicorn.run(
        "registry.server.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers if settings.workers > 1 else None,
        log_level=settings.log_level,
        access_log=False,
        proxy_headers=False,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = _settings(args)
    except ValueError as exc:
        print(f"mlgate: {exc}", file=sys.stderr)
        return 2
    if args.command == "server":
        run_server(settings)
        return 0
    if args.command in ("history", "pointer-at"):
        import asyncio

        from sqlalchemy.exc import SQLAlchemyError

        from tracking.core.errors import MlflowError

        try:
            return asyncio.run(_run_history_command(args, settings))
        except (MlflowError, ValueError) as exc:
            print(f"mlgate: {getattr(exc, 'message', exc)}", file=sys.stderr)
            return 1
        except SQLAlchemyError as exc:
            print(
                f"mlgate: database error ({type(getattr(exc, 'orig', None) or exc).__name__}); "
                "is the schema current? Run `mlgate db upgrade`.",
                file=sys.stderr,
            )
            return 1
    if args.command == "db":
        from registry.server import migrate

        if args.db_command == "upgrade":
            migrate.upgrade(settings.database_url, args.revision)
        else:
            migrate.current(settings.database_url)
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
