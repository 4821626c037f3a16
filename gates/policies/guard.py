"""The pointer guard that keeps plain MLflow moves off gated targets, and its two exits.

A stage transition or alias move onto a target an enabled gate guards is refused, and so is
leaving one: moving the version that holds a gated stage elsewhere (archiving Production with a
plain transition), deleting or reassigning a gated alias, deleting a version or model that holds
a gated target. Leaving needs what reaching needs, except:

- a move the gate itself makes after a passing decision (or a final approval): it hands the
  registry call a :class:`GateAuthorisation` for exactly that (model, target, version), which
  reaches this guard on the move it was issued for and on no other;
- an admin's explicit override, carried by the ``X-Mlgate-Override: <reason>`` header of the
  request (:data:`override_request`), which is written to the audit log with its reason.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from gates.policies import ports, service
from gates.policies.errors import GatedTarget, LeavingGatedTarget
from registry.events import PointerMove
from tracking.core.errors import InvalidParameter, PermissionDenied

OVERRIDE_HEADER = "x-mlgate-override"
MAX_OVERRIDE_REASON = 1000
ENTERING_ACTIONS = ("transition", "set_alias")


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


@dataclass(frozen=True, slots=True)
class GateAuthorisation:
    """The gate's permission to move ``version`` of ``model`` onto ``target`` itself, issued
    after ``decision_id`` passed (or its approval request was granted); a registry
    :class:`~registry.events.MovePermit` that covers exactly that one move."""

    model: str
    target: str
    version: int
    decision_id: str

    def covers(self, move: PointerMove) -> bool:
        return move.action in ENTERING_ACTIONS and (move.name, _target_of(move), move.version) == (
            self.model,
            self.target,
            self.version,
        )


def _left_target(move: PointerMove) -> str | None:
    """The pointer a move takes a version off, when it leaves one (else None)."""
    if move.action == "transition":
        left = move.from_stage
        return left if left and left != move.pointer and left not in ("None", "") else None
    if move.action in ("delete_alias", "delete_version", "delete_model"):
        return _target_of(move)
    return None


async def guard_pointer_move(s: AsyncSession, move: PointerMove) -> str | None:
    """The app's first registry guard; an override's note (gate, admin, reason) is returned
    for the pointer history, so the timeline shows it."""
    if isinstance(move.permit, GateAuthorisation) and move.permit.covers(move):
        return None  # the gate's own move after its decision (leaving a stage is part of it)
    entering = (
        _target_of(move) if move.action in ENTERING_ACTIONS and move.version is not None else None
    )
    left = _left_target(move)
    wanted = [t for t in (entering, left) if t is not None]
    if not wanted:
        return None
    # One read tells which of the targets some enabled gate guards (usually none); only those
    # are resolved to their gate, entering first, as before.
    gated = await service.gated_targets(s, move.name, wanted)
    notes: list[str] = []
    if entering is not None and entering in gated:
        gate = await service.gate_for(s, move.name, entering)
        if gate is not None:
            notes.append(await _refuse_or_override(s, move, entering, gate, leaving=False))
    if left is not None and left in gated:
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
