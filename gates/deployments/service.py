"""Deployments: the watch answer, replicas' reports, desired versus actual, drift transitions.

A deployment follows one pointer of one model (``models:/name/Stage`` or ``models:/name@alias``).
What it should run ("desired") is always read from the registry; what it runs ("actual") is
what each replica last reported. Drift is decided from the database alone, so every server
replica may check it, and the compare-and-set updates in ``store`` give each transition (and
its one ``deployment.drift`` or ``deployment.converged`` event) a single winner.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

import registry.service
from gates.deployments import store
from gates.deployments.models import DEPLOYMENT_NAME_LEN, REPLICA_ID_LEN
from gates.deployments.schemas import (
    DeploymentOut,
    DesiredOut,
    ReplicaOut,
    ReportBody,
    WatchOut,
)
from gates.events import service as events
from registry.artifacts.paths import parse_artifact_uri
from registry.service import PointerState
from registry.validation import canonical_stage, parse_version, validate_alias
from tracking.core.clock import now_ms
from tracking.core.errors import InvalidParameter, ResourceAlreadyExists, ResourceNotFound

DEFAULT_WATCH_TIMEOUT = 30.0
# A long-poll holds a socket and a watcher slot; proxies commonly cut idle requests at 60 s.
MAX_WATCH_TIMEOUT = 60.0
# A replica silent this long is shown as stale and left out of drift: it was probably scaled
# away, and would otherwise hold its deployment in drift for ever. The reference loader
# reports after every watch answer, so a live one is never silent for more than a minute.
STALE_AFTER_MS = 10 * 60 * 1000
_DIGEST = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True, slots=True)
class Target:
    """A checked pointer: a canonical stage name, or an alias."""

    kind: str  # 'stage' | 'alias'
    value: str

    @property
    def stage(self) -> str | None:
        return self.value if self.kind == "stage" else None

    @property
    def alias(self) -> str | None:
        return self.value if self.kind == "alias" else None


def parse_target(stage: str | None, alias: str | None) -> Target:
    """Exactly one of ``stage`` (any case) or ``alias``, checked."""
    if (stage is None or stage == "") == (alias is None or alias == ""):
        raise InvalidParameter("Exactly one of 'stage' or 'alias' must be given.")
    if stage:
        return Target("stage", canonical_stage(stage))
    return Target("alias", validate_alias(alias))


def watch_timeout(raw: float | None) -> float:
    if raw is None:
        return DEFAULT_WATCH_TIMEOUT
    if not 0 <= raw <= MAX_WATCH_TIMEOUT:
        raise InvalidParameter(
            f"Parameter 'timeout' must be between 0 and {MAX_WATCH_TIMEOUT:g} seconds, got {raw}."
        )
    return raw


def etag_of(state: PointerState, target: Target) -> str:
    """The pointer's version token: changes whenever the version, its bytes or the model does."""
    raw = f"{state.model_id}|{target.kind}|{target.value}|{state.version}|{state.digest}".encode()
    return '"' + hashlib.blake2s(raw, digest_size=10).hexdigest() + '"'


def _tokens(header: str | None) -> set[str]:
    out: set[str] = set()
    for part in (header or "").split(","):
        token = part.strip()
        if token.startswith("W/"):
            token = token[2:]
        if token:
            out.add(token.strip('"'))
    return out


def is_current(etag: str, if_none_match: str | None, since: str | None) -> bool:
    """Whether the client already holds ``etag`` (If-None-Match or ``since``)."""
    held = _tokens(if_none_match) | _tokens(since)
    return etag.strip('"') in held or "*" in held


def watch_out(state: PointerState, target: Target) -> WatchOut:
    location = state.storage_location
    return WatchOut(
        name=state.name,
        stage=target.stage,
        alias=target.alias,
        version=None if state.version is None else str(state.version),
        download_uri=location,
        artifact_url=parse_artifact_uri(location).to_http_path() if location else None,
        digest=state.digest,
        etag=etag_of(state, target),
    )


async def read_pointer(s: AsyncSession, name: str | None, target: Target) -> PointerState:
    return await registry.service.pointer_state(s, name, stage=target.stage, alias=target.alias)


# --- report-back --------------------------------------------------------------------------------


def _label(value: str | None, what: str, max_len: int) -> str:
    if value is None or value == "":
        raise InvalidParameter(f"Missing value for required parameter '{what}'.")
    if (
        len(value) > max_len
        or value != value.strip()
        or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value)
    ):
        raise InvalidParameter(
            f"Invalid {what} {value[:100]!r}: at most {max_len} characters, no control "
            "characters and no surrounding whitespace."
        )
    return value


