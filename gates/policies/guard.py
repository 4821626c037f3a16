"""The pointer guard that keeps plain MLflow moves off gated targets, and its two exits.

A stage transition or alias move onto a target an enabled gate guards is refused, and so is
leaving one: moving the version that holds a gated stage elsewhere (archiving Production with a
plain transition), deleting or reassigning a gated alias, deleting a version or model that holds
a gated target. Leaving needs what reaching needs, except:

- a move the gate itself makes after a passing decision (or a final approval), which marks the
  transaction as authorised for exactly that (model, pointer, version) before calling the
  registry (:func:`authorised_move`);
- an admin's explicit override, carried by the ``X-Mlgate-Override: <reason>`` header of the
  request (:data:`override_request`), which is written to the audit log with its reason.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from gates.policies import ports, service
from gates.policies.errors import GatedTarget, LeavingGatedTarget
from registry import events
from registry.events import PointerMove
from tracking.core.errors import InvalidParameter, PermissionDenied

OVERRIDE_HEADER = "x-mlgate-override"
MAX_OVERRIDE_REASON = 1000
_AUTHORISED_KEY = "mlgate.authorised_moves"


@dataclass(frozen=True, slots=True)
class OverrideRequest:
    reason: str
    request: Any  # the HTTP request, to find out who asked only when an override is used


# Set per HTTP request by the gates middleware when the override header is present.
override_request: contextvars.ContextVar[OverrideRequest | None] = contextvars.ContextVar(
    "mlgate_override_request", default=None
)


def _target_of(move: PointerMove) -> str:
    return move.pointer if move.pointer_kind == "stage" else f"@{move.pointer}"


@contextmanager
def authorised_move(
    s: AsyncSession, model: str, target: str, version: int, decision_id: str
) -> Iterator[None]:
    """Let the gate's own move of ``version`` onto ``target`` pass the guard, once."""
    key = (model, target, version)
    moves: dict[tuple[str, str, int], str] = s.info.setdefault(_AUTHORISED_KEY, {})
    moves[key] = decision_id
    try:
        yield
    finally:
        moves.pop(key, None)


def _left_target(move: PointerMove) -> str | None:
    """The pointer a move takes a version off, when it leaves one (else None)."""
    if move.action == "transition":
        left = move.from_stage
        return left if left and left != move.pointer and left not in ("None", "") else None
    if move.action in ("delete_alias", "delete_version", "delete_model"):
        return _target_of(move)
    return None


async def guard_pointer_move(s: AsyncSession, move: PointerMove) -> str | None:
    """Registered with ``registry.events.before_pointer_move``; an override's note (gate,
    admin, reason) is returned for the pointer history, so the timeline shows it."""
    moves: dict[tuple[str, str, int], str] = s.info.get(_AUTHORISED_KEY, {})
    notes: list[str] = []
    entering = move.action in ("transition", "set_alias") and move.version is not None
    if entering:
        assert move.version is not None
        target = _target_of(move)
        if (move.name, target, move.version) in moves:
            return None  # the gate's own move after its decision (leaving a stage is part of it)
        gate = await service.gate_for(s, move.name, target)
        if gate is not None:
            notes.append(await _refuse_or_override(s, move, target, gate, leaving=False))
    left = _left_target(move)
    if left is not None:
        gate = await service.gate_for(s, move.name, left)
        if gate is not None:
            notes.append(await _refuse_or_override(s, move, left, gate, leaving=True))
    return "; ".join(notes) if notes else None


async def _refuse_or_override(
    s: AsyncSession, move: PointerMove, target: str, gate: service.ResolvedGate, *, leaving: bool
) -> str:
    override = override_request.get()
    if override is None:
        if leaving:
            raise LeavingGatedTarget(
                move.name, target, gate.policy.name, gate.version.version, move.action
            )
        raise GatedTarget(move.name, target, gate.policy.name, gate.version.version)
    actor = await ports.request_actor(override.request)
    if not actor.is_admin:
        raise PermissionDenied(
            f"Only an admin may override gate '{gate.policy.name}' on {target} of model "
            f"'{move.name}'."
        )
    reason = override.reason.strip()
    if not reason or len(reason) > MAX_OVERRIDE_REASON:
        raise InvalidParameter(
            f"An override needs a reason of 1 to {MAX_OVERRIDE_REASON} characters."
        )
    payload = {
        "gate": gate.policy.name,
        "policy_version": gate.version.version,
        "model": move.name,
        "target": target,
        "version": move.version,
        "from_version": move.current_version,
        "action": move.action,
        "leaving": leaving,
        "reason": reason,
        "actor": actor.name,
    }
    await ports.emit_event(s, "gate.overridden", payload)
    await ports.audit(s, "gate.overridden", f"model:{move.name}", payload, actor.name)
    way = "leaving" if leaving else "onto"
    return f"override of gate {gate.policy.name} ({way} {target}) by {actor.name}: {reason}"


def install() -> None:
    """Register the guard once per process (the app factory calls this)."""
    events.remove_hook(guard_pointer_move)
    events.before_pointer_move(guard_pointer_move)
