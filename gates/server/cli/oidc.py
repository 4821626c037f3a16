"""``mlgate oidc-trust add|list|remove``: the OIDC issuers a gate trusts, through the server.

Like ``mlgate gates secrets``, these act through the HTTP API as the caller (an administrator,
with ``MLFLOW_TRACKING_TOKEN`` or ``MLFLOW_TRACKING_USERNAME``/``PASSWORD``), so every change
is the caller's and audited as theirs. Claim rules are ``--claim name=glob`` (repeat a name to
allow several values): ``--claim repository=octo/fraud --claim ref=refs/heads/main``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import msgspec

from gates.policies.promote_client import (
    EXIT_AUTH_FAILED,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_RETRY,
    EXIT_USAGE,
)
from gates.server.cli.family import Family, Subcommands
from gates.server.cli.over_http import caller_credentials, error_line, json_answer
from tracking.core.settings import Settings

COMMANDS = ("oidc-trust",)
TRUST_PATH = "/api/2.0/mlgate/gates/oidc"


def add_commands(sub: Subcommands) -> None:
    """Register ``mlgate oidc-trust`` on the main parser's subcommands."""
    trust = sub.add_parser(
        "oidc-trust",
        help="the OIDC issuers (CI identity) a gate trusts, through the server (admin)",
        description="Acts through the HTTP API with MLFLOW_TRACKING_TOKEN or "
        "MLFLOW_TRACKING_USERNAME/PASSWORD, like `gates secrets`.",
    )
    verbs = trust.add_subparsers(dest="oidc_command", required=True)
    add = verbs.add_parser("add", help="trust an issuer's tokens for an audience and claims")
    add.add_argument(
        "--issuer", required=True, help="e.g. https://token.actions.githubusercontent.com"
    )
    add.add_argument("--audience", required=True, help="the aud CI requests for this server")
    add.add_argument(
        "--claim",
        action="append",
        required=True,
        metavar="NAME=GLOB",
        help="a claim and an allowed value (* and ? globs); repeat for more",
    )
    listing = verbs.add_parser("list", help="list the gate's trusts (removed ones too)")
    remove = verbs.add_parser("remove", help="stop trusting one (tokens are refused at once)")
    remove.add_argument("--trust-id", required=True)
    for p in (add, listing, remove):
        p.add_argument("--gate", required=True, help="the gate's name")
        p.add_argument("--json", action="store_true", help="print the answer as JSON")
        p.add_argument("--url", help="mlgate server (env MLGATE_URL)")
        p.add_argument("--timeout", type=float, default=60.0, help="HTTP timeout in seconds")


def parse_claims(pairs: list[str]) -> dict[str, list[str]]:
    """``["repository=octo/fraud", "ref=refs/heads/main"]`` as claim rules (checked again by
    the server, which is the one that validates them)."""
    rules: dict[str, list[str]] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip() or not value:
            raise ValueError(f"--claim {pair!r}: expected NAME=GLOB")
        rules.setdefault(name.strip(), []).append(value)
    return rules


def _line(t: dict[str, Any]) -> str:
    state = "active" if t.get("active") else "removed"
    claims = " ".join(
        f"{name}={'|'.join(values)}" for name, values in (t.get("claims") or {}).items()
    )
    return (
        f"{t.get('trust_id')}  {state:<7} {t.get('issuer')}  aud={t.get('audience')}  "
        f"{claims}  created by {t.get('created_by')}"
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    import httpx

    url = (args.url or settings.url).rstrip("/")
    headers, auth = caller_credentials(settings)
    verb = args.oidc_command
    try:
        body: dict[str, Any] = {"gate": args.gate}
        if verb == "add":
            body |= {"issuer": args.issuer, "audience": args.audience}
            body["claims"] = parse_claims(args.claim)
        elif verb == "remove":
            body["trust_id"] = args.trust_id
    except ValueError as exc:
        print(f"mlgate: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        if verb == "list":
            response = httpx.get(
                f"{url}{TRUST_PATH}/list",
                params=body,
                headers=headers,
                auth=auth,
                timeout=args.timeout,
            )
        else:
            response = httpx.post(
                f"{url}{TRUST_PATH}/{verb}",
                json=body,
                headers=headers,
                auth=auth,
                timeout=args.timeout,
            )
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
    items = answer.get("trusts") or [] if verb == "list" else [answer.get("trust") or {}]
    for item in items:
        print(_line(item))
    return EXIT_OK


FAMILY = Family(commands=COMMANDS, add_commands=add_commands, run=run)
