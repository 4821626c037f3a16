"""Every SQL statement of the policies domain: policies, versions, secrets, OIDC trusts,
receipts, decisions."""

from __future__ import annotations

import functools
from collections.abc import Collection
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    String,
    and_,
    bindparam,
    delete,
    exists,
    func,
    not_,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from gates.policies.models import (
    GateDecision,
    GateOidcTrust,
    GatePolicy,
    GatePolicyVersion,
    GateSecret,
    WebhookReceipt,
)
from tracking.core.auth import ResourceScope
from tracking.core.db import dialect_insert, dialect_name, insert_for
from tracking.core.driver import DriverRows, Prebuilt
from tracking.search.sql import scope_predicate

# --- visibility ----------------------------------------------------------------------------------


def _is_glob_binding() -> ColumnElement[bool]:
    # The same characters as gates.policies.rules.is_glob.
    column = GatePolicy.model_pattern
    return or_(column.contains("*"), column.contains("?"), column.contains("["))


def _visible_policies(scope: ResourceScope, readable_globs: Collection[str]) -> ColumnElement[bool]:
    """Gates the caller may see: an exact binding on a model name ``scope`` covers, or a glob
    binding among ``readable_globs`` (those matching a model the caller may read)."""
    exact = and_(not_(_is_glob_binding()), scope_predicate(scope, GatePolicy.model_pattern))
    if not readable_globs:
        return exact
    return or_(exact, GatePolicy.model_pattern.in_(sorted(readable_globs)))


async def glob_bindings(s: AsyncSession, limit: int) -> list[str]:
    """The distinct glob model patterns gates bind (a handful: gates are configuration)."""
    stmt = (
        select(GatePolicy.model_pattern)
        .where(_is_glob_binding())
        .distinct()
        .order_by(GatePolicy.model_pattern)
        .limit(limit)
    )
    return list((await s.execute(stmt)).scalars())


# --- policies ------------------------------------------------------------------------------------


async def get_policy(
    s: AsyncSession,
    name: str,
    *,
    lock: bool = False,
    scope: ResourceScope | None = None,
    readable_globs: Collection[str] = (),
) -> GatePolicy | None:
    """The policy named ``name``; None also when ``scope`` (None: all) does not let it through."""
    stmt = select(GatePolicy).where(GatePolicy.name == name)
    if scope is not None:
        stmt = stmt.where(_visible_policies(scope, readable_globs))
    if lock and dialect_name(s) == "postgresql":
        stmt = stmt.with_for_update()
    return (await s.execute(stmt)).scalar_one_or_none()


async def get_policy_by_id(s: AsyncSession, policy_id: int) -> GatePolicy | None:
    return await s.get(GatePolicy, policy_id)


async def insert_policy(s: AsyncSession, **values: Any) -> int | None:
    """Insert a policy row; None when its name or (pattern, target) binding is taken."""
    result = await s.execute(
        dialect_insert(s)(GatePolicy)
        .values(**values)
        .on_conflict_do_nothing()
        .returning(GatePolicy.id)
    )
    found = result.scalar_one_or_none()
    return None if found is None else int(found)


async def binding_taken(s: AsyncSession, pattern: str, target: str, *, besides: int) -> str | None:
    stmt = select(GatePolicy.name).where(
        GatePolicy.model_pattern == pattern, GatePolicy.target == target, GatePolicy.id != besides
    )
    return (await s.execute(stmt)).scalar_one_or_none()


async def bindings_on_target(
    s: AsyncSession, target: str, *, besides: int
) -> list[tuple[str, str]]:
    """(gate name, model pattern) of every other enabled gate bound to ``target``."""
    stmt = select(GatePolicy.name, GatePolicy.model_pattern).where(
        GatePolicy.target == target, GatePolicy.id != besides, GatePolicy.enabled.is_(True)
    )
    return [(name, pattern) for name, pattern in await s.execute(stmt)]


async def update_policy(s: AsyncSession, policy_id: int, **values: Any) -> None:
    await s.execute(update(GatePolicy).where(GatePolicy.id == policy_id).values(**values))


