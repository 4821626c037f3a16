"""Why each pointer move on a model's timeline happened: a gate's decision or an admin's
override, read from the records that prove it (never from a move's free-text comment alone,
which any caller of transition-stage may write)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from gates.audit import service as audit
from gates.policies import service as policies
from registry.schemas import PointerEventOut

# The comment gates.policies.moves gives the moves a gate makes itself.
_GATE_COMMENT = re.compile(r"^gate \S+: decision ([0-9A-Za-z_-]{1,64})")
OVERRIDES_READ = 200  # the newest overrides of one model that a timeline page can explain


@dataclass(frozen=True, slots=True)
class MoveStory:
    """``kind`` 'gate': the decision that moved it; 'override': the admin and their reason."""

    kind: str
    gate: str
    actor: str
    reason: str = ""
    decision_id: str = ""
    policy_version: str = ""
    outcome: str = ""
    trigger: str = ""
    requested_by: str | None = None


def _moved_version(e: PointerEventOut) -> str | None:
    return e.version or e.to_version or e.from_version


async def _gate_stories(
    s: AsyncSession, model: str, history: list[PointerEventOut]
) -> dict[str, MoveStory]:
    wanted: dict[str, str] = {}
    for e in history:
        found = _GATE_COMMENT.match(e.comment or "")
        if found:
            wanted[e.id] = found.group(1)
    decisions = await policies.decisions_by_ids(s, sorted(set(wanted.values())))
    out = {}
    for event_id, decision_id in wanted.items():
        d = decisions.get(decision_id)
        e = next(x for x in history if x.id == event_id)
        # The decision must be about exactly this move, or the comment proves nothing.
        if d is None or d.model != model or d.target != e.pointer or d.version != e.to_version:
            continue
        out[event_id] = MoveStory(
            "gate",
            d.policy_name,
            d.actor,
            decision_id=d.decision_id,
            policy_version=d.policy_version,
            outcome=d.outcome,
            trigger=d.trigger,
            requested_by=d.requested_by,
        )
    return out


async def _override_stories(
    s: AsyncSession, model: str, history: list[PointerEventOut]
) -> dict[str, MoveStory]:
    candidates = [e for e in history if "override of gate" in (e.comment or "")]
    if not candidates:
        return {}
    entries, _ = await audit.search_filtered(
        s,
        audit.AuditFilter(kind="gate.overridden", model=model),
        max_results=OVERRIDES_READ,
        page_token=None,
    )
    out = {}
    for e in candidates:
        for entry in entries:  # newest first: the latest override of this move at or before it
            p = entry.payload
            if (
                entry.at <= e.timestamp + 1000
                and p.get("target") == e.pointer
                and str(p.get("version")) == str(_moved_version(e))
                and p.get("actor") == e.actor
            ):
                out[e.id] = MoveStory(
                    "override", str(p.get("gate")), e.actor, reason=str(p.get("reason", ""))
                )
                break
    return out


async def move_stories(
    s: AsyncSession, model: str, history: list[PointerEventOut]
) -> dict[str, MoveStory]:
    """Event id -> its story, for the events a gate or an override explains."""
    stories = await _gate_stories(s, model, history)
    stories.update(await _override_stories(s, model, history))
    return stories
