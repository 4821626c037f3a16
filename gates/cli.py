"""``mlgate gates``, ``mlgate approvals`` and ``mlgate promote``: the gates' command line.

``gates`` and ``approvals list`` work on the database through the services (like ``mlgate
history``). ``approvals approve|reject`` are HTTP clients: they act with the caller's own
credentials (an API token, or a user name and password), so the recorded actor is whoever
authenticated; their database-direct form is break-glass only (``--break-glass --reason``).
``promote`` is the CI client: it signs its HTTP call with the gate secret from the environment.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import msgspec

# One home for the exit codes, the request body and the outcome mapping: the standalone client
# the server serves to CI runners (standard library only), so `mlgate promote` and
# `curl .../promote.py | python3 -` cannot drift apart. 0 passed, 1 refused, 2 usage,
# 3 pending, 4-7 the approval request expired/rejected/cancelled/failed, 8 authentication
# failed (401/403), 9 worth retrying (no connection, timeout, 429, any 5xx). Codes this module
# does not use itself are re-exported here, where callers and tests look for them.
from gates.policies.promote_client import (  # noqa: F401
    CLOSED_EXIT_CODES,
    EXIT_APPROVAL_FAILED,
    EXIT_AUTH_FAILED,
    EXIT_CANCELLED,
    EXIT_EXPIRED,
    EXIT_OK,
    EXIT_PENDING,
    EXIT_REFUSED,
    EXIT_REJECTED,
    EXIT_RETRY,
    EXIT_USAGE,
    default_idempotency_key,
    exit_code,
    request_body,
)
from gates.policies.signatures import signed_headers
from tracking.core.settings import Settings


def add_commands(sub: Any, add_db_flag: Any) -> None:
    """Register the gates' subcommands on the main parser."""
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

    promote = sub.add_parser(
        "promote", help="ask a gate to promote a run (signed with MLGATE_GATE_SECRET)"
    )
    promote.add_argument("--model", required=True, help="registered model name")
    which = promote.add_mutually_exclusive_group(required=True)
    which.add_argument("--run", help="run id whose model to register and promote")
    which.add_argument("--version", help="an existing model version to promote")
    promote.add_argument("--to", dest="target", required=True, help="stage or @alias")
    promote.add_argument("--dry-run", action="store_true", help="evaluate only")
    promote.add_argument("--url", help="mlgate server (env MLGATE_URL)")
    promote.add_argument("--artifact-path", default="model", help="model path inside the run")
    promote.add_argument(
        "--idempotency-key",
        help="default: derived from model, run/version and target, so retries are safe",
    )
    promote.add_argument(
        "--requested-by", help="who asked (e.g. the CI actor); recorded as an unverified claim"
    )
    promote.add_argument(
        "--reopen",
        action="store_true",
        help="when the key's approval request is closed (expired, rejected, ...), ask again",
    )
    promote.add_argument(
        "--allow-pending", action="store_true", help="exit 0 when approvals are pending"
    )
    promote.add_argument("--json", action="store_true", help="print the decision as JSON")
    promote.add_argument("--timeout", type=float, default=60.0, help="HTTP timeout in seconds")


COMMANDS = ("gates", "approvals", "promote")


