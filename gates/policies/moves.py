"""The pointer move a gate makes itself: after a passing decision or a final approval."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from gates.policies.guard import GateAuthorisation
from gates.policies.rules import target_pointer
from gates.policies.schemas import PolicyRules
from registry import service as registry
from registry.validation import ARCHIVING_STAGES


async def execute_move(
    s: AsyncSession,
    *,
    model: str,
    version: int,
    target: str,
    rules: PolicyRules,
    actor: str,
    decision_id: str,
    gate: str,
) -> None:
    """Move ``version`` onto ``target`` through the registry (row lock, history, events).

    The move carries the gate's :class:`GateAuthorisation` for exactly this move, so the guard
    lets it through; the pointer history's comment names the gate and the decision, so
    ``mlgate history`` explains it.
    """
    kind, pointer = target_pointer(target)
    comment = f"gate {gate}: decision {decision_id}"
    permit = GateAuthorisation(model, target, version, decision_id)
    if kind == "stage":
        await registry.move_stage(
            s,
            model,
            str(version),
            pointer,
            rules.archive_existing_versions and pointer in ARCHIVING_STAGES,
            actor=actor,
            comment=comment,
            permit=permit,
        )
    else:
        await registry.set_alias(
            s, model, pointer, str(version), actor=actor, comment=comment, permit=permit
        )
