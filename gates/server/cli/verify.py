"""``mlgate verify``: re-read a model version's stored files and check its fingerprint."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import msgspec

from gates.server.cli.family import Family, Subcommands, add_db_flag
from tracking.core.settings import Settings


def add_commands(sub: Subcommands) -> None:
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
    add_db_flag(verify)
    verify.add_argument(
        "--artifacts-destination",
        help="the artifact store: a local directory or s3://bucket/prefix "
        "(env MLGATE_ARTIFACTS_DESTINATION)",
    )
    verify.add_argument(
        "--s3-endpoint-url", help="S3-compatible endpoint (env MLGATE_S3_ENDPOINT_URL)"
    )


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


def _report_json(uri: str, report: Any) -> dict[str, Any]:
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


async def _check(args: argparse.Namespace, settings: Settings) -> tuple[Any, Any]:
    """The recorded fingerprint and the report of re-reading the stored bytes against it."""
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
    return recorded, report


def _print_report(uri: str, recorded: Any, report: Any) -> int:
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
    label = f"{uri} (name={recorded.name}, version={recorded.version})"
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


def run(args: argparse.Namespace, settings: Settings) -> int:
    recorded, report = asyncio.run(_check(args, settings))
    if args.json:
        print(msgspec.json.encode(_report_json(args.uri, report)).decode())
        return 0 if report.ok else 1
    return _print_report(args.uri, recorded, report)


FAMILY = Family(commands=("verify",), add_commands=add_commands, run=run)