async def list_policies(
    s: AsyncSession,
    *,
    include_disabled: bool,
    offset: int,
    limit: int,
    scope: ResourceScope | None = None,
    readable_globs: Collection[str] = (),
) -> list[GatePolicy]:
    stmt = select(GatePolicy).order_by(GatePolicy.name).offset(offset).limit(limit)
    if not include_disabled:
        stmt = stmt.where(GatePolicy.enabled.is_(True))
    if scope is not None:
        stmt = stmt.where(_visible_policies(scope, readable_globs))
    return list((await s.execute(stmt)).scalars())


async def enabled_gates_for_target(
    s: AsyncSession, target: str
) -> list[tuple[GatePolicy, GatePolicyVersion | None]]:
    """The enabled policies on ``target``, each with its current version, in one query."""
    stmt = (
        select(GatePolicy, GatePolicyVersion)
        .outerjoin(
            GatePolicyVersion,
            (GatePolicyVersion.policy_id == GatePolicy.id)
            & (GatePolicyVersion.version == GatePolicy.current_version),
        )
        .where(GatePolicy.target == target, GatePolicy.enabled.is_(True))
        .order_by(GatePolicy.id)
    )
    return [(p, v) for p, v in (await s.execute(stmt)).tuples()]


async def enabled_gates_with_secrets(
    s: AsyncSession, target: str, now: int
) -> list[tuple[GatePolicy, GatePolicyVersion | None, GateSecret | None]]:
    """``enabled_gates_for_target`` with each policy's active secrets joined (one row per
    secret, newest first; one row with None for a policy without any), in one query: what a
    signed webhook needs before its signature is checked."""
    params = {"target": target, "now": now}
    rows = await s.execute(_gates_with_secrets_select(), params)
    return [(p, v, x) for p, v, x in rows.tuples()]


@functools.cache
def _gates_with_secrets_select() -> Any:
    """:func:`enabled_gates_with_secrets`'s query, built once (every signed promotion runs
    it): its target and time are parameters."""
    now: Any = bindparam("now", type_=BigInteger)
    return (
        select(GatePolicy, GatePolicyVersion, GateSecret)
        .outerjoin(
            GatePolicyVersion,
            (GatePolicyVersion.policy_id == GatePolicy.id)
            & (GatePolicyVersion.version == GatePolicy.current_version),
        )
        .outerjoin(GateSecret, (GateSecret.policy_id == GatePolicy.id) & _active(now))
        .where(GatePolicy.target == bindparam("target", type_=String), GatePolicy.enabled.is_(True))
        .order_by(GatePolicy.id, GateSecret.id.desc())
    )


def _build_enabled_patterns(_dialect: str) -> Any:
    # Two targets at most (the one a move enters, the one it leaves), as two parameters so the
    # statement never changes; the same index as enabled_policies_for_target.
    targets = (bindparam("first", type_=String), bindparam("second", type_=String))
    return select(GatePolicy.target, GatePolicy.model_pattern).where(
        GatePolicy.target.in_(targets), GatePolicy.enabled.is_(True)
    )


ENABLED_PATTERNS = Prebuilt(_build_enabled_patterns)


async def enabled_patterns(r: DriverRows, first: str, second: str) -> list[tuple[str, str]]:
    """(target, model pattern) of every enabled policy on ``first`` or ``second``."""
    rows = await r.all(ENABLED_PATTERNS, {"first": first, "second": second})
    return [(str(target), str(pattern)) for target, pattern in rows]


# --- policy versions -----------------------------------------------------------------------------


async def insert_policy_version(s: AsyncSession, **values: Any) -> int:
    result = await s.execute(
        dialect_insert(s)(GatePolicyVersion).values(**values).returning(GatePolicyVersion.id)
    )
    return int(result.scalar_one())


async def get_policy_version(s: AsyncSession, policy_id: int, version: int) -> GatePolicyVersion:
    stmt = select(GatePolicyVersion).where(
        GatePolicyVersion.policy_id == policy_id, GatePolicyVersion.version == version
    )
    return (await s.execute(stmt)).scalar_one()