def run(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio

    if args.command == "promote":
        return promote(args, settings)
    if args.command == "gates" and args.gates_command == "secrets":
        return secrets_over_http(args, settings)
    if args.command == "approvals" and args.approvals_command in ("approve", "reject"):
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
    return asyncio.run(_run_database_command(args, settings))


# --- gates and approvals (database) --------------------------------------------------------------


def _load_gates_file(path: str) -> Any:
    import yaml

    from gates.policies.schemas import GatesFile

    text = Path(path).read_text(encoding="utf-8")
    data = yaml.safe_load(text) or {}
    try:
        return msgspec.convert(data, GatesFile, strict=False)
    except msgspec.ValidationError as exc:
        raise ValueError(f"{path}: {exc}") from None


async def _run_database_command(args: argparse.Namespace, settings: Settings) -> int:
    from gates.approvals import service as approvals
    from gates.policies import service as policies
    from tracking.core.db import Database

    db = Database(settings.database_url, pool_size=1)
    try:
        if args.command == "gates" and args.gates_command == "apply":
            specs = _load_gates_file(args.file).gates
            async with db.write() as s:
                results = await policies.apply_policies(s, specs, actor=args.as_user)
            for r in results:
                print(f"{r.name:<30} {r.action:<10} version {r.version}")
            return EXIT_OK
        if args.command == "gates":
            async with db.read() as s:
                token: str | None = None
                while True:
                    gates, token = await policies.list_policies(s, 1000, token, args.all)
                    for g in gates:
                        if args.json:
                            print(msgspec.json.encode(g).decode())
                        else:
                            state = "enabled" if g.enabled else "disabled"
                            print(
                                f"{g.name:<30} {g.model:<24} {g.target:<14} v{g.version:<4} "
                                f"{state}  approvals={g.rules.required_approvals}"
                            )
                    if not token:
                        return EXIT_OK
        if args.approvals_command == "list":
            async with db.read() as s:
                items, _ = await approvals.list_requests(s, args.status, args.model, 1000)
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
        from tracking.core.errors import MlflowError

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
        a = result.approval_request
        print(
            f"{a.request_id}: {a.status} by break-glass "
            f"({a.approvals}/{a.required_approvals} approvals counted)"
        )
        return EXIT_OK
    finally:
        await db.dispose()


def _json_answer(response: Any) -> dict[str, Any]:
    """The server's answer as a dict: its JSON object, else its text as the message."""
    try:
        answer = response.json()
    except ValueError:
        return {"message": response.text}
    return answer if isinstance(answer, dict) else {"message": str(answer)}


# --- approve and reject (HTTP) -------------------------------------------------------------------


def act_over_http(args: argparse.Namespace, settings: Settings) -> int:
    """Approve or reject through the server, authenticated as the caller."""
    import httpx

    url = (args.url or settings.url).rstrip("/")
    headers, auth = _caller_credentials(settings)
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
    answer = _json_answer(response)
    a = answer.get("approval_request")
    if not isinstance(a, dict):
        print(
            f"mlgate: {response.status_code} {answer.get('error_code', '')}: "
            f"{answer.get('message', '')}",
            file=sys.stderr,
        )
        return EXIT_REFUSED
    print(
        f"{a['request_id']}: {a['status']} ({a['approvals']}/{a['required_approvals']} approvals)"
    )
    decision = answer.get("decision")
    if isinstance(decision, dict):
        print(format_decision(decision))
        return EXIT_OK if decision.get("outcome") == "passed" else EXIT_REFUSED
    return EXIT_OK


# --- gate secrets (HTTP) ------------------------------------------------------------------------


def _caller_credentials(settings: Settings) -> tuple[dict[str, str], tuple[str, str] | None]:
    if settings.tracking_token:
        return {"Authorization": f"Bearer {settings.tracking_token}"}, None
    if settings.tracking_username:
        return {}, (settings.tracking_username, settings.tracking_password)
    return {}, None


def _secret_line(item: dict[str, Any]) -> str:
    state = "active" if item.get("active") else "inactive"
    if item.get("revoked_at"):
        state = "revoked"
    expires = f"  expires {item['expires_at']}" if item.get("expires_at") else ""
    return f"{item.get('secret_id')}  {state:<8} created by {item.get('created_by')}{expires}"


def secrets_over_http(args: argparse.Namespace, settings: Settings) -> int:
    """``mlgate gates secrets add|rotate|revoke|list`` as the caller, through the server."""
    import httpx

    url = (args.url or settings.url).rstrip("/")
    headers, auth = _caller_credentials(settings)
    base = f"{url}/api/2.0/mlgate/gates/secrets"
    verb = args.secrets_command
    try:
        if verb == "list":
            response = httpx.get(
                f"{base}/list",
                params={"gate": args.gate},
                headers=headers,
                auth=auth,
                timeout=args.timeout,
            )
        else:
            body: dict[str, Any] = {"gate": args.gate}
            if verb == "rotate" and args.grace_seconds is not None:
                body["grace_seconds"] = args.grace_seconds
            if verb == "revoke":
                body["secret_id"] = args.secret_id
            response = httpx.post(
                f"{base}/{verb}", json=body, headers=headers, auth=auth, timeout=args.timeout
            )
    except httpx.HTTPError as exc:
        print(f"mlgate: cannot reach {url} (retry later): {exc}", file=sys.stderr)
        return EXIT_RETRY
    answer = _json_answer(response)
    if response.status_code != 200:
        print(
            f"mlgate: {response.status_code} {answer.get('error_code', '')}: "
            f"{answer.get('message', '')}",
            file=sys.stderr,
        )
        if response.status_code in (401, 403):
            return EXIT_AUTH_FAILED
        return EXIT_RETRY if response.status_code >= 500 else EXIT_REFUSED
    if args.json:
        print(msgspec.json.encode(answer).decode())
        return EXIT_OK
    items = answer.get("secrets") if verb == "list" else [answer.get("secret") or {}]
    for item in items or []:
        print(_secret_line(item))
        if item.get("secret"):
            # Shown once: the server keeps it sealed and never answers it again.
            print(f"secret {item['secret']}")
    return EXIT_OK


# --- promote (HTTP) ------------------------------------------------------------------------------


def promote(args: argparse.Namespace, settings: Settings) -> int:
    import httpx

    if not settings.gate_secret:
        print("mlgate: set MLGATE_GATE_SECRET to the gate's signing secret", file=sys.stderr)
        return 2
    url = (args.url or settings.url).rstrip("/")
    body = request_body(args)
    raw = msgspec.json.encode(body)
    # A fresh webhook-id per attempt: the server refuses a replayed id, while the idempotency
    # key makes a retried promotion return the first decision.
    headers = signed_headers(settings.gate_secret, f"msg_{uuid.uuid4().hex}", int(time.time()), raw)
    headers["content-type"] = "application/json"
    try:
        response = httpx.post(
            f"{url}/api/2.0/mlgate/gates/promote",
            content=raw,
            headers=headers,
            timeout=args.timeout,
        )
    except httpx.HTTPError as exc:
        print(f"mlgate: cannot reach {url} (retry later): {exc}", file=sys.stderr)
        return EXIT_RETRY
    answer = _json_answer(response)
    if "decision_id" not in answer:
        code = response.status_code
        print(
            f"mlgate: {code} {answer.get('error_code', '')}: {answer.get('message', '')}",
            file=sys.stderr,
        )
        if code in (401, 403):
            return EXIT_AUTH_FAILED
        if code == 429 or code >= 500:
            print("mlgate: the server could not answer now; retry later", file=sys.stderr)
            return EXIT_RETRY
        return EXIT_REFUSED
    if response.headers.get("idempotent-replayed", "").lower() == "true":
        # Said on stderr so --json output stays one JSON document.
        print(
            "mlgate: note: this is the stored decision of an earlier request with the same "
            f"idempotency key ({body['idempotency_key']}), not a new evaluation",
            file=sys.stderr,
        )
    print(msgspec.json.encode(answer).decode() if args.json else format_decision(answer))
    # The request's current state decides, not the state the decision was made in.
    return exit_code(answer, args.allow_pending)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def format_decision(d: dict[str, Any]) -> str:
    """A decision as a header and a table of its checks."""
    lines = [
        f"decision {d.get('decision_id')}  outcome: {str(d.get('outcome', '')).upper()}"
        + ("  (dry run)" if d.get("dry_run") else ""),
        f"gate     {d.get('policy_name')} v{d.get('policy_version')}  model {d.get('model')} "
        f"-> {d.get('target')}",
        f"run      {_cell(d.get('run_id'))}  version {_cell(d.get('version'))}  "
        f"digest {_cell(d.get('digest'))}",
        f"actor    {d.get('actor')}",
    ]
    if d.get("requested_by") and d.get("requested_by") != d.get("actor"):
        lines.append(f"requested by (claimed, unverified) {d['requested_by']}")
    if d.get("approval_request_id"):
        status = d.get("approval_status")
        shown = f"  status: {status}" if status else ""
        lines.append(f"approval request {d['approval_request_id']}{shown}")
    if d.get("supersedes"):
        lines.append(f"supersedes decision {d['supersedes']}")
    rows = [("CHECK", "OBSERVED", "EXPECTED", "VERDICT", "DETAIL")]
    for c in d.get("checks", []):
        rows.append(
            (
                c.get("name", ""),
                _cell(c.get("observed")),
                _cell(c.get("expected")),
                c.get("verdict", ""),
                c.get("detail") or "",
            )
        )
    widths = [min(max(len(r[i]) for r in rows), 40) for i in range(4)]
    for r in rows:
        cells = [r[i][:40].ljust(widths[i]) for i in range(4)]
        lines.append("  ".join([*cells, r[4]]).rstrip())
    return "\n".join(lines)
