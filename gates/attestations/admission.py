"""The admission oracle: are these bytes (or this model's target) approved for a target now?

"Digest" is the version's manifest digest, ``sha256:<hex>`` (registry.artifacts.manifest):
the one number that names every file and its hash. The answer is read from the live pointer
in one read transaction, never from a cache: yes only while the pointer resolves to a version
with those bytes AND the pointer's newest history row is a gated move that was attested. A
later move, an archive, a deleted alias or an administrator's override (which writes its own
history row) answers no from the next request on.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from gates.attestations import store
from gates.attestations.schemas import AdmissionOut
from gates.attestations.service import DIGEST_PREFIX, may_read, parse_digest, render
from gates.policies.rules import canonical_target
from registry import service as registry
from registry.validation import validate_model_name
from tracking.core.auth import ResourceScope
from tracking.core.clock import now_ms
from tracking.core.errors import InvalidParameter, ResourceNotFound


async def _answer_for(
    s: AsyncSession, model: str, target: str, digest: str | None, at: int
) -> AdmissionOut:
    shown = f"{DIGEST_PREFIX}{digest}" if digest else None
    try:
        live = await registry.live_pointer(s, model, target)
    except ResourceNotFound:
        return AdmissionOut(False, target, f"no registered model '{model}'", at, shown, model)
    if live.version is None:
        return AdmissionOut(False, target, f"nothing holds {target} of '{model}'", at, shown, model)
    held = f"{DIGEST_PREFIX}{live.digest}" if live.digest else None
    if digest is not None and live.digest != digest:
        return AdmissionOut(
            False,
            target,
            f"{target} of '{model}' holds version {live.version}, with other bytes",
            at,
            shown,
            model,
            str(live.version),
        )
    found = None
    if live.event_id is not None:
        found = await store.attestation_of_move(s, live.event_id, model, live.version, target)
    if found is None or found.manifest_digest != live.digest:
        return AdmissionOut(
            False,
            target,
            f"version {live.version} holds {target} of '{model}', but its last move onto it "
            "was not an attested gate promotion",
            at,
            held,
            model,
            str(live.version),
        )
    return AdmissionOut(
        True,
        target,
        f"version {live.version} holds {target} of '{model}' through attested decision "
        f"{found.decision_id}",
        at,
        held,
        model,
        str(live.version),
        render(found),
    )


async def admission(
    s: AsyncSession,
    *,
    target: str | None,
    digest: str | None,
    name: str | None,
    scope: ResourceScope | None,
) -> AdmissionOut:
    """Answer for ``digest`` (any visible model holding it on ``target``), for ``name`` (what
    its ``target`` holds), or both. Models the caller may not read count as absent."""
    canonical = canonical_target(target)
    if digest is None and name is None:
        raise InvalidParameter("Give 'digest' (sha256:<hex>), 'name', or both.")
    hexdigest = parse_digest(digest) if digest is not None else None
    model = validate_model_name(name, "name") if name is not None else None
    at = now_ms()
    if hexdigest is None:
        assert model is not None
        if not may_read(scope, model):
            return AdmissionOut(False, canonical, f"no registered model '{model}'", at)
        return await _answer_for(s, model, canonical, None, at)
    shown = f"{DIGEST_PREFIX}{hexdigest}"
    matches = await registry.versions_with_digest(s, hexdigest, model)
    models = sorted({m for m, _ in matches if may_read(scope, m)})
    refusal = None
    for candidate in models:
        answer = await _answer_for(s, candidate, canonical, hexdigest, at)
        if answer.allowed:
            return answer
        refusal = refusal or answer
    if refusal is not None and len(models) == 1:
        return refusal
    where = f" of '{model}'" if model else ""
    return AdmissionOut(
        False,
        canonical,
        f"no version{where} with these bytes holds {canonical} through an attested promotion",
        at,
        shown,
        model,
    )