async def get_policy_version_by_id(s: AsyncSession, pk: int) -> GatePolicyVersion | None:
    return await s.get(GatePolicyVersion, pk)


async def current_versions(
    s: AsyncSession, policies: list[GatePolicy]
) -> dict[int, GatePolicyVersion]:
    """The current version of each policy, in one query."""
    if not policies:
        return {}
    conditions = [
        (GatePolicyVersion.policy_id == p.id) & (GatePolicyVersion.version == p.current_version)
        for p in policies
    ]
    rows = (await s.execute(select(GatePolicyVersion).where(or_(*conditions)))).scalars()
    return {r.policy_id: r for r in rows}


async def list_policy_versions(
    s: AsyncSession, policy_id: int, *, offset: int, limit: int
) -> list[GatePolicyVersion]:
    stmt = (
        select(GatePolicyVersion)
        .where(GatePolicyVersion.policy_id == policy_id)
        .order_by(GatePolicyVersion.version.desc())
        .offset(offset)
        .limit(limit)
    )
    return list((await s.execute(stmt)).scalars())


# --- secrets -------------------------------------------------------------------------------------


def _active(now: Any) -> Any:
    return GateSecret.revoked_at.is_(None) & (
        GateSecret.expires_at.is_(None) | (GateSecret.expires_at > now)
    )


async def insert_secret(s: AsyncSession, **values: Any) -> None:
    await s.execute(dialect_insert(s)(GateSecret).values(**values))


async def active_secrets(s: AsyncSession, policy_id: int, now: int) -> list[GateSecret]:
    stmt = (
        select(GateSecret)
        .where(GateSecret.policy_id == policy_id, _active(now))
        .order_by(GateSecret.id.desc())
    )
    return list((await s.execute(stmt)).scalars())


async def list_secrets(s: AsyncSession, policy_id: int, limit: int) -> list[GateSecret]:
    stmt = (
        select(GateSecret)
        .where(GateSecret.policy_id == policy_id)
        .order_by(GateSecret.id.desc())
        .limit(limit)
    )
    return list((await s.execute(stmt)).scalars())


async def get_secret(s: AsyncSession, policy_id: int, secret_id: str) -> GateSecret | None:
    stmt = select(GateSecret).where(
        GateSecret.policy_id == policy_id, GateSecret.secret_id == secret_id
    )
    return (await s.execute(stmt)).scalar_one_or_none()


async def update_secret(s: AsyncSession, pk: int, **values: Any) -> None:
    await s.execute(update(GateSecret).where(GateSecret.id == pk).values(**values))


# --- OIDC trusts ---------------------------------------------------------------------------------


async def insert_oidc_trust(s: AsyncSession, **values: Any) -> None:
    await s.execute(dialect_insert(s)(GateOidcTrust).values(**values))


async def oidc_trusts(
    s: AsyncSession, policy_id: int, *, active_only: bool, limit: int = 100
) -> list[GateOidcTrust]:
    stmt = select(GateOidcTrust).where(GateOidcTrust.policy_id == policy_id)
    if active_only:
        stmt = stmt.where(GateOidcTrust.revoked_at.is_(None))
    stmt = stmt.order_by(GateOidcTrust.id.desc()).limit(limit)
    return list((await s.execute(stmt)).scalars())


async def get_oidc_trust(s: AsyncSession, policy_id: int, trust_id: str) -> GateOidcTrust | None:
    stmt = select(GateOidcTrust).where(
        GateOidcTrust.policy_id == policy_id, GateOidcTrust.trust_id == trust_id
    )
    return (await s.execute(stmt)).scalar_one_or_none()


async def revoke_oidc_trust(s: AsyncSession, pk: int, now: int) -> None:
    await s.execute(update(GateOidcTrust).where(GateOidcTrust.id == pk).values(revoked_at=now))


# --- webhook receipts ----------------------------------------------------------------------------


async def record_receipt(s: AsyncSession, webhook_id: str, now: int) -> bool:
    """Remember ``webhook_id``; False when it was already seen (a replay)."""
    result = await s.execute(
        dialect_insert(s)(WebhookReceipt)
        .values(webhook_id=webhook_id, received_at=now)
        .on_conflict_do_nothing()
        .returning(WebhookReceipt.webhook_id)
    )
    return result.scalar_one_or_none() is not None