def parse_digest(raw: str | None) -> str | None:
    """A manifest digest as 64 lowercase hex digits (``sha256:`` prefix accepted), or None."""
    if raw is None or raw == "":
        return None
    text = raw.removeprefix("sha256:")
    if not _DIGEST.match(text):
        raise InvalidParameter(
            f"Invalid digest {raw[:80]!r}: expected 64 lowercase hex digits (sha256)."
        )
    return text


@dataclass(frozen=True, slots=True)
class Report:
    deployment: str
    name: str | None
    target: Target
    replica_id: str
    version: int | None
    digest: str | None


def parse_report(body: ReportBody) -> Report:
    return Report(
        deployment=_label(body.deployment, "deployment", DEPLOYMENT_NAME_LEN),
        name=body.name,
        target=parse_target(body.stage, body.alias),
        replica_id=_label(body.replica_id, "replica_id", REPLICA_ID_LEN),
        version=None if body.version in (None, "") else parse_version(body.version),
        digest=parse_digest(body.digest),
    )


async def _bind(s: AsyncSession, report: Report, model_id: int, now: int) -> Any:
    """The deployment the report is about, created on its first report and never rebound."""
    t = report.target
    await store.insert_if_absent(
        s, name=report.deployment, model_id=model_id, target_kind=t.kind, target=t.value, now=now
    )
    row = await store.get_by_name(s, report.deployment)
    if (int(row.model_id), row.target_kind, row.target) != (model_id, t.kind, t.value):
        # Refused whatever the caller's rights on the model it names: a deployment is bound
        # to its first model and pointer, so reports cannot move it (or its drift events).
        raise ResourceAlreadyExists(
            f"Deployment '{report.deployment}' already follows another model or pointer."
        )
    return row


async def report(
    s: AsyncSession, body: ReportBody, *, actor: str, drift_after_ms: int
) -> DeploymentOut:
    """Record what one replica runs; answers the deployment's desired versus actual."""
    checked = parse_report(body)
    now = now_ms()
    model_id, model_name = await registry.service.model_id_of(s, checked.name)
    row = await _bind(s, checked, model_id, now)
    await store.upsert_replica(
        s,
        deployment_id=int(row.id),
        replica_id=checked.replica_id,
        version=checked.version,
        digest=checked.digest,
        now=now,
        actor=actor,
    )
    await evaluate(s, int(row.id), drift_after_ms=drift_after_ms, now=now)
    return (await deployments_of(s, model_name, checked.deployment))[0]


# --- desired versus actual ----------------------------------------------------------------------


def in_sync(replica: Any, desired: PointerState) -> bool:
    if desired.digest is not None:
        return bool(replica.digest == desired.digest)
    # A version registered without files (or before digests): compare what can be compared.
    return bool(replica.version == desired.version and replica.digest is None)


def _live(replicas: Sequence[Any], now: int) -> list[Any]:
    return [r for r in replicas if now - int(r.reported_at) <= STALE_AFTER_MS]


def mismatch(replicas: Sequence[Any], desired: PointerState, now: int) -> bool | None:
    """Whether some live replica differs from desired; None with no live replica (unknown)."""
    live = _live(replicas, now)
    if not live:
        return None
    return any(not in_sync(r, desired) for r in live)


def _deployment_out(row: Any, state: PointerState, replicas: Sequence[Any], now: int) -> Any:
    target = Target(row.target_kind, row.target)
    out = [
        ReplicaOut(
            replica_id=r.replica_id,
            version=None if r.version is None else str(r.version),
            digest=r.digest,
            reported_at=int(r.reported_at),
            reported_by=r.reported_by,
            in_sync=in_sync(r, state),
            stale=now - int(r.reported_at) > STALE_AFTER_MS,
        )
        for r in replicas
    ]
    return DeploymentOut(
        name=row.name,
        model=state.name,
        stage=target.stage,
        alias=target.alias,
        desired=DesiredOut(
            version=None if state.version is None else str(state.version), digest=state.digest
        ),
        replicas=out,
        in_sync=mismatch(replicas, state, now) is False,
        mismatch_since=row.mismatch_since,
        drifted=bool(row.drifted),
    )


async def _desired(s: AsyncSession, row: Any, name: str) -> PointerState:
    target = Target(row.target_kind, row.target)
    return await registry.service.pointer_state_of(
        s, int(row.model_id), name, stage=target.stage, alias=target.alias
    )


