"""``mlgate audit verify`` and ``mlgate audit export``: check and dump the audit trail."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from gates.audit.checkpoints import CheckpointError
from gates.server.cli.family import Family, Subcommands, add_db_flag
from tracking.core.settings import Settings
from tracking.core.signing import SigningKeyError

COMMANDS = ("audit",)


def add_commands(sub: Subcommands) -> None:
    audit = sub.add_parser("audit", help="the hash-chained audit trail")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    verify = audit_sub.add_parser(
        "verify",
        help="walk the hash chain; exit 1 naming the first entry that does not verify",
    )
    verify.add_argument(
        "--checkpoint",
        metavar="FILE|URL|store",
        help="also check a signed checkpoint of the chain's head: a checkpoint file (e.g. "
        "latest.json of MLGATE_AUDIT_CHECKPOINT_DIR), a server URL (its "
        "/api/2.0/mlgate/audit/checkpoint), or 'store' (the newest one in the artifact store); "
        "exit 1 when it is not genuine or the chain no longer reaches it (a cut tail)",
    )
    verify.add_argument(
        "--public-key",
        action="append",
        metavar="PEM",
        help="trust only this public key (a PEM file, or a directory of them; repeatable). "
        "Default: the keys kept in the artifact store and the configured signing key's, or the "
        "server's /api/2.0/mlgate/keys for a URL",
    )
    add_db_flag(verify)
    export = audit_sub.add_parser("export", help="write every entry as JSON lines, oldest first")
    export.add_argument("--output", "-o", help="file to write (default: standard output)")
    add_db_flag(export)


def run(args: argparse.Namespace, settings: Settings) -> int:
    return asyncio.run(_run(args, settings))


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
        if args.audit_command == "verify" and args.checkpoint:
            return await _verify_checkpoint(db, args, settings)
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


# --- verify --checkpoint -------------------------------------------------------------------------

CHECKPOINT_ENDPOINT = "/api/2.0/mlgate/audit/checkpoint"
KEYS_ENDPOINT = "/api/2.0/mlgate/keys"


def _pinned_keys(paths: list[str]) -> dict[str, Any]:
    from tracking.core.signing import public_key_from_pem

    keys: dict[str, Any] = {}
    for raw in paths:
        path = Path(raw)
        files = sorted(path.glob("*.pem")) if path.is_dir() else [path]
        for file in files:
            key = public_key_from_pem(file.read_bytes())
            keys[key.key_id] = key
    return keys


def _parse_checkpoint_document(data: bytes | str) -> Any:
    """A checkpoint file, the endpoint's ``{"checkpoint": ...}``, or a .jsonl file's last line."""
    import json

    from gates.audit.checkpoints import Checkpoint

    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    try:
        obj = json.loads(text)
    except ValueError:
        lines = [line for line in text.splitlines() if line.strip()]
        obj = lines[-1] if lines else text
    if isinstance(obj, dict) and isinstance(obj.get("checkpoint"), dict):
        obj = obj["checkpoint"]
    return Checkpoint.parse(obj)


def _read_checkpoint_file(path: str) -> Any:
    return _parse_checkpoint_document(Path(path).read_bytes())


def _origin(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


async def _from_url(url: str, pinned: dict[str, Any] | None) -> tuple[Any, dict[str, Any], str]:
    import httpx

    from tracking.core.signing import public_key_from_pem

    endpoint = url if "/api/" in url else url.rstrip("/") + CHECKPOINT_ENDPOINT
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.get(endpoint)
        response.raise_for_status()
        checkpoint = _parse_checkpoint_document(response.content)
        if pinned is not None:
            return checkpoint, pinned, "the pinned --public-key files"
        keys_response = await client.get(_origin(endpoint) + KEYS_ENDPOINT)
        keys_response.raise_for_status()
    keys = {}
    for item in keys_response.json().get("keys", []):
        key = public_key_from_pem(item.get("public_key_pem", ""))
        keys[key.key_id] = key
    return checkpoint, keys, f"the keys published at {_origin(endpoint)}{KEYS_ENDPOINT}"


async def _local_keys(settings: Settings) -> dict[str, Any]:
    from gates.audit import checkpoints
    from registry.artifacts.storage import build_storage
    from tracking.core.signing import load_private_key

    storage = build_storage(settings)
    try:
        keys = await checkpoints.store_public_keys(storage)
    finally:
        await storage.aclose()
    key_path = settings.signing_key_path
    if key_path.exists():
        key = load_private_key(key_path)
        keys[key.key_id] = key.public
    return keys


async def _verify_checkpoint(db: Any, args: argparse.Namespace, settings: Settings) -> int:
    from gates.audit import checkpoints
    from registry.artifacts.storage import build_storage

    source: str = args.checkpoint
    pinned = _pinned_keys(args.public_key) if args.public_key else None
    if source.startswith(("http://", "https://")):
        try:
            checkpoint, keys, trusted = await _from_url(source, pinned)
        except Exception as exc:  # httpx errors, a non-JSON answer
            print(f"mlgate: cannot fetch the checkpoint from {source}: {exc}", file=sys.stderr)
            return 1
    else:
        if source == "store":
            storage = build_storage(settings)
            try:
                checkpoint = await checkpoints.read_latest(storage)
            finally:
                await storage.aclose()
            if checkpoint is None:
                print(
                    "mlgate: no checkpoint in the artifact store "
                    f"({checkpoints.LATEST.posix}); it is missing or was deleted",
                    file=sys.stderr,
                )
                return 1
        else:
            checkpoint = _read_checkpoint_file(source)
        if pinned is not None:
            keys, trusted = pinned, "the pinned --public-key files"
        else:
            keys = await _local_keys(settings)
            trusted = "the keys kept in the artifact store and the configured signing key"
    result = await checkpoints.verify_against(db, checkpoint, keys)
    print(f"{result.message} [trusting {trusted}]")
    return 0 if result.ok else 1


FAMILY = Family(
    commands=COMMANDS,
    add_commands=add_commands,
    run=run,
    labelled=(CheckpointError, SigningKeyError),
    label="checkpoint: ",
)