async def forget_receipts(s: AsyncSession, before: int) -> None:
    await s.execute(delete(WebhookReceipt).where(WebhookReceipt.received_at < before))


# --- decisions -----------------------------------------------------------------------------------


# The decision statements of a promotion are built once per dialect and set of columns, with
# a parameter per value: building an INSERT of fifteen values (and its CTE on PostgreSQL) cost
# more CPU than the database spent running it. The values pass as execution parameters.
_DECISION_STATEMENTS: dict[tuple[str, str, tuple[str, ...]], Any] = {}
_COLUMNS = GateDecision.__table__.c


def _decision_statement(kind: str, dialect: str, names: tuple[str, ...]) -> Any:
    key = (kind, dialect, names)
    found = _DECISION_STATEMENTS.get(key)
    if found is None:
        found = _DECISION_STATEMENTS[key] = _build_decision_statement(kind, dialect, names)
    return found


def _value(name: str) -> Any:
    # Bound as v_<column>: a parameter may not be named like a column its statement sets.
    return bindparam(f"v_{name}", type_=_COLUMNS[name].type)


def _build_decision_statement(kind: str, dialect: str, names: tuple[str, ...]) -> Any:
    if kind == "update":
        return (
            update(GateDecision)
            .where(GateDecision.id == bindparam("decision_id", type_=String))
            .values({n: _value(n) for n in names})
            .returning(GateDecision)
            .execution_options(populate_existing=True)
        )
    insert_for_dialect = insert_for(dialect)
    if kind == "claim":
        return (
            insert_for_dialect(GateDecision.__table__)
            .values({n: _value(n) for n in names})
            .on_conflict_do_nothing()
            .returning(_COLUMNS.id)
        )
    assert kind == "claim_after_receipt" and dialect == "postgresql"
    receipt = (
        insert_for_dialect(WebhookReceipt.__table__)
        .values(
            webhook_id=bindparam("r_webhook_id", type_=String),
            received_at=bindparam("r_received_at", type_=BigInteger),
        )
        .on_conflict_do_nothing()
        .returning(WebhookReceipt.__table__.c.webhook_id)
        .cte("receipt")
    )
    row = select(*[_value(n) for n in names]).where(exists(select(receipt.c.webhook_id)))
    claim = (
        insert_for_dialect(GateDecision.__table__)
        .from_select(list(names), row)
        .on_conflict_do_nothing()
        .returning(_COLUMNS.id)
        .cte("claim")
    )
    return select(
        select(func.count()).select_from(receipt).scalar_subquery(),
        select(func.count()).select_from(claim).scalar_subquery(),
    )


def _params(values: dict[str, Any]) -> tuple[tuple[str, ...], dict[str, Any]]:
    names = tuple(sorted(values))
    return names, {f"v_{n}": values[n] for n in names}


async def claim_decision(s: AsyncSession, **values: Any) -> bool:
    """Insert a decision row; False when its (model, target, idempotency key) is taken.

    On PostgreSQL a concurrent insert of the same key waits here until the other transaction
    ends, so the loser then reads the winner's committed decision instead of acting twice.
    """
    names, params = _params(values)
    stmt = _decision_statement("claim", dialect_name(s), names)
    result = await s.execute(stmt, params)
    return result.scalar_one_or_none() is not None


async def claim_decision_after_receipt(
    s: AsyncSession, webhook_id: str, now: int, **values: Any
) -> tuple[bool, bool]:
    """``record_receipt`` and then, only when the receipt is new, ``claim_decision``:
    (receipt recorded, decision claimed). On PostgreSQL one statement (the receipt's insert
    as a data-modifying CTE that the claim's ``INSERT ... SELECT`` requires a row of), so a
    signed promotion's transaction waits for one round trip instead of two; a concurrent
    claim of the same key still waits on it, as ``claim_decision``'s does."""
    if dialect_name(s) != "postgresql":
        if not await record_receipt(s, webhook_id, now):
            return False, False
        return True, await claim_decision(s, **values)
    names, params = _params(values)
    stmt = _decision_statement("claim_after_receipt", "postgresql", names)
    params.update(r_webhook_id=webhook_id, r_received_at=now)
    recorded, claimed = (await s.execute(stmt, params)).one()
    return bool(recorded), bool(claimed)


