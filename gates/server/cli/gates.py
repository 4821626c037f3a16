"""``mlgate gates``: apply and list gate policies (database), and a gate's CI secrets (HTTP).

``apply`` and ``list`` work on the database through the policies service (like ``mlgate
history``). ``secrets`` goes through the server with the caller's own credentials, like
``approvals approve``: the server seals new secrets under its key and records who authenticated.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

import msgspec

from gates.policies.promote_client import EXIT_AUTH_FAILED, EXIT_OK, EXIT_REFUSED, EXIT_RETRY
from gates.server.cli.family import Family, Subcommands, add_db_flag
from gates.server.cli.over_http import caller_credentials, error_line, json_answer
from tracking.core.settings import Settings


def add_commands(sub: Subcommands) -> None:
    gates = sub.add_parser("gates", help="gate policies")
    gates_sub = gates.add_subparsers(dest="gates_command", required=True)
    apply = gates_sub.add_parser("apply", help="create or update the gates of a YAML file")
    apply.add_argument("file", help="gates.yaml: a top-level 'gates:' list")
    apply.add_argument("--as", dest="as_user", default="cli", help="recorded as (default cli)")
    add_db_flag(apply)
    listing = gates_sub.add_parser("list", help="list gates")
    listing.add_argument("--all", action="store_true", help="include disabled gates")
    listing.add_argument("--json", action="store_true", help="print JSON lines")
    add_db_flag(listing)

    secrets = gates_sub.add_parser(
        "secrets",
        help="a gate's CI signing secrets, through the server as the caller (admin)",
        description="Through the HTTP API with the caller's own credentials "
        "(MLFLOW_TRACKING_TOKEN, or MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD), "
        "like `approvals approve`: the server seals new secrets under its "
        "MLGATE_WEBHOOK_SECRET_KEY, which the CLI need not hold, and records who authenticated.",
    )
    secrets_sub = secrets.add_subparsers(dest="secrets_command", required=True)
    for verb, text in (
        ("add", "add a secret (at most two are active); printed once"),
        ("rotate", "a new secret; the previous ones stay valid for --grace-seconds"),
        ("revoke", "revoke a secret by id"),
        ("list", "list the gate's secrets (never their values)"),
    ):
        p = secrets_sub.add_parser(verb, help=text)
        p.add_argument("--gate", required=True, help="the gate's name")
        if verb == "rotate":
            p.add_argument("--grace-seconds", type=int, help="default: the server's (a day)")
        if verb == "revoke":
            p.add_argument("--secret-id", required=True)
        p.add_argument("--json", action="store_true", help="print the answer as JSON")
        p.add_argument("--url", help="mlgate server (env MLGATE_URL)")
        p.add_argument("--timeout", type=float, default=60.0, help="HTTP timeout in seconds")


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.gates_command == "secrets":
        return secrets_over_http(args, settings)
    return asyncio.run(_run_database_command(args, settings))


# --- apply and list (database) -------------------------------------------------------------------


def _load_gates_file(path: str) -> Any:
    import yaml

    from gates.policies.schemas import GatesFile

    text = Path(path).read_text(encoding="utf-8")
    data = yaml.safe_load(text) or {}
    try:
        return msgspec.convert(data, GatesFile, strict=False)
    except msgspec.ValidationError as exc:
        raise ValueError(f"{path}: {exc}") from None


def _gate_line(g: Any) -> str:
    state = "enabled" if g.enabled else "disabled"
    return (
        f"{g.name:<30} {g.model:<24} {g.target:<14} v{g.version:<4} "
        f"{state}  approvals={g.rules.required_approvals}"
    )


async def _run_database_command(args: argparse.Namespace, settings: Settings) -> int:
    from gates.policies import service as policies
    from tracking.core.db import Database

    db = Database(settings.database_url, pool_size=1)
    try:
        if args.gates_command == "apply":
            specs = _load_gates_file(args.file).gates
            async with db.write() as s:
                results = await policies.apply_policies(s, specs, actor=args.as_user)
            for r in results:
                print(f"{r.name:<30} {r.action:<10} version {r.version}")
            return EXIT_OK
        async with db.read() as s:
            token: str | None = None
            while True:
                gates, token = await policies.list_policies(s, 1000, token, args.all)
                for g in gates:
                    print(msgspec.json.encode(g).decode() if args.json else _gate_line(g))
                if not token:
                    return EXIT_OK
    finally:
        await db.dispose()


# --- gate secrets (HTTP) ------------------------------------------------------------------------


def _secret_line(item: dict[str, Any]) -> str:
    state = "active" if item.get("active") else "inactive"
    if item.get("revoked_at"):
        state = "revoked"
    expires = f"  expires {item['expires_at']}" if item.get("expires_at") else ""
    return f"{item.get('secret_id')}  {state:<8} created by {item.get('created_by')}{expires}"


def _secrets_request(args: argparse.Namespace, url: str, settings: Settings) -> Any:
    import httpx

    headers, auth = caller_credentials(settings)
    base = f"{url}/api/2.0/mlgate/gates/secrets"
    verb = args.secrets_command
    if verb == "list":
        return httpx.get(
            f"{base}/list",
            params={"gate": args.gate},
            headers=headers,
            auth=auth,
            timeout=args.timeout,
        )
    body: dict[str, Any] = {"gate": args.gate}
    if verb == "rotate" and args.grace_seconds is not None:
        body["grace_seconds"] = args.grace_seconds
    if verb == "revoke":
        body["secret_id"] = args.secret_id
    return httpx.post(f"{base}/{verb}", json=body, headers=headers, auth=auth, timeout=args.timeout)


def secrets_over_http(args: argparse.Namespace, settings: Settings) -> int:
    """``mlgate gates secrets add|rotate|revoke|list`` as the caller, through the server."""
    import httpx

    url = (args.url or settings.url).rstrip("/")
    try:
        response = _secrets_request(args, url, settings)
    except httpx.HTTPError as exc:
        print(f"mlgate: cannot reach {url} (retry later): {exc}", file=sys.stderr)
        return EXIT_RETRY
    answer = json_answer(response)
    if response.status_code != 200:
        print(error_line(response.status_code, answer), file=sys.stderr)
        if response.status_code in (401, 403):
            return EXIT_AUTH_FAILED
        return EXIT_RETRY if response.status_code >= 500 else EXIT_REFUSED
    if args.json:
        print(msgspec.json.encode(answer).decode())
        return EXIT_OK
    items = (
        answer.get("secrets") if args.secrets_command == "list" else [answer.get("secret") or {}]
    )
    for item in items or []:
        print(_secret_line(item))
        if item.get("secret"):
            # Shown once: the server keeps it sealed and never answers it again.
            print(f"secret {item['secret']}")
    return EXIT_OK


FAMILY = Family(commands=("gates",), add_commands=add_commands, run=run)
