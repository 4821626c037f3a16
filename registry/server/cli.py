"""The ``mlgate`` command line: ``mlgate server`` and ``mlgate db upgrade``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

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
    server.add_argument("--workers", type=int, help="worker processes (env MLGATE_WORKERS, default 1)")
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
    return parser


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
