"""Roles, grants and promotion targets: the pure rules that decide what a principal may do.

Roles are ordered ``reader < editor < approver < admin``. An action needs a minimum role:
read needs reader; create and edit need editor; promote (a stage transition or an alias move)
needs approver and, when the grant lists targets, a matching target; delete and manage (rename,
destructive operations) need an admin grant. An administrator user bypasses every grant.

A grant's pattern is ``*`` (everything), a ``*``/``?`` glob on the name (``fraud-*``), an exact
name, or for experiments a number naming the experiment id.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from registry.validation import STAGES
from tracking.core.auth import ResourceScope, glob_matches, is_glob
from tracking.core.errors import InvalidParameter

ROLES = ("reader", "editor", "approver", "admin")
ROLE_RANK = {role: rank for rank, role in enumerate(ROLES, start=1)}
RESOURCE_TYPES = ("experiment", "registered_model")
ACTION_ROLE = {
    "read": "reader",
    "create": "editor",
    "edit": "editor",
    "promote": "approver",
    "delete": "admin",
    "manage": "admin",
}
# Stages whose pointer a transition *out of* also moves (what models:/name/<stage> loads).
ACTIVE_STAGES = frozenset({"Staging", "Production"})
_STAGE_BY_LOWER = {s.lower(): s for s in STAGES}
_ALIAS_TARGET = re.compile(r"^@[\w\-*?]{1,255}$")
MAX_TARGETS = 50


@dataclass(frozen=True, slots=True)
class GrantRule:
    """One grant as the rules see it (``targets`` None: every promotion target)."""

    resource_type: str
    pattern: str
    role: str
    targets: tuple[str, ...] | None = None


def canonical_target(target: str) -> str | None:
    """``Production`` in any case, or ``@alias`` as given; None when it is neither."""
    if target.startswith("@"):
        return target if _ALIAS_TARGET.match(target) and not is_glob(target) else None
    return _STAGE_BY_LOWER.get(target.strip().lower())


def normalise_targets(targets: Iterable[str] | None) -> tuple[str, ...] | None:
    """Validate a grant's target list: stage names (any case) and ``@alias`` globs."""
    if targets is None:
        return None
    out: list[str] = []
    for raw in targets:
        text = str(raw).strip()
        if text.startswith("@"):
            if not _ALIAS_TARGET.match(text):
                raise InvalidParameter(
                    f"Invalid promotion target '{raw}': an alias target is '@' followed by "
                    "letters, digits, '_', '-' (and '*' or '?' as wildcards)."
                )
            value = text
        else:
            stage = _STAGE_BY_LOWER.get(text.lower())
            if stage is None:
                raise InvalidParameter(
                    f"Invalid promotion target '{raw}': use a stage ({', '.join(STAGES)}) "
                    "or an alias such as '@candidate'."
                )
            value = stage
        if value not in out:
            out.append(value)
    if len(out) > MAX_TARGETS:
        raise InvalidParameter(f"A grant can list at most {MAX_TARGETS} promotion targets.")
    return tuple(out)


def target_allowed(targets: tuple[str, ...] | None, target: str | None) -> bool:
    """Whether a grant's targets include ``target`` (canonical stage or ``@alias``)."""
    if targets is None:
        return True
    if target is None:
        return False
    if target.startswith("@"):
        return any(t.startswith("@") and glob_matches(t[1:], target[1:]) for t in targets)
    return target in targets


def is_id_pattern(resource_type: str, pattern: str) -> bool:
    """An experiment pattern made of ASCII digits names an experiment id."""
    return resource_type == "experiment" and pattern.isascii() and pattern.isdigit()


def pattern_matches(rule: GrantRule, name: str | None, ident: int | None) -> bool:
    """Whether ``rule`` covers the object named ``name`` (experiments: with id ``ident``).

    An object that does not exist yet or could not be found has no name and no id: only
    ``*`` covers it, so a 403 does not tell a caller whether it exists.
    """
    pattern = rule.pattern
    if pattern == "*":
        return True
    if is_id_pattern(rule.resource_type, pattern):
        return ident is not None and int(pattern) == ident
    if name is None:
        return False
    return glob_matches(pattern, name) if is_glob(pattern) else name == pattern


def allows(
    rules: Iterable[GrantRule],
    resource_type: str,
    name: str | None,
    ident: int | None,
    action: str,
    target: str | None = None,
) -> bool:
    """Whether any rule grants ``action`` on the object (and, for promote, on ``target``)."""
    need = ROLE_RANK[ACTION_ROLE[action]]
    for rule in rules:
        if rule.resource_type != resource_type or ROLE_RANK.get(rule.role, 0) < need:
            continue
        if not pattern_matches(rule, name, ident):
            continue
        if action == "promote" and not target_allowed(rule.targets, target):
            continue
        return True
    return False


def visible_scope(rules: Iterable[GrantRule], resource_type: str) -> ResourceScope:
    """Everything any grant lets the principal read, as a scope searches filter by."""
    names: set[str] = set()
    ids: set[int] = set()
    patterns: list[str] = []
    for rule in rules:
        if rule.resource_type != resource_type:
            continue
        pattern = rule.pattern
        if pattern == "*":
            return ResourceScope(everything=True)
        if is_id_pattern(resource_type, pattern):
            ids.add(int(pattern))
        elif is_glob(pattern):
            if pattern not in patterns:
                patterns.append(pattern)
        else:
            names.add(pattern)
    return ResourceScope(names=frozenset(names), ids=frozenset(ids), patterns=tuple(patterns))
