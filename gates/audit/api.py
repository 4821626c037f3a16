"""Litestar controller for reading the audit trail (mlgate API)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from litestar import Request, Response, get, post

from gates.audit import checkpoints, service
from gates.audit.schemas import AuditQuery, AuditVerifyQuery
from registry.artifacts.api import artifact_storage
from tracking.core.auth import ADMIN, PUBLIC, permission_opt
from tracking.core.errors import InvalidParameter, ResourceNotFound
from tracking.core.http import database
from tracking.core.signing import SIGNING_KEY_STATE_KEY, SigningKey
from tracking.core.wire import ok, read_query

Req = Request[Any, Any, Any]

# The trail records every actor and decision: administrators only.
ADMIN_ONLY = permission_opt(ADMIN)


@get("/audit", opt=ADMIN_ONLY)
async def search_audit(request: Req) -> Response[bytes]:
    q = read_query(request, AuditQuery)
    async with database(request).read() as s:
        entries, token = await service.search(
            s,
            kind=q.kind,
            subject=q.subject,
            max_results=q.max_results,
            page_token=q.page_token,
        )
    out: dict[str, Any] = {"entries": entries}
    if token:
        out["next_page_token"] = token
    return ok(out)


@get("/audit/verify", opt=ADMIN_ONLY)
async def verify_audit(request: Req) -> Response[bytes]:
    """Walk the hash chain (a bounded window per call) and name the first entry that fails."""
    q = read_query(request, AuditVerifyQuery)
    limit = service.MAX_VERIFY_WINDOW if q.max_entries is None else q.max_entries
    if not 1 <= limit <= service.MAX_VERIFY_WINDOW:
        raise InvalidParameter(
            f"max_entries must be between 1 and {service.MAX_VERIFY_WINDOW}, got {limit}."
        )
    if q.after_seq < 0:
        raise InvalidParameter(f"after_seq must be 0 or more, got {q.after_seq}.")
    result = await service.verify_window(database(request), q.after_seq, limit)
    out: dict[str, Any] = {
        "ok": result.ok,
        "after_seq": result.after_seq,
        "checked": result.checked,
        "last_seq": result.last_seq,
        "last_hash": result.last_hash,
    }
    if result.bad_seq is not None:
        out["first_bad_seq"] = result.bad_seq
        out["reason"] = result.reason
    if result.next_after_seq is not None:
        out["next_after_seq"] = result.next_after_seq
    return ok(out)


def _signing_key(request: Req) -> SigningKey:
    key: SigningKey = request.app.state[SIGNING_KEY_STATE_KEY]
    return key


# Public, like a transparency log's signed head: it names only an entry's seq and hash, and
# monitors outside the deployment should be able to poll and keep it without credentials.
@get("/audit/checkpoint", opt=permission_opt(PUBLIC))
async def get_checkpoint(request: Req) -> Response[bytes]:
    """The newest checkpoint kept in the artifact store (never re-signed from the database, so
    a cut tail cannot pull it back)."""
    cp = await checkpoints.read_latest(artifact_storage(request))
    if cp is None:
        raise ResourceNotFound(
            "No audit checkpoint has been written yet (see MLGATE_AUDIT_CHECKPOINT_INTERVAL)."
        )
    return ok({"checkpoint": cp.to_dict()})


@post("/audit/checkpoint", status_code=200, opt=ADMIN_ONLY)
async def write_checkpoint(request: Req) -> Response[bytes]:
    """Sign the head now and write it to the artifact store (and the checkpoint directory)."""
    directory = request.app.state["settings"].audit_checkpoint_dir
    cp = await checkpoints.checkpoint_now(
        database(request),
        artifact_storage(request),
        _signing_key(request),
        Path(directory) if directory else None,
    )
    return ok({"checkpoint": cp.to_dict()})


@get("/keys", opt=permission_opt(PUBLIC))
async def list_keys(request: Req) -> Response[bytes]:
    """The server's public keys by id: the current one, and every earlier one kept in the store."""
    key = _signing_key(request)
    keys = await checkpoints.store_public_keys(artifact_storage(request))
    keys[key.key_id] = key.public
    out = [
        {
            "key_id": k.key_id,
            "algorithm": "Ed25519",
            "public_key_pem": k.pem,
            "current": k.key_id == key.key_id,
        }
        for k in sorted(keys.values(), key=lambda k: k.key_id)
    ]
    return ok({"keys": out})


# Mounted under /api/2.0/mlgate.
MLGATE_ROUTE_HANDLERS = [search_audit, verify_audit, get_checkpoint, write_checkpoint, list_keys]
