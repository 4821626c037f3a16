"""A Kubernetes ValidatingAdmissionWebhook that admits a pod only if mlgate approves its model.

A pod opts in with the label ``mlgate.dev/verify: "true"`` (the webhook configuration's
objectSelector) and names the bytes it serves and where they must be approved::

    metadata:
      labels: {mlgate.dev/verify: "true"}
      annotations:
        mlgate.dev/model-digest: sha256:<manifest digest>   # GET .../models/resolve gives it
        mlgate.dev/target: Production                       # or @champion

For each such pod this asks mlgate's admission oracle
(``GET /api/2.0/mlgate/admission?digest=...&target=...``) and admits the pod only on
``"allowed": true``. Everything else is a denial: a missing annotation, a "no", an oracle
that cannot be reached or answers an error (fail closed; the configuration also says
``failurePolicy: Fail``). Standard library only, so it runs on any Python 3.11 image.

Settings (environment): MLGATE_URL (the server), MLGATE_TOKEN_FILE (an API token of a reader
of the models, optional with authentication off), TLS_CERT_FILE / TLS_KEY_FILE (the serving
certificate the API server trusts; without them it serves plain HTTP, for tests only).
"""

from __future__ import annotations

import json
import os
import ssl
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

DIGEST_ANNOTATION = "mlgate.dev/model-digest"
TARGET_ANNOTATION = "mlgate.dev/target"
ORACLE_PATH = "/api/2.0/mlgate/admission"
MAX_REVIEW_BYTES = 4 * 1024 * 1024
TIMEOUT_SECONDS = 5

Oracle = Callable[[str, str], dict[str, Any]]


def oracle_client(base_url: str, token: str | None) -> Oracle:
    """Ask the oracle; raises on anything but a 200 JSON answer."""
    if urllib.parse.urlsplit(base_url).scheme not in ("http", "https"):
        raise ValueError(f"MLGATE_URL must be an http(s) URL, not {base_url!r}")

    def ask(digest: str, target: str) -> dict[str, Any]:
        query = urllib.parse.urlencode({"digest": digest, "target": target})
        url = f"{base_url.rstrip('/')}{ORACLE_PATH}?{query}"
        request = urllib.request.Request(url)  # noqa: S310 - the scheme is checked above
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as answer:  # noqa: S310 - http(s), checked
            body: dict[str, Any] = json.loads(answer.read())
        return body

    return ask


def decide(review: dict[str, Any], oracle: Oracle) -> dict[str, Any]:
    """The AdmissionReview response for ``review`` (admission.k8s.io/v1)."""
    request = review.get("request") or {}
    uid = request.get("uid", "")
    pod = request.get("object") or {}
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    digest = annotations.get(DIGEST_ANNOTATION)
    target = annotations.get(TARGET_ANNOTATION)
    if not digest or not target:
        return _response(
            uid, False, f"set the {DIGEST_ANNOTATION} and {TARGET_ANNOTATION} annotations"
        )
    try:
        answer = oracle(digest, target)
    except (OSError, ValueError) as exc:  # URLError and HTTPError are OSErrors
        return _response(uid, False, f"mlgate could not be asked ({exc}); refusing")
    allowed = answer.get("allowed") is True
    reason = str(answer.get("reason") or "")
    if allowed:
        return _response(uid, True, f"mlgate: {reason}")
    return _response(uid, False, f"mlgate does not approve {digest} for {target}: {reason}")


def _response(uid: str, allowed: bool, message: str) -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": {
            "uid": uid,
            "allowed": allowed,
            "status": {"code": 200 if allowed else 403, "message": message[:1000]},
        },
    }


def handler_for(oracle: Oracle) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            if self.path != "/validate" or not 0 < length <= MAX_REVIEW_BYTES:
                self.send_error(400 if self.path == "/validate" else 404)
                return
            try:
                review = json.loads(self.rfile.read(length))
            except ValueError:
                self.send_error(400)
                return
            body = json.dumps(decide(review, oracle)).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path != "/healthz":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:
            sys.stderr.write(f"admission: {format % args}\n")

    return Handler


def main() -> int:
    env = os.environ
    token = None
    if env.get("MLGATE_TOKEN_FILE"):
        with open(env["MLGATE_TOKEN_FILE"]) as f:
            token = f.read().strip()
    port = int(env.get("PORT", "8443"))
    server = ThreadingHTTPServer(
        ("0.0.0.0", port),
        handler_for(oracle_client(env.get("MLGATE_URL", "http://mlgate"), token)),
    )
    if env.get("TLS_CERT_FILE"):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(env["TLS_CERT_FILE"], env.get("TLS_KEY_FILE"))
        server.socket = context.wrap_socket(server.socket, server_side=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
