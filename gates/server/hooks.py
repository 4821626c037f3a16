"""The registry hooks one app gives its sessions: what reacts to registry changes, what vetoes.

:func:`registry_hooks` is the only place they are chosen. The composition root calls it once per
app and hands the object to the app's database, so every session the app opens carries it and
no other app sees it. Service tests take theirs from here too, so they run what the app runs.

The order is fixed and means something:

listeners (inside the change's transaction, in this order)
  1. ``gates.events.service.record_registry_event``: the change's outbox rows (webhooks);
  2. ``gates.audit.service.record_registry_event``: its entry in the audit trail.
guards (with the model row locked, before anything is written; the first to raise vetoes)
  1. ``gates.policies.guard.guard_pointer_move``: no plain move onto or off a gated target,
     unless the move carries the gate's own authorisation or an admin's override;
  2. :func:`check_principal_pointer_move` (authentication on only): the request's principal
     holds promote rights on every stage or alias the move changes.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

import gates.audit.service
import gates.events.service
from gates.identity.policy import ACTIVE_STAGES, allows
from gates.policies import guard
from registry.events import EventListener, PointerGuard, PointerMove, RegistryHooks
from tracking.core.auth import bound_principal
from tracking.core.errors import PermissionDenied


async def check_principal_pointer_move(session: AsyncSession, move: PointerMove) -> None:
    """Promote rights on every pointer a move changes, checked with the model row locked.

    The route guard already checked the request's stated target; only here is the version's
    current stage known for certain, so leaving Staging or Production (a demotion changes
    what ``models:/name/Production`` loads) is checked here, as are the pointers a version
    or model deletion takes along. Moves outside a request (no principal) are the system's.
    """
    principal = bound_principal()
    if principal is None or principal.is_admin:
        return
    targets: list[str] = []
    if move.pointer_kind == "alias":
        targets.append(f"@{move.pointer}")
    elif move.action == "transition":
        targets.append(move.pointer)
        if move.from_stage in ACTIVE_STAGES and move.from_stage != move.pointer:
            targets.append(move.from_stage)
    elif move.pointer in ACTIVE_STAGES:
        targets.append(move.pointer)
    for target in targets:
        if not allows(principal.grants, "registered_model", move.name, None, "promote", target):
            raise PermissionDenied(
                f"Permission denied: 'promote' on registered model '{move.name}' (target {target})."
            )


def registry_hooks(*, auth: bool) -> RegistryHooks:
    """The app's registry hooks, in the order the module docstring states."""
    listeners: tuple[EventListener, ...] = (
        gates.events.service.record_registry_event,
        gates.audit.service.record_registry_event,
    )
    guards: tuple[PointerGuard, ...] = (guard.guard_pointer_move,)
    if auth:
        guards += (check_principal_pointer_move,)
    return RegistryHooks(listeners=listeners, guards=guards)