async def deployments_of(
    s: AsyncSession, name: str | None, deployment: str | None = None
) -> list[DeploymentOut]:
    """The model's deployments (or the one named), each with desired and every replica."""
    model_id, model_name = await registry.service.model_id_of(s, name)
    rows = await store.of_model(s, model_id, deployment)
    if deployment is not None and not rows:
        raise ResourceNotFound(f"Deployment '{deployment}' of model '{model_name}' not found.")
    replicas = await store.replicas_of(s, [int(r.id) for r in rows])
    now = now_ms()
    states: dict[tuple[str, str], PointerState] = {}
    out = []
    for row in rows:
        key = (row.target_kind, row.target)
        if key not in states:
            states[key] = await _desired(s, row, model_name)
        out.append(_deployment_out(row, states[key], replicas[int(row.id)], now))
    return out


# --- drift --------------------------------------------------------------------------------------


def needs_transition(row: Any, differs: bool | None, *, drift_after_ms: int, now: int) -> bool:
    """Whether :func:`evaluate` would change this deployment's drift state (read-only test)."""
    if differs is None:
        return False
    if differs:
        since = row.mismatch_since
        return since is None or (not row.drifted and now - int(since) >= drift_after_ms)
    return row.mismatch_since is not None or bool(row.drifted)


def _event_payload(row: Any, state: PointerState, replicas: Sequence[Any], now: int) -> Any:
    target = Target(row.target_kind, row.target)
    return {
        "deployment": row.name,
        "name": state.name,
        "stage": target.stage,
        "alias": target.alias,
        "desired_version": None if state.version is None else str(state.version),
        "desired_digest": state.digest,
        "replicas": [
            {
                "replica_id": r.replica_id,
                "version": None if r.version is None else str(r.version),
                "digest": r.digest,
                "in_sync": in_sync(r, state),
            }
            for r in _live(replicas, now)
        ],
        "mismatch_since": row.mismatch_since,
        "timestamp": now,
    }


async def evaluate(s: AsyncSession, deployment_id: int, *, drift_after_ms: int, now: int) -> int:
    """Move one deployment's drift state on from the database's current facts.

    Emits ``deployment.drift`` once its live replicas have differed from the pointer for
    ``drift_after_ms``, and ``deployment.converged`` once they all match again. Returns how
    many events it emitted (0 or 1).
    """
    row = await store.get_by_id(s, deployment_id)
    if row is None:
        return 0
    names = await registry.service.model_names(s, [int(row.model_id)])
    if int(row.model_id) not in names:
        return 0
    state = await _desired(s, row, names[int(row.model_id)])
    replicas = (await store.replicas_of(s, [deployment_id]))[deployment_id]
    differs = mismatch(replicas, state, now)
    if differs is None:
        return 0
    if not differs:
        await store.clear_mismatch(s, deployment_id)
        if row.drifted and await store.set_drifted(s, deployment_id, False):
            payload = _event_payload(row, state, replicas, now)
            await events.emit(s, "deployment.converged", payload, model_name=state.name)
            return 1
        return 0
    since = row.mismatch_since
    if since is None:
        await store.start_mismatch(s, deployment_id, now)
        since = now
    if row.drifted or now - int(since) < drift_after_ms:
        return 0
    if not await store.set_drifted(s, deployment_id, True):
        return 0
    payload = {**_event_payload(row, state, replicas, now), "mismatch_since": since}
    await events.emit(s, "deployment.drift", payload, model_name=state.name)
    return 1


async def due_for_evaluation(
    s: AsyncSession, after_id: int, limit: int, *, drift_after_ms: int
) -> tuple[list[int], int | None]:
    """A page of deployments whose drift state should move now, and the cursor for the next
    page (None after the last). Read-only, so a quiet round takes no write lock."""
    rows = await store.page_after(s, after_id, limit)
    if not rows:
        return [], None
    replicas = await store.replicas_of(s, [int(r.id) for r in rows])
    names = await registry.service.model_names(s, list({int(r.model_id) for r in rows}))
    now = now_ms()
    due = []
    for row in rows:
        name = names.get(int(row.model_id))
        if name is None:
            continue
        state = await _desired(s, row, name)
        differs = mismatch(replicas[int(row.id)], state, now)
        if needs_transition(row, differs, drift_after_ms=drift_after_ms, now=now):
            due.append(int(row.id))
    cursor = int(rows[-1].id) if len(rows) == limit else None
    return due, cursor