async def update_decision(s: AsyncSession, decision_id: str, **values: Any) -> GateDecision:
    """Write ``values`` onto the decision; the updated row, read back by the same statement."""
    names, params = _params(values)
    stmt = _decision_statement("update", dialect_name(s), names)
    params["decision_id"] = decision_id
    return (await s.execute(stmt, params)).scalar_one()


async def link_superseding(s: AsyncSession, previous: str, newer: str) -> bool:
    """Point ``previous`` at the decision that supersedes it; False when another did first."""
    result = await s.execute(
        update(GateDecision)
        .where(GateDecision.id == previous, GateDecision.superseded_by.is_(None))
        .values(superseded_by=newer)
    )
    return int(getattr(result, "rowcount", 0) or 0) == 1


async def get_decision(
    s: AsyncSession, decision_id: str, *, scope: ResourceScope | None = None
) -> GateDecision | None:
    """The decision ``decision_id``; None also when it is about a model ``scope`` hides."""
    stmt = select(GateDecision).where(GateDecision.id == decision_id)
    if scope is not None:
        stmt = stmt.where(scope_predicate(scope, GateDecision.model_name))
    return (await s.execute(stmt.execution_options(populate_existing=True))).scalar_one_or_none()


async def decision_by_key(
    s: AsyncSession, model: str, target: str, key: str
) -> GateDecision | None:
    stmt = select(GateDecision).where(
        GateDecision.model_name == model,
        GateDecision.target == target,
        GateDecision.idempotency_key == key,
    )
    return (await s.execute(stmt.execution_options(populate_existing=True))).scalar_one_or_none()


async def list_decisions(
    s: AsyncSession,
    *,
    model: str | None,
    target: str | None,
    offset: int,
    limit: int,
    scope: ResourceScope | None = None,
) -> list[GateDecision]:
    stmt = select(GateDecision).order_by(GateDecision.created_at.desc(), GateDecision.id)
    if scope is not None:
        stmt = stmt.where(scope_predicate(scope, GateDecision.model_name))
    if model:
        stmt = stmt.where(GateDecision.model_name == model)
    if target:
        stmt = stmt.where(GateDecision.target == target)
    return list((await s.execute(stmt.offset(offset).limit(limit))).scalars())


async def policy_names(s: AsyncSession, ids: set[int]) -> dict[int, str]:
    if not ids:
        return {}
    rows = await s.execute(select(GatePolicy.id, GatePolicy.name).where(GatePolicy.id.in_(ids)))
    return {int(i): str(n) for i, n in rows}


# --- web UI reads ---------------------------------------------------------------------------------


async def decisions_for_version(
    s: AsyncSession, model: str, version: int, limit: int
) -> list[GateDecision]:
    """The decided (not in-flight) decisions about one version of a model, newest first."""
    stmt = (
        select(GateDecision)
        .where(
            GateDecision.model_name == model,
            GateDecision.version == version,
            GateDecision.outcome != "evaluating",
        )
        .order_by(GateDecision.created_at.desc(), GateDecision.id)
        .limit(limit)
    )
    return list((await s.execute(stmt)).scalars())


async def decisions_by_ids(s: AsyncSession, ids: list[str]) -> list[GateDecision]:
    if not ids:
        return []
    stmt = select(GateDecision).where(GateDecision.id.in_(sorted(set(ids))))
    return list((await s.execute(stmt)).scalars())


async def decision_counts(s: AsyncSession) -> dict[str, int]:
    """Gate decisions per outcome, for /metrics."""
    rows = await s.execute(
        select(GateDecision.outcome, func.count()).group_by(GateDecision.outcome)
    )
    return {outcome: int(count) for outcome, count in rows}
