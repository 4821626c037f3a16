"""The ``mlgate`` command line: ``server``, ``db``, ``history``, ``pointer-at``, ``verify``,
``backup`` and ``restore`` (plus the gates' commands)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from gates import cli as gates_cli
from gates.audit import cli as audit_cli
from gates.events import cli as events_cli
from gates.events.config import EventsConfig
from gates.identity import cli as identity_cli
from gates.server import backup, cli_attest
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
        "--workers",
        type=int,
        help="worker processes (env MLGATE_WORKERS, default: usable cores, at most 4)",
    )
    _add_db_flag(server)
    server.add_argument(
        "--artifacts-destination",
        help="where artifacts are stored: a local directory or s3://bucket/prefix "
        "(env MLGATE_ARTIFACTS_DESTINATION)",
    )
    server.add_argument(
        "--auth",
        action="store_true",
        default=None,
        help="require authentication (env MLGATE_AUTH; the first admin comes from "
        "MLGATE_ADMIN_USERNAME/MLGATE_ADMIN_PASSWORD)",
    )
    server.add_argument(
        "--allowed-hosts",
        help="comma-separated Host header names accepted (env MLGATE_ALLOWED_HOSTS)",
    )
    server.add_argument(
        "--cors-origins", help="comma-separated CORS origins; default off (env MLGATE_CORS_ORIGINS)"
    )
    server.add_argument(
        "--allow-unauthenticated-public-bind",
        action="store_true",
        default=None,
        help="allow a non-loopback --host with auth off (env "
        "MLGATE_ALLOW_UNAUTHENTICATED_PUBLIC_BIND)",
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
    gates_cli.add_commands(sub, _add_db_flag)
    identity_cli.add_commands(sub, _add_db_flag)
    audit_cli.add_commands(sub, _add_db_flag)
    events_cli.add_commands(sub, _add_db_flag)
    _add_verify_command(sub)
    backup.add_commands(sub, _add_db_flag)
    cli_attest.add_commands(sub)
    return parser


def _add_verify_command(sub: Any) -> None:
    verify = sub.add_parser(
        "verify",
        help="re-read a model version's stored files and check them against its fingerprint",
        description="Exit status: 0 when every file and the manifest digest match, 1 otherwise.",
    )
    verify.add_argument(
        "uri",
        help="models:/name/3, models:/name/Production, models:/name/latest or models:/name@alias",
    )
    verify.add_argument("--json", action="store_true", help="print the report as JSON")
    _add_db_flag(verify)
    verify.add_argument(
        "--artifacts-destination",
        help="the artifact store: a local directory or s3://bucket/prefix "
        "(env MLGATE_ARTIFACTS_DESTINATION)",
    )
    verify.add_argument(
        "--s3-endpoint-url", help="S3-compatible endpoint (env MLGATE_S3_ENDPOINT_URL)"
    )


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


def _check_line(check: Any) -> str:
    def described(entry: Any) -> str:
        return f"sha256 {entry.sha256}, {entry.size} bytes"

    if check.status == "MISMATCH":
        detail = f"recorded {described(check.expected)}; stored {described(check.actual)}"
    elif check.status == "MISSING":
        detail = f"recorded {described(check.expected)}; not in the store"
    elif check.status == "EXTRA":
        detail = f"not recorded; stored {described(check.actual)}"
    else:
        detail = described(check.actual)
    return f"{check.status:<9} {check.path}  ({detail})"


def _verify_report_json(uri: str, report: Any) -> dict[str, Any]:
    def entry(e: Any) -> dict[str, Any] | None:
        return None if e is None else {"size": e.size, "sha256": e.sha256}

    recorded = report.recorded
    return {
        "uri": uri,
        "name": recorded.name,
        "version": str(recorded.version),
        "download_uri": recorded.location,
        "ok": report.ok,
        "recorded_digest": recorded.digest,
        "stored_digest": report.actual_digest,
        "files": [
            {
                "path": c.path,
                "status": c.status,
                "recorded": entry(c.expected),
                "stored": entry(c.actual),
            }
            for c in report.checks
        ],
    }


async def _run_verify_command(args: argparse.Namespace, settings: Settings) -> int:
    import msgspec

    from registry import service
    from registry.artifacts.storage import build_storage
    from tracking.core.db import Database

    db = Database(settings.database_url, pool_size=1)
    try:
        async with db.read() as s:
            recorded = await service.recorded_fingerprint(s, args.uri)
    finally:
        await db.dispose()
    # The database transaction is closed before the (possibly long) re-read of the bytes.
    storage = build_storage(settings)
    try:
        report = await service.verify_fingerprint(storage, recorded)
    finally:
        await storage.aclose()

    if args.json:
        print(msgspec.json.encode(_verify_report_json(args.uri, report)).decode())
        return 0 if report.ok else 1
    for check in report.checks:
        print(_check_line(check))
    print(f"digest    recorded {recorded.digest or '(none)'}")
    print(f"          stored   {report.actual_digest or '(none)'}")
    if not report.rows_match_digest:
        print("          the recorded file rows no longer produce the recorded digest")
    if recorded.digest is None and report.actual_digest is not None:
        print(
            "          no fingerprint was recorded: the location was empty when the version "
            "was registered, or it was registered before fingerprints existed"
        )
    label = f"{args.uri} (name={recorded.name}, version={recorded.version})"
    if report.ok:
        print(f"{label}: OK, {len(report.checks)} files match")
        return 0
    counts = {
        s: sum(c.status == s for c in report.checks) for s in ("MISMATCH", "MISSING", "EXTRA")
    }
    print(
        f"{label}: FAILED, {counts['MISMATCH']} mismatched, {counts['MISSING']} missing, "
        f"{counts['EXTRA']} extra file(s)"
    )
    return 1


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {
        "host": getattr(args, "host", None),
        "port": getattr(args, "port", None),
        "workers": getattr(args, "workers", None),
        "database_url": getattr(args, "database_url", None),
        "artifacts_destination": getattr(args, "artifacts_destination", None),
        "s3_endpoint_url": getattr(args, "s3_endpoint_url", None),
        "auth": getattr(args, "auth", None),
        "allowed_hosts": getattr(args, "allowed_hosts", None),
        "cors_origins": getattr(args, "cors_origins", None),
        "allow_unauthenticated_public_bind": getattr(
            args, "allow_unauthenticated_public_bind", None
        ),
    }
    if getattr(args, "no_db_upgrade", False):
        overrides["db_auto_upgrade"] = False
    return Settings.from_env(**overrides)


def run_server(settings: Settings) -> int:
    import os
    import shutil
    import tempfile

    from gates.server import observe_setup

    # Before prometheus_client is first imported: every worker then writes its samples to
    # this process's private directory, and a scrape of any worker reads all of them.
    metrics_dir = tempfile.mkdtemp(prefix="mlgate-metrics-")
    os.environ[observe_setup.MULTIPROC_ENV] = metrics_dir
    try:
        return _run_server(settings)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _run_server(settings: Settings) -> int:
    import uvicorn

    from gates.server import migrate, observe, security

    refusal = security.bind_refusal(settings) or observe.check_log_format(settings)
    if refusal is not None:
        print(f"mlgate: {refusal}", file=sys.stderr)
        return 2
    observe.configure_logging(settings)
    try:
        # Refuse a malformed retry schedule now, not when the worker first needs it.
        EventsConfig.from_settings(settings)
    except ValueError as exc:
        print(f"mlgate: {exc}", file=sys.stderr)
        return 2
    if settings.db_auto_upgrade:
        migrate.upgrade(settings.database_url)
    from tracking.core.signing import SigningKeyError, load_or_create

    try:
        # Made (or checked) once before any worker starts: workers then all load one key.
        key, created = load_or_create(settings.signing_key_path)
    except SigningKeyError as exc:
        print(f"mlgate: refusing to start: {exc}", file=sys.stderr)
        return 2
    if created:
        print(
            f"mlgate: audit signing key {key.key_id} created at {settings.signing_key_path} "
            "(mode 0600); give every replica this file",
            file=sys.stderr,
        )
    from gates.attestations.keys import AttestationKeyError, load_keyring

    try:
        load_keyring(settings.attestation_key_paths, settings.default_attestation_key_path)
    except AttestationKeyError as exc:
        print(f"mlgate: refusing to start: {exc}", file=sys.stderr)
        return 2
    if settings.auth:
        refusal = _bootstrap_admin(settings)
        if refusal is not None:
            print(f"mlgate: refusing to start: {refusal}", file=sys.stderr)
            return 2
    export_to_environment(settings)
    uvicorn.run(
        "gates.server.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers if settings.workers > 1 else None,
        log_level=settings.log_level,
        # mlgate's own logging (gates/server/observe.py) formats every line, uvicorn's
        # included; its access line replaces uvicorn's, which stays off (no duplicates).
        log_config=None,
        access_log=False,
        # Only a configured proxy may say who the client is and whether it spoke HTTPS: the
        # client address keys login throttling, the scheme the UI's same-origin check.
        proxy_headers=bool(settings.forwarded_allow_ips),
        forwarded_allow_ips=settings.forwarded_allow_ips or None,
    )
    return 0


def _bootstrap_admin(settings: Settings) -> str | None:
    """Create the first administrator before any worker starts; why not, or None."""
    import asyncio

    from gates.identity.errors import NoAdministrator
    from gates.server.security import bootstrap_admin
    from tracking.core.db import Database

    async def bootstrap() -> None:
        db = Database(settings.database_url, pool_size=1)
        try:
            await bootstrap_admin(db, settings)
        finally:
            await db.dispose()

    try:
        asyncio.run(bootstrap())
    except NoAdministrator as exc:
        return str(exc)
    return None


def _run_gates_command(
    args: argparse.Namespace, settings: Settings, run: Any = gates_cli.run
) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from tracking.core.errors import MlflowError

    try:
        return int(run(args, settings))
    except (MlflowError, ValueError, OSError) as exc:
        print(f"mlgate: {getattr(exc, 'message', exc)}", file=sys.stderr)
        return 1
    except SQLAlchemyError as exc:
        print(
            f"mlgate: database error ({type(getattr(exc, 'orig', None) or exc).__name__}); "
            "is the schema current? Run `mlgate db upgrade`.",
            file=sys.stderr,
        )
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = _settings(args)
    except ValueError as exc:
        print(f"mlgate: {exc}", file=sys.stderr)
        return 2
    if args.command == "server":
        return run_server(settings)
    if args.command in cli_attest.COMMANDS:
        return int(args.attest_run(args))
    if args.command in ("history", "pointer-at", "verify"):
        import asyncio

        from sqlalchemy.exc import SQLAlchemyError

        from tracking.core.errors import MlflowError

        run = _run_verify_command if args.command == "verify" else _run_history_command
        try:
            return asyncio.run(run(args, settings))
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
    if args.command in backup.COMMANDS:
        return backup.run(args, settings)
    if args.command in audit_cli.COMMANDS:
        return audit_cli.run(args, settings)
    if args.command in identity_cli.COMMANDS:
        return _run_gates_command(args, settings, identity_cli.run)
    if args.command in events_cli.COMMANDS:
        return _run_gates_command(args, settings, events_cli.run)
    if args.command in gates_cli.COMMANDS:
        return _run_gates_command(args, settings)
    if args.command == "db":
        from gates.server import migrate

        if args.db_command == "upgrade":
            migrate.upgrade(settings.database_url, args.revision)
        else:
            migrate.current(settings.database_url)
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
