"""``mlgate server``: checks the settings, migrates, makes the signing key, then runs uvicorn."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from gates.events.config import EventsConfig
from gates.server.cli.family import Family, Subcommands, add_db_flag
from gates.server.workers import serve as serve_workers
from tracking.core.settings import Settings, export_to_environment


def add_commands(sub: Subcommands) -> None:
    server = sub.add_parser("server", help="run the HTTP server")
    server.add_argument("--host", help="bind address (env MLGATE_HOST, default 127.0.0.1)")
    server.add_argument("--port", type=int, help="port (env MLGATE_PORT, default 5000)")
    server.add_argument(
        "--workers",
        type=int,
        help="worker processes (env MLGATE_WORKERS, default: usable cores, at most 4)",
    )
    add_db_flag(server)
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


def run(args: argparse.Namespace, settings: Settings) -> int:
    return run_server(settings)


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


def _refusal(settings: Settings) -> str | None:
    """Why the server must not start with these settings (exit 2), checked before any work."""
    from gates.server import authentication, observe

    refusal = authentication.bind_refusal(settings) or observe.check_log_format(settings)
    if refusal is not None:
        return refusal
    observe.configure_logging(settings)
    try:
        # Refuse a malformed retry schedule now, not when the worker first needs it.
        EventsConfig.from_settings(settings)
    except ValueError as exc:
        return str(exc)
    return None


def _prepare(settings: Settings) -> str | None:
    """Migrate, load (or make) the signing key and the first admin; why not, or None."""
    from gates.attestations.keys import AttestationKeyError, load_keyring
    from gates.server import migrate
    from tracking.core.signing import SigningKeyError, load_or_create

    if settings.db_auto_upgrade:
        migrate.upgrade(settings.database_url)
    try:
        # Made (or checked) once before any worker starts: workers then all load one key.
        key, created = load_or_create(settings.signing_key_path)
    except SigningKeyError as exc:
        return str(exc)
    try:
        # Made (or checked) once too: the promotion attestation keys (first one signs).
        load_keyring(settings.attestation_key_paths, settings.default_attestation_key_path)
    except AttestationKeyError as exc:
        return str(exc)
    if created:
        print(
            f"mlgate: audit signing key {key.key_id} created at {settings.signing_key_path} "
            "(mode 0600); give every replica this file",
            file=sys.stderr,
        )
    if settings.auth:
        return _bootstrap_admin(settings)
    return None


def _run_server(settings: Settings) -> int:
    import uvicorn

    refusal = _refusal(settings)
    if refusal is not None:
        print(f"mlgate: {refusal}", file=sys.stderr)
        return 2
    refusal = _prepare(settings)
    if refusal is not None:
        print(f"mlgate: refusing to start: {refusal}", file=sys.stderr)
        return 2
    export_to_environment(settings)
    options: dict[str, Any] = {
        "app": "gates.server.app:create_app",
        "factory": True,
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level,
        # mlgate's own logging (gates/server/observe.py) formats every line, uvicorn's
        # included; its access line replaces uvicorn's, which stays off (no duplicates).
        "log_config": None,
        "access_log": False,
        "timeout_keep_alive": settings.keep_alive_timeout,
        # Only a configured proxy may say who the client is and whether it spoke HTTPS: the
        # client address keys login throttling, the scheme the UI's same-origin check.
        "proxy_headers": bool(settings.forwarded_allow_ips),
        "forwarded_allow_ips": settings.forwarded_allow_ips or None,
    }
    if settings.workers > 1:
        # Each worker listens on its own socket, so connections spread over the workers.
        return serve_workers(options, settings.workers, settings.worker_timeout)
    uvicorn.run(**options)
    return 0


def _bootstrap_admin(settings: Settings) -> str | None:
    """Create the first administrator before any worker starts; why not, or None."""
    import asyncio

    from gates.identity.errors import NoAdministrator
    from gates.server.authentication import bootstrap_admin
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


# Not guarded: a failure to start is the server's own message (exit 2) or uvicorn's.
FAMILY = Family(commands=("server",), add_commands=add_commands, run=run, guarded=False)
