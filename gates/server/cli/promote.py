"""``mlgate promote``: the CI client, which signs its HTTP call with the gate secret."""

from __future__ import annotations

import argparse
import sys
import time
import uuid
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
from gates.server.cli.family import Family, Subcommands
from gates.server.cli.over_http import error_line, json_answer
from tracking.core.settings import Settings


def add_commands(sub: Subcommands) -> None:
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


def _refused(status_code: int, answer: dict[str, Any]) -> int:
    print(error_line(status_code, answer), file=sys.stderr)
    if status_code in (401, 403):
        return EXIT_AUTH_FAILED
    if status_code == 429 or status_code >= 500:
        print("mlgate: the server could not answer now; retry later", file=sys.stderr)
        return EXIT_RETRY
    return EXIT_REFUSED


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
    answer = json_answer(response)
    if "decision_id" not in answer:
        return _refused(response.status_code, answer)
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


def _header(d: dict[str, Any]) -> list[str]:
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
    return lines


def format_decision(d: dict[str, Any]) -> str:
    """A decision as a header and a table of its checks."""
    lines = _header(d)
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


FAMILY = Family(commands=("promote",), add_commands=add_commands, run=promote)
