"""``mlgate approvals``: list release approval requests, approve or reject one.

``list`` reads the database through the approvals service. ``approve`` and ``reject`` are HTTP
clients acting with the caller's own credentials (an API token, or a user name and password),
so the recorded actor is whoever authenticated; their database-direct form is break-glass only
(``--break-glass --reason --as <admin>``), recorded as such and never counted as an approval.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

import msgspec

from gates.policies.promote_client import EXIT_OK, EXIT_REFUSED, EXIT_USAGE
from gates.server.cli.family import Family, Subcommands, add_db_flag
from gates.server.cli.over_http import caller_credentials, error_line, json_answer
from gates.server.cli.promote import format_decision
from tracking.core.settings import Settings


def add_commands(sub: Subcommands) -> None:
    approvals = sub.add_parser("approvals", help="release approval requests")
    ap_sub = approvals.add_subparsers(dest="approvals_command", required=True)
    ap_list = ap_sub.add_parser("list", help="list approval requests")
    ap_list.add_argument("--status", help="pending, approved, rejected, cancelled, expired, failed")
    ap_list.add_argument("--model", help="only this registered model")
    ap_list.add_argument("--json", action="store_true", help="print JSON lines")
    add_db_flag(ap_list)
    for verb in ("approve", "reject"):
        p = ap_sub.add_parser(
            verb,
            help=f"{verb} a request with your own credentials (MLFLOW_TRACKING_TOKEN, or "
            "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD)",
        )
        p.add_argument("request_id")
        p.add_argument("--comment", help="why")
        p.add_argument("--url", help="mlgate server (env MLGATE_URL)")
        p.add_argument("--timeout", type=float, default=60.0, help="HTTP timeout in seconds")
        p.add_argument(
            "--break-glass",
            action="store_true",
            help="act on the database directly, when the server cannot be used: admin-only, "
            "recorded as break-glass, never counted as an approval",
        )
        p.add_argument("--reason", help="why break-glass is needed (required with it)")
        p.add_argument("--as", dest="as_user", help="with --break-glass: the admin acting")
        add_db_flag(p)


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.approvals_command == "list":
        return asyncio.run(_list(args, settings))
    if not args.break_glass:
        if args.as_user:
            # Naming someone is no way to act as them: the server records who authenticated.
            print(
                "mlgate: --as only names the admin of a --break-glass action; approve and "
                "reject act as the caller's credentials (MLFLOW_TRACKING_TOKEN, or "
                "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD)",
                file=sys.stderr,
            )
            return EXIT_USAGE
        return act_over_http(args, settings)
    if not args.reason or not args.as_user:
        print("mlgate: --break-glass needs --reason and --as <admin>", file=sys.stderr)
        return EXIT_USAGE
    return asyncio.run(_break_glass(args, settings))


async def _list(args: argparse.Namespace, settings: Settings) -> int:
    from gates.approvals import service as approvals
    from tracking.core.db import Database

    db = Database(settings.database_url, pool_size=1)
    try:
        async with db.read() as s:
            items, _ = await approvals.list_requests(s, args.status, args.model, 1000)
    finally:
        await db.dispose()
    for a in items:
        if args.json:
            print(msgspec.json.encode(a).decode())
        else:
            print(
                f"{a.request_id}  {a.status:<9} {a.model} v{a.version} -> {a.target}  "
                f"{a.approvals}/{a.required_approvals} approvals  through "
                f"{a.requester or '-'} (claimed: {a.requested_by})"
            )
    return EXIT_OK


async def _break_glass(args: argparse.Namespace, settings: Settings) -> int:
    from gates.approvals import service as approvals
    from gates.server.hooks import registry_hooks
    from registry.events import session_info
    from tracking.core.db import Database
    from tracking.core.errors import MlflowError

    # The app's registry hooks, so the forced move writes its outbox event and audit entry and
    # meets the gate guard (with the approval's own authorisation) exactly as in the server.
    # No principal is bound in this process, hence no principal check (the service checks
    # that --as names an administrator).
    db = Database(
        settings.database_url, pool_size=1, session_info=session_info(registry_hooks(auth=False))
    )
    try:
        async with db.write() as s:
            result = await approvals.break_glass(
                s,
                args.request_id,
                approve=args.approvals_command == "approve",
                claimed_admin=args.as_user,
                reason=args.reason,
                check_admin=settings.auth,
            )
    except MlflowError as exc:
        print(f"mlgate: {exc.error_code}: {exc.message}", file=sys.stderr)
        return EXIT_REFUSED
    finally:
        await db.dispose()
    a = result.approval_request
    print(
        f"{a.request_id}: {a.status} by break-glass "
        f"({a.approvals}/{a.required_approvals} approvals counted)"
    )
    return EXIT_OK


def act_over_http(args: argparse.Namespace, settings: Settings) -> int:
    """Approve or reject through the server, authenticated as the caller."""
    import httpx

    url = (args.url or settings.url).rstrip("/")
    headers, auth = caller_credentials(settings)
    body: dict[str, Any] = {"request_id": args.request_id}
    if args.comment:
        body["comment"] = args.comment
    try:
        response = httpx.post(
            f"{url}/api/2.0/mlgate/approvals/{args.approvals_command}",
            json=body,
            headers=headers,
            auth=auth,
            timeout=args.timeout,
        )
    except httpx.HTTPError as exc:
        print(f"mlgate: cannot reach {url}: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    answer = json_answer(response)
    a = answer.get("approval_request")
    if not isinstance(a, dict):
        print(error_line(response.status_code, answer), file=sys.stderr)
        return EXIT_REFUSED
    print(
        f"{a['request_id']}: {a['status']} ({a['approvals']}/{a['required_approvals']} approvals)"
    )
    decision = answer.get("decision")
    if isinstance(decision, dict):
        print(format_decision(decision))
        return EXIT_OK if decision.get("outcome") == "passed" else EXIT_REFUSED
    return EXIT_OK


FAMILY = Family(commands=("approvals",), add_commands=add_commands, run=run)
