"""A promotion's reads before its write transaction: the gate, the caller's proof, the run.

The transaction of a promotion is held from its first statement to its COMMIT, and each
statement in it waits for its event loop to come back to it, which under load takes other
requests' CPU slices. So what needs no lock is read before BEGIN, on a read session: the gate
guarding the target, the caller's signature or token checked against it (a replay receipt is
still recorded inside the transaction), the run with what the checks and the source check read
of it, the model with the run's versions, and the frozen copy of the files a new version would
register (copied and hashed, which also must hold no lock). None of these reads took a lock
inside the transaction either: under READ COMMITTED each statement reads its own snapshot, so
reading them a few milliseconds earlier changes no guarantee (the model's row is locked, and a
deleted model refused, by the registration and the move themselves).

An error of the gate or caller checks is raised here, in the order the transaction raised it.
Anything else that fails here is left to the transaction, which reads it again and fails (or
returns a stored decision) exactly as it did before.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from gates.events.signing import SecretBox
from gates.policies import oidc_trusts, ports, service
from gates.policies.evaluation import Candidate
from gates.policies.ports import Actor
from gates.policies.promotion.callers import (
    Caller,
    identify,
)
from gates.policies.promotion.candidates import create_request, load_candidate
from gates.policies.schemas import PromoteRequest
from gates.policies.signatures import SignedRequest
from registry import service as registry
from registry.artifacts.storage import ArtifactStorage
from registry.service import VersionFingerprint
from tracking.core.errors import MlflowError


@dataclass(frozen=True, slots=True)
class Prepared:
    """What :func:`prepare` read: the gate, the proved caller, and (for a run's promotion
    that is not a retry) the candidate and its files' fingerprint, when they could be read."""

    model: str
    target: str
    gate: service.ResolvedGate
    caller: Caller
    candidate: Candidate | None = None
    fingerprint: VersionFingerprint | None = None


async def prepare(
    s: AsyncSession,
    req: PromoteRequest,
    *,
    raw_body: bytes,
    signed: SignedRequest | None,
    bearer: Actor | None,
    storage: ArtifactStorage | None,
    oidc: oidc_trusts.OidcCaller | None = None,
    secret_box: SecretBox = service.UNSEALED,
) -> Prepared:
    """Read (on a read session) what a promotion needs before its transaction; see above."""
    model, target, gate, caller = await identify(
        s,
        req,
        signed=signed,
        raw_body=raw_body,
        bearer=bearer,
        oidc=oidc,
        secret_box=secret_box,
    )
    prepared = Prepared(model, target, gate, caller)
    if req.run_id is None:
        return prepared
    # A retry of a stored key (rare) is not looked for here: that read would cost every
    # promotion a statement, and a retry's candidate and fingerprint are simply not used
    # (its frozen copy exists already, so publishing it again only links and unlinks).
    try:
        candidate = await load_candidate(s, req, model, target)
    except MlflowError:
        return prepared
    fingerprint = None
    if not req.dry_run and candidate.version is None:
        known = registry.KnownSource(model=candidate.model_row, run=candidate.run)
        with contextlib.suppress(MlflowError):
            create = create_request(req, model, req.run_id)
            fingerprint = await ports.fingerprint_for(s, storage, create, known=known)
    return Prepared(model, target, gate, caller, candidate, fingerprint)
