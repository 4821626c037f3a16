"""Litestar controller for reading the audit trail (mlgate API)."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get

from gates.audit import service
from gates.audit.schemas import AuditQuery
from tracking.core.auth import ADMIN, permission_opt
from tracking.core.http import database
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


# Mounted under /api/2.0/mlgate.
MLGATE_ROUTE_HANDLERS = [search_audit]
