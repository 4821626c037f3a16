"""Litestar controllers: a version's attestations, the published keys, the admission oracle."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get

from gates.attestations import service
from gates.attestations.admission import admission as answer_admission
from gates.attestations.keys import ATTESTATION_KEYS_STATE_KEY, AttestationKeyring
from gates.attestations.schemas import AdmissionQuery, ListAttestations
from tracking.core.auth import PUBLIC, Permission, permission_opt, visibility
from tracking.core.http import database
from tracking.core.wire import ok, read_query

Req = Request[Any, Any, Any]
R = Response[bytes]

WELL_KNOWN_KEYS_PATH = "/.well-known/mlgate/attestation-keys"


def keyring(request: Req) -> AttestationKeyring | None:
    found = request.app.state.get(ATTESTATION_KEYS_STATE_KEY)
    return found if isinstance(found, AttestationKeyring) else None


@get("/attestations", opt=permission_opt(Permission("registered_model", "read", "name")))
async def list_attestations(request: Req) -> R:
    q = read_query(request, ListAttestations)
    async with database(request).read() as s:
        items = await service.list_attestations(s, q.name, q.version)
    return ok({"attestations": items})


@get("/admission", opt=permission_opt(Permission("registered_model", "read", filtered=True)))
async def admission(request: Req) -> R:
    q = read_query(request, AdmissionQuery)
    async with database(request).read() as s:
        answer = await answer_admission(
            s,
            target=q.target,
            digest=q.digest,
            name=q.name,
            scope=visibility(request, "registered_model"),
        )
    return ok(answer)


@get(WELL_KNOWN_KEYS_PATH, opt=permission_opt(PUBLIC))
async def attestation_keys(request: Req) -> R:
    async with database(request).read() as s:
        keys = await service.published_keys(s, keyring(request))
    return ok(keys)


# Mounted under MLGATE_API_PREFIX.
MLGATE_ROUTE_HANDLERS = [list_attestations, admission]
# Mounted at the root.
ROOT_ROUTE_HANDLERS = [attestation_keys]
