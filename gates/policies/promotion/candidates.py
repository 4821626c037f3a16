"""What a promotion promotes: the run (or version) it names, and the version it registers."""

from __future__ import annotations

import contextlib

from sqlalchemy.ext.asyncio import AsyncSession

from gates.policies import ports
from gates.policies.evaluation import Candidate, load_run
from gates.policies.schemas import PromoteRequest
from registry import service as registry
from registry.artifacts.paths import parse_artifact_path
from registry.artifacts.storage import ArtifactStorage
from registry.errors import RegisteredModelAlreadyExists
from registry.schemas import CreateModelVersion, CreateRegisteredModel
from registry.service import VersionFingerprint
from tracking.core.auth import ANONYMOUS
from tracking.core.errors import ResourceNotFound


async def load_candidate(
    s: AsyncSession,
    req: PromoteRequest,
    model: str,
    target: str,
) -> Candidate:
    """The version or run the request names, with what the checks read of it (reads only)."""
    if req.version is not None:
        mv = await registry.get_model_version(s, model, req.version)
        run = None
        if mv.run_id:
            try:
                run = await load_run(s, mv.run_id)
            except ResourceNotFound:
                run = None
        number = int(mv.version)
        digest = await ports.version_digest(s, model, number)
        return Candidate(
            model,
            target,
            run,
            number,
            digest,
            digest_checked=True,
            version_tags={t.key: t.value for t in mv.tags},
            # With auth off every version is the anonymous actor's: that names nobody.
            version_author=mv.user_id if mv.user_id and mv.user_id != ANONYMOUS else None,
        )
    assert req.run_id is not None
    run = await load_run(s, req.run_id)
    candidate = Candidate(model, target, run)
    candidate.model_row, versions = await registry.run_versions(s, model, run.info.run_id)
    candidate.model_exists = candidate.model_row is not None
    candidate.related_versions = [int(v.version) for v in versions]
    source = f"runs:/{run.info.run_id}/{parse_artifact_path(req.artifact_path).posix}"
    same = [v for v in versions if v.source == source]
    if same:
        # Promoting a run again (Staging, then Production) moves the version it already has,
        # so what reaches Production is the version that passed Staging, not a copy of it.
        candidate.version = int(same[0].version)
        candidate.version_tags = {t.key: t.value for t in same[0].tags}
        candidate.digest = await ports.version_digest(s, model, candidate.version)
        candidate.digest_checked = True
    return candidate


class Savepoint:
    """The savepoint a registration ran in, or None when it needed none (see below)."""

    def __init__(self, s: AsyncSession, tx: object | None, events: int) -> None:
        self._s = s
        self._tx = tx
        # The events held when it began (see gates.events: batched): a rollback drops later ones.
        self._events = events

    async def commit(self) -> None:
        if self._tx is not None:
            await self._tx.commit()  # type: ignore[attr-defined]

    async def rollback(self) -> None:
        assert self._tx is not None, "a registration without a savepoint cannot fail its digest"
        await self._tx.rollback()  # type: ignore[attr-defined]
        ports.drop_events_after(self._s, self._events)


async def register_candidate(
    s: AsyncSession,
    req: PromoteRequest,
    model: str,
    candidate: Candidate,
    storage: ArtifactStorage | None,
    actor: str,
    fingerprint: VersionFingerprint | None,
) -> Savepoint:
    """Register the run's version inside a savepoint, so a missing digest can undo it.

    Only the digest check can change after registering (every other check has passed), so
    with a fingerprint taken before the transaction, of an existing model and with a digest,
    nothing can undo the registration: it then runs without a savepoint (two statements)."""
    assert candidate.run is not None
    certain = candidate.model_exists and fingerprint is not None and bool(fingerprint.digest)
    events = ports.events_held(s)
    tx = None if certain else await s.begin_nested()
    if not candidate.model_exists:
        with contextlib.suppress(RegisteredModelAlreadyExists):
            await registry.create_registered_model(
                s, CreateRegisteredModel(name=model), actor=actor
            )
        fingerprint = None  # taken before the model existed: the location was not checked
    create = create_request(req, model, candidate.run.info.run_id)
    # The model's row and the run (with its model outputs) were read for this request: the
    # source check resolves against them instead of reading them again.
    known = registry.KnownSource(model=candidate.model_row, run=candidate.run)
    if fingerprint is None:
        fingerprint = await ports.fingerprint_for(s, storage, create, known=known)
    # create_model_version refuses a fingerprint of another location than the source's.
    _, candidate.version = await registry.register_version(
        s, create, actor=actor, fingerprint=fingerprint, known=known
    )
    candidate.digest = fingerprint.digest if fingerprint is not None else None
    candidate.digest_checked = True
    return Savepoint(s, tx, events)


def create_request(req: PromoteRequest, model: str, run_id: str) -> CreateModelVersion:
    source = f"runs:/{run_id}/{parse_artifact_path(req.artifact_path).posix}"
    return CreateModelVersion(name=model, source=source, run_id=run_id)
