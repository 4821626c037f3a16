"""Dependency-free promote client that the server serves to CI runners (stdlib only).

Served at ``GET /api/2.0/mlgate/clients/promote.py`` so a stock runner can run
``curl -fsS "$MLGATE_URL/api/2.0/mlgate/clients/promote.py" | python3 - --model M --run R --to T``
without mlgate installed. It speaks to the same endpoint as ``mlgate promote``, signs the same
way (Standard Webhooks HMAC-SHA256 with ``MLGATE_GATE_SECRET``) or, with no secret at all,
sends the CI job's OIDC token (``MLGATE_OIDC_TOKEN``, or one requested from GitHub Actions for
the audience ``MLGATE_OIDC_AUDIENCE``; the job needs ``permissions: id-token: write``) to a
gate that trusts the CI's issuer, derives the same default
idempotency key and exits with the same codes: 0 passed or approved, 1 refused, 2 usage,
3 pending, 4 expired, 5 rejected, 6 cancelled, 7 failed. It must never import anything outside
the standard library: it runs where mlgate is not installed.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import hmac
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from typing import Any

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_PENDING = 0, 1, 2, 3
EXIT_EXPIRED, EXIT_REJECTED, EXIT_CANCELLED, EXIT_APPROVAL_FAILED = 4, 5, 6, 7
# Authentication failed (401/403); the server could not answer now (unreachable, 429, 5xx).
EXIT_AUTH_FAILED, EXIT_RETRY = 8, 9
CLOSED_EXIT_CODES = {
    "expired": EXIT_EXPIRED,
    "rejected": EXIT_REJECTED,
    "cancelled": EXIT_CANCELLED,
    "failed": EXIT_APPROVAL_FAILED,
}
PROMOTE_PATH = "/api/2.0/mlgate/gates/promote"
SECRET_PREFIX = "whsec_"  # noqa: S105 - the public marker of a Standard Webhooks secret


def secret_key(secret: str) -> bytes:
    raw = secret[len(SECRET_PREFIX) :] if secret.startswith(SECRET_PREFIX) else secret
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        return raw.encode()


def signed_headers(secret: str, webhook_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    signed = webhook_id.encode() + b"." + str(timestamp).encode() + b"." + body
    mac = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": "v1," + base64.b64encode(mac).decode(),
    }


def github_oidc_token(audience: str, timeout: float) -> str:
    """A GitHub Actions job's OIDC token for ``audience`` (from the runner's token service)."""
    base = os.environ.get("ACTIONS_ID_TOKEN_REQUEST_URL", "")
    bearer = os.environ.get("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "")
    if not base.startswith(("http://", "https://")) or not bearer:
        raise OSError(
            "no OIDC token: set MLGATE_OIDC_TOKEN, or run in GitHub Actions with "
            "`permissions: id-token: write`"
        )
    sep = "&" if "?" in base else "?"
    url = f"{base}{sep}audience={urllib.parse.quote(audience, safe='')}"
    request = urllib.request.Request(url, headers={"Authorization": f"bearer {bearer}"})  # noqa: S310
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
        try:
            answer = json.loads(response.read())
        except ValueError as exc:
            raise OSError(f"the runner's token service answered no JSON ({exc})") from None
    value = answer.get("value") if isinstance(answer, dict) else None
    if not isinstance(value, str) or not value:
        raise OSError("the runner's token service answered no token")
    return value


def auth_headers(raw: bytes, timeout: float) -> dict[str, str]:
    """HMAC signature headers with MLGATE_GATE_SECRET, else the CI's OIDC token as a bearer."""
    secret = os.environ.get("MLGATE_GATE_SECRET", "")
    if secret:
        # A fresh webhook-id per attempt (the server refuses a replayed id); the idempotency
        # key makes a retried promotion return the first decision.
        return signed_headers(secret, f"msg_{uuid.uuid4().hex}", int(time.time()), raw)
    token = os.environ.get("MLGATE_OIDC_TOKEN", "")
    audience = os.environ.get("MLGATE_OIDC_AUDIENCE", "")
    if not token and audience:
        token = github_oidc_token(audience, timeout)
    if not token:
        raise ValueError(
            "set MLGATE_GATE_SECRET (the gate's signing secret), or MLGATE_OIDC_TOKEN or "
            "MLGATE_OIDC_AUDIENCE for a gate that trusts the CI's OIDC issuer"
        )
    return {"Authorization": f"Bearer {token}"}


def default_idempotency_key(model: str, subject: str, target: str) -> str:
    digest = hashlib.sha256(f"{model}\0{subject}\0{target}".encode()).hexdigest()[:32]
    return f"promote-{digest}"


