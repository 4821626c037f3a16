"""The calls gates make into sibling work: identity, artifact integrity, events and audit.

Kept in one module so each collaborator is reached through exactly one function here, and the
gates code above it does not depend on how (or whether yet) that collaborator is built.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from gates.audit import service as audit_log
from gates.events.service import batched, drop_held_after, emit, held_count
from gates.identity import service as identity
from gates.identity.policy import allows
from registry import service as registry
from registry.artifacts.storage import ArtifactStorage
from registry.schemas import CreateModelVersion
from registry.service import VersionFingerprint
from tracking.core.auth import ResourceScope, current_principal
from tracking.core.errors import MlflowError

ANONYMOUS = "anonymous"


# --- identity ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Actor:
    """Who is calling: a user or token name, and whether they hold the admin role."""

    name: str
    is_admin: bool
    authenticated: bool
    principal: Any = None
    # How a promotion's caller proved who they are, as its decision records it: an API
    # token or Basic credentials ("token"), or a web UI session ("session").
    auth_method: str = "token"


def auth_enabled(request: Any) -> bool:
    settings = request.app.state.get("settings")
    return bool(getattr(settings, "auth", False))


async def request_actor(request: Any) -> Actor:
    """The caller of an HTTP request (anonymous with full rights when auth is off)."""
    principal = current_principal(request)
    if principal is not None:
        return Actor(principal.name, principal.is_admin, True, principal)
    return Actor(ANONYMOUS, is_admin=not auth_enabled(request), authenticated=False)


async def bearer_actor(request: Any) -> Actor | None:
    """The principal an ``Authorization`` header authenticated, or None when there is none."""
    if not request.headers.get("authorization"):
        return None
    principal = current_principal(request)
    if principal is None:
        return None
    return Actor(principal.name, principal.is_admin, True, principal)


async def can_promote(s: AsyncSession, actor: Actor, model: str, target: str) -> bool:
    """Whether the actor's grants allow promoting ``model`` to ``target``."""
    if actor.is_admin:
        return True
    grants = getattr(actor.principal, "grants", ())
    return allows(grants, "registered_model", model, None, "promote", target)


async def can_approve(s: AsyncSession, user: str, model: str, target: str) -> bool:
    """Whether ``user`` holds the approver role (or higher) on ``model`` for ``target``."""
    return await identity.user_allows(s, user, "registered_model", model, "promote", target)


async def is_active_admin(s: AsyncSession, user: str) -> bool:
    """Whether ``user`` is an enabled administrator in the identity store."""
    try:
        found = await identity.get_user(s, user)
    except MlflowError:
        return False
    return found.is_admin and not found.disabled


async def patterns_with_readable_models(
    s: AsyncSession, patterns: list[str], scope: ResourceScope
) -> set[str]:
    """Which gate model globs match at least one registered model ``scope`` may read."""
    return await registry.patterns_with_readable_models(s, patterns, scope)


# --- artifact integrity --------------------------------------------------------------------------


async def version_digest(s: AsyncSession, name: str, version: int) -> str | None:
    """The artifact digest the registry recorded when the version was created (or None)."""
    recorded = await registry.recorded_fingerprint(s, f"models:/{name}/{version}")
    return recorded.digest


async def fingerprint_for(
    s: AsyncSession,
    storage: ArtifactStorage | None,
    req: CreateModelVersion,
    *,
    known: registry.KnownSource | None = None,
) -> VersionFingerprint | None:
    """The frozen copy of the files a create request would register (copied and hashed now);
    ``known``: rows already read in this transaction (see ``registry.KnownSource``)."""
    if storage is None:
        return None
    location = await registry.model_version_location(s, req, known=known)
    if location is None:  # a prompt version (no files) or a copy (shares its source's)
        return None
    return await registry.freeze_version_files(storage, location)


async def reverify_version(
    s: AsyncSession, storage: ArtifactStorage | None, name: str, version: int
) -> tuple[str | None, list[str]]:
    """Re-read a version's stored bytes: (digest of what is stored now, problems found)."""
    recorded = await registry.recorded_fingerprint(s, f"models:/{name}/{version}")
    if storage is None:
        return recorded.digest, []
    report = await registry.verify_fingerprint(storage, recorded)
    problems = [f"{c.path}: {c.status}" for c in report.checks if c.status != "OK"]
    if not report.rows_match_digest:
        problems.append("the recorded file rows no longer produce the recorded digest")
    return report.actual_digest, problems


# --- events and audit ----------------------------------------------------------------------------


async def emit_event(s: AsyncSession, event_type: str, payload: dict[str, Any]) -> None:
    """Write an outbound event in this transaction (delivered by the events worker)."""
    model = payload.get("model")
    await emit(s, event_type, payload, model_name=model if isinstance(model, str) else None)


# A promotion's events are held and written together at its end (gates.events: batched).
events_batched = batched
events_held = held_count
drop_events_after = drop_held_after


async def audit(
    s: AsyncSession, kind: str, subject: str, payload: dict[str, Any], actor: str
) -> None:
    """Append to the hash-chained audit log in this transaction."""
    await audit_log.append(s, kind, subject, payload, actor)