def request_body(args: argparse.Namespace) -> dict[str, Any]:
    """The promote request's JSON body from the command's flags (shared with ``mlgate promote``)."""
    subject = f"run:{args.run}" if args.run else f"version:{args.version}"
    body: dict[str, Any] = {
        "model": args.model,
        "target": args.target,
        "dry_run": bool(args.dry_run),
        "artifact_path": args.artifact_path,
        "idempotency_key": args.idempotency_key
        or default_idempotency_key(args.model, subject, args.target),
    }
    if args.run:
        body["run_id"] = args.run
    else:
        body["version"] = args.version
    if args.requested_by:
        body["requested_by"] = args.requested_by
    if args.reopen:
        body["reopen"] = True
    return body


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="promote.py", description="ask an mlgate gate to promote")
    p.add_argument("--model", required=True, help="registered model name")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--run", help="run id whose model to register and promote")
    which.add_argument("--version", help="an existing model version to promote")
    p.add_argument("--to", dest="target", required=True, help="stage or @alias")
    p.add_argument("--dry-run", action="store_true", help="evaluate only")
    p.add_argument("--url", help="mlgate server (env MLGATE_URL)")
    p.add_argument("--artifact-path", default="model", help="model path inside the run")
    p.add_argument("--idempotency-key", help="default: derived from model, run/version, target")
    p.add_argument("--requested-by", help="who asked; recorded as an unverified claim")
    p.add_argument("--reopen", action="store_true", help="ask again when the request is closed")
    p.add_argument("--allow-pending", action="store_true", help="exit 0 when approvals pend")
    p.add_argument("--json", action="store_true", help="print the decision as JSON")
    p.add_argument("--timeout", type=float, default=60.0, help="HTTP timeout in seconds")
    return p.parse_args(argv)


def summary(d: dict[str, Any]) -> str:
    lines = [
        f"decision {d.get('decision_id')}  outcome: {str(d.get('outcome', '')).upper()}"
        + ("  (dry run)" if d.get("dry_run") else ""),
        f"gate     {d.get('policy_name')} v{d.get('policy_version')}  model {d.get('model')} "
        f"-> {d.get('target')}",
        f"run      {d.get('run_id') or '-'}  version {d.get('version') or '-'}  "
        f"digest {d.get('digest') or '-'}",
    ]
    if d.get("approval_request_id"):
        lines.append(
            f"approval request {d['approval_request_id']}  status: {d.get('approval_status')}"
        )
    for c in d.get("checks", []):
        lines.append(
            f"  {c.get('verdict', ''):5}  {c.get('name', '')}  observed {c.get('observed')}  "
            f"expected {c.get('expected')}  {c.get('detail') or ''}".rstrip()
        )
    return "\n".join(lines)


def exit_code(answer: dict[str, Any], allow_pending: bool) -> int:
    outcome = answer.get("outcome")
    if outcome == "passed":
        return EXIT_OK
    if outcome == "pending_approval":
        status = answer.get("approval_status") or "pending"
        if status == "approved":
            return EXIT_OK
        if status in CLOSED_EXIT_CODES:
            return CLOSED_EXIT_CODES[status]
        return EXIT_OK if allow_pending else EXIT_PENDING
    return EXIT_REFUSED


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    url = (args.url or os.environ.get("MLGATE_URL") or "").rstrip("/")
    if not url.startswith(("http://", "https://")):
        print("promote.py: set MLGATE_URL (or --url) to the server's http(s) URL", file=sys.stderr)
        return EXIT_USAGE
    body = request_body(args)
    raw = json.dumps(body, separators=(",", ":")).encode()
    try:
        headers = auth_headers(raw, args.timeout)
    except ValueError as exc:
        print(f"promote.py: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"promote.py: cannot get the OIDC token (retry later): {exc}", file=sys.stderr)
        return EXIT_RETRY
    headers["content-type"] = "application/json"
    # The scheme was checked above (http or https only).
    request = urllib.request.Request(  # noqa: S310
        url + PROMOTE_PATH, data=raw, headers=headers, method="POST"
    )
    replayed = False
    try:
        with urllib.request.urlopen(request, timeout=args.timeout) as response:  # noqa: S310
            status, text = response.status, response.read().decode("utf-8", "replace")
            replayed = response.headers.get("idempotent-replayed", "").lower() == "true"
    except urllib.error.HTTPError as exc:
        status, text = exc.code, exc.read().decode("utf-8", "replace")
        replayed = (exc.headers.get("idempotent-replayed") or "").lower() == "true"
    except (urllib.error.URLError, OSError) as exc:
        print(f"promote.py: cannot reach {url} (retry later): {exc}", file=sys.stderr)
        return EXIT_RETRY
    try:
        answer = json.loads(text)
    except ValueError:
        answer = {"message": text}
    if not isinstance(answer, dict) or "decision_id" not in answer:
        answer = answer if isinstance(answer, dict) else {}
        print(
            f"promote.py: {status} {answer.get('error_code', '')}: {answer.get('message', '')}",
            file=sys.stderr,
        )
        if status in (401, 403):
            return EXIT_AUTH_FAILED
        if status == 429 or status >= 500:
            print("promote.py: the server could not answer now; retry later", file=sys.stderr)
            return EXIT_RETRY
        return EXIT_REFUSED
    if replayed:
        # On stderr, so --json output stays one JSON document.
        print(
            "promote.py: note: this is the stored decision of an earlier request with the same "
            f"idempotency key ({body['idempotency_key']}), not a new evaluation",
            file=sys.stderr,
        )
    print(json.dumps(answer) if args.json else summary(answer))
    return exit_code(answer, args.allow_pending)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
