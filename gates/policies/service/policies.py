"""Gate policies: create, update (a new immutable version), apply, enable, read, resolve."""

from __future__ import annotations

from dataclasses import dataclass

import msgspec
from sqlalchemy.ext.asyncio import AsyncSession

from gates.policies import ports, rules, store
from gates.policies.errors import GateAlreadyExists, GateNotFound, InvalidPolicy
from gates.policies.models import GatePolicy, GatePolicyVersion, GateSecret
from gates.policies.schemas import ApplyResult, PolicyOut, PolicySpec, PolicyVersionOut
from gates.policies.service.records import page_limit, policy_out, policy_version_out
from tracking.core.auth import ResourceScope
from tracking.core.clock import now_ms
from tracking.core.driver import session_rows
from tracking.core.wire import decode_page_token, encode_page_token

# --- visibility ----------------------------------------------------------------------------------

# Gates are configuration: the glob bindings checked against the caller's models are capped.
MAX_GLOB_BINDINGS = 1000


@dataclass(frozen=True, slots=True)
class GateVisibility:
    """Which gates a caller may see: exact bindings on models ``scope`` covers, and the glob
    bindings in ``readable_globs`` (each matches at least one model the caller may read)."""

    scope: ResourceScope
    readable_globs: frozenset[str]


async def gate_visibility(s: AsyncSession, scope: ResourceScope | None) -> GateVisibility | None:
    """The gate visibility of a caller whose readable models are ``scope`` (None: all)."""
    if scope is None:
        return None
    if scope.is_empty:
        return GateVisibility(scope, frozenset())
    globs = await store.glob_bindings(s, MAX_GLOB_BINDINGS)
    readable = await ports.patterns_with_readable_models(s, globs, scope)
    return GateVisibility(scope, frozenset(readable))


async def find_policy(
    s: AsyncSession,
    name: str | None,
    *,
    lock: bool = False,
    visible: GateVisibility | None = None,
) -> GatePolicy:
    """The policy ``name``; a gate ``visible`` hides is not found, exactly as a missing one."""
    checked = rules.validate_gate_name(name)
    policy = await store.get_policy(
        s,
        checked,
        lock=lock,
        scope=visible.scope if visible else None,
        readable_globs=visible.readable_globs if visible else (),
    )
    if policy is None:
        raise GateNotFound(checked)
    return policy


async def _check_binding(
    s: AsyncSession, binding: rules.Binding, policy_id: int, *, enabled: bool = True
) -> None:
    """One gate per (model, target): a second enabled gate whose pattern could match a model
    another enabled gate on the same target matches is refused, so the gate that governs a
    target is never a surprise (with ``fraud*`` and ``fraud`` both on Staging, the glob gate's
    secret would be refused for ``fraud``). Enabling a gate is checked the same way."""
    other = await store.binding_taken(s, binding.model_pattern, binding.target, besides=policy_id)
    if other is not None:
        raise InvalidPolicy(
            f"Gate '{other}' already binds model '{binding.model_pattern}' to "
            f"'{binding.target}'; update that gate instead."
        )
    if not enabled:
        return
    for name, pattern in await store.bindings_on_target(s, binding.target, besides=policy_id):
        if rules.patterns_overlap(pattern, binding.model_pattern):
            raise InvalidPolicy(
                f"Gate '{name}' (model '{pattern}') already governs '{binding.target}' for "
                f"models that '{binding.model_pattern}' also matches; overlapping gates on one "
                "target are refused. Narrow one pattern, or update that gate instead."
            )


async def create_policy(s: AsyncSession, spec: PolicySpec, *, actor: str) -> PolicyOut:
    name = rules.validate_gate_name(spec.name)
    binding = rules.binding_from_spec(spec)
    checked = rules.rules_from_spec(spec)
    await _check_binding(
        s, binding, policy_id=-1, enabled=True if spec.enabled is None else spec.enabled
    )
    now = now_ms()
    policy_id = await store.insert_policy(
        s,
        name=name,
        model_pattern=binding.model_pattern,
        target=binding.target,
        enabled=True if spec.enabled is None else spec.enabled,
        current_version=1,
        created_at=now,
        updated_at=now,
        created_by=actor,
    )
    if policy_id is None:
        raise GateAlreadyExists(name)
    await store.insert_policy_version(
        s,
        policy_id=policy_id,
        version=1,
        model_pattern=binding.model_pattern,
        target=binding.target,
        spec=rules.encode_rules(checked),
        spec_hash=rules.spec_hash(binding, checked),
        created_at=now,
        created_by=actor,
    )
    out = await get_policy(s, name)
    await ports.audit(s, "policy.created", f"policy:{name}", _policy_audit(out), actor)
    return out


def _policy_audit(p: PolicyOut) -> dict[str, object]:
    return {
        "name": p.name,
        "policy_id": p.policy_id,
        "version": p.version,
        "model": p.model,
        "target": p.target,
        "enabled": p.enabled,
        "rules": msgspec.to_builtins(p.rules),
    }


async def update_policy(s: AsyncSession, spec: PolicySpec, *, actor: str) -> tuple[PolicyOut, bool]:
    """Store ``spec`` as the policy's next version; (policy, whether anything changed).

    Unchanged rules and binding make no new version, so applying a file twice is a no-op.
    """
    policy = await find_policy(s, spec.name, lock=True)
    binding = rules.binding_from_spec(spec)
    checked = rules.rules_from_spec(spec)
    current = await store.get_policy_version(s, policy.id, policy.current_version)
    digest = rules.spec_hash(binding, checked)
    now = now_ms()
    changed = digest != current.spec_hash
    enabling = spec.enabled is True and not policy.enabled
    if changed or enabling:
        will_be_enabled = policy.enabled if spec.enabled is None else spec.enabled
        await _check_binding(s, binding, policy.id, enabled=will_be_enabled)
    if changed:
        version = policy.current_version + 1
        await store.insert_policy_version(
            s,
            policy_id=policy.id,
            version=version,
            model_pattern=binding.model_pattern,
            target=binding.target,
            spec=rules.encode_rules(checked),
            spec_hash=digest,
            created_at=now,
            created_by=actor,
        )
        await store.update_policy(
            s,
            policy.id,
            current_version=version,
            model_pattern=binding.model_pattern,
            target=binding.target,
            updated_at=now,
        )
    if spec.enabled is not None and spec.enabled != policy.enabled:
        changed = True
        await store.update_policy(s, policy.id, enabled=spec.enabled, updated_at=now)
    out = await get_policy(s, policy.name)
    if changed:
        await ports.audit(s, "policy.updated", f"policy:{out.name}", _policy_audit(out), actor)
    return out, changed


async def set_enabled(s: AsyncSession, name: str | None, enabled: bool, *, actor: str) -> PolicyOut:
    """Disable (the delete of the API: versions stay, decisions point at them) or re-enable."""
    policy = await find_policy(s, name, lock=True)
    if enabled and not policy.enabled:
        binding = rules.Binding(policy.model_pattern, policy.target)
        await _check_binding(s, binding, policy.id)
    if policy.enabled != enabled:
        await store.update_policy(s, policy.id, enabled=enabled, updated_at=now_ms())
        kind = "policy.enabled" if enabled else "policy.disabled"
        await ports.audit(s, kind, f"policy:{policy.name}", {"name": policy.name}, actor)
    return await get_policy(s, policy.name)


async def apply_policies(
    s: AsyncSession, specs: list[PolicySpec], *, actor: str
) -> list[ApplyResult]:
    """Create or update each policy of a gates file; unchanged ones keep their version."""
    names = [rules.validate_gate_name(spec.name) for spec in specs]
    if len(set(names)) != len(names):
        raise InvalidPolicy("A gates file names each gate once.")
    results = []
    for spec in specs:
        if await store.get_policy(s, spec.name or "") is None:
            created = await create_policy(s, spec, actor=actor)
            results.append(ApplyResult(created.name, "created", created.version))
        else:
            updated, changed = await update_policy(s, spec, actor=actor)
            results.append(
                ApplyResult(updated.name, "updated" if changed else "unchanged", updated.version)
            )
    return results


async def get_policy(
    s: AsyncSession, name: str | None, *, scope: ResourceScope | None = None
) -> PolicyOut:
    """A gate by name; one the caller's ``scope`` (None: all) hides answers as not found."""
    policy = await find_policy(s, name, visible=await gate_visibility(s, scope))
    return policy_out(policy, await store.get_policy_version(s, policy.id, policy.current_version))


async def list_policies(
    s: AsyncSession,
    max_results: int | None = None,
    page_token: str | None = None,
    include_disabled: bool = False,
    *,
    scope: ResourceScope | None = None,
) -> tuple[list[PolicyOut], str | None]:
    """A page of gates, keeping those the caller's ``scope`` lets through (None: all),
    filtered inside the query so pages stay full and tokens stay right."""
    limit = page_limit(max_results)
    fingerprint = f"gates:{include_disabled}"
    offset = decode_page_token(page_token, fingerprint)
    visible = await gate_visibility(s, scope)
    found = await store.list_policies(
        s,
        include_disabled=include_disabled,
        offset=offset,
        limit=limit + 1,
        scope=visible.scope if visible else None,
        readable_globs=visible.readable_globs if visible else (),
    )
    versions = await store.current_versions(s, found[:limit])
    token = encode_page_token(offset + limit, fingerprint) if len(found) > limit else None
    return [policy_out(p, versions[p.id]) for p in found[:limit]], token


async def list_policy_versions(
    s: AsyncSession,
    name: str | None,
    max_results: int | None = None,
    page_token: str | None = None,
    *,
    scope: ResourceScope | None = None,
) -> tuple[list[PolicyVersionOut], str | None]:
    policy = await find_policy(s, name, visible=await gate_visibility(s, scope))
    limit = page_limit(max_results)
    fingerprint = f"gate-versions:{policy.id}"
    offset = decode_page_token(page_token, fingerprint)
    found = await store.list_policy_versions(s, policy.id, offset=offset, limit=limit + 1)
    token = encode_page_token(offset + limit, fingerprint) if len(found) > limit else None
    return [policy_version_out(v) for v in found[:limit]], token


@dataclass(frozen=True, slots=True)
class ResolvedGate:
    policy: GatePolicy
    version: GatePolicyVersion

    @property
    def rules(self) -> rules.PolicyRules:
        return rules.decode_rules(self.version.spec)


async def gate_for(s: AsyncSession, model: str, target: str) -> ResolvedGate | None:
    """The enabled gate guarding ``target`` of ``model``: an exact name beats a pattern,
    and a longer pattern beats a shorter one."""
    return await _choose_gate(s, model, await store.enabled_gates_for_target(s, target))


async def gate_with_secrets_for(
    s: AsyncSession, model: str, target: str
) -> tuple[ResolvedGate, list[GateSecret]] | None:
    """:func:`gate_for` and that gate's active secrets (newest first), read in one query."""
    gates: dict[int, tuple[GatePolicy, GatePolicyVersion | None]] = {}
    secrets: dict[int, list[GateSecret]] = {}
    for policy, version, secret in await store.enabled_gates_with_secrets(s, target, now_ms()):
        gates[policy.id] = (policy, version)
        if secret is not None:
            secrets.setdefault(policy.id, []).append(secret)
    chosen = await _choose_gate(s, model, list(gates.values()))
    if chosen is None:
        return None
    return chosen, secrets.get(chosen.policy.id, [])


async def _choose_gate(
    s: AsyncSession, model: str, gates: list[tuple[GatePolicy, GatePolicyVersion | None]]
) -> ResolvedGate | None:
    matching = [(p, v) for p, v in gates if rules.pattern_matches(p.model_pattern, model)]
    if not matching:
        return None
    chosen, version = max(
        matching, key=lambda pv: (rules.specificity(pv[0].model_pattern), -pv[0].id)
    )
    if version is None:  # never written so; fails as the separate read did
        version = await store.get_policy_version(s, chosen.id, chosen.current_version)
    return ResolvedGate(chosen, version)


async def gated_targets(s: AsyncSession, model: str, targets: list[str]) -> set[str]:
    """Which of ``targets`` (one or two) an enabled gate guards for ``model``: one prebuilt read
    on the transaction's connection, so a move onto and off ungated targets costs one
    statement; :func:`gate_for` then picks the gate of a guarded one."""
    found = await store.enabled_patterns(await session_rows(s), targets[0], targets[-1])
    return {t for t, pattern in found if rules.pattern_matches(pattern, model)}


# --- reads for the web UI ------------------------------------------------------------------------

# Gates are configuration (a handful per team), so the UI matches model names against every
# enabled policy in memory; the cap keeps a pathological table from being read whole.
MAX_POLICIES_MATCHED = 1000


@dataclass(frozen=True, slots=True)
class BoundPolicy:
    """A policy whose pattern matches a model; ``effective``: it is the gate ``gate_for``
    would pick for its target (an exact name beats a pattern, a longer pattern a shorter)."""

    policy: PolicyOut
    effective: bool


async def policies_for_models(
    s: AsyncSession, names: list[str], *, include_disabled: bool = False
) -> dict[str, list[BoundPolicy]]:
    """The policies bound to each model name (two queries however many names)."""
    found = await store.list_policies(
        s, include_disabled=include_disabled, offset=0, limit=MAX_POLICIES_MATCHED
    )
    versions = await store.current_versions(s, found)
    out: dict[str, list[BoundPolicy]] = {}
    for name in names:
        matching = [p for p in found if rules.pattern_matches(p.model_pattern, name)]
        chosen: dict[str, GatePolicy] = {}
        for p in matching:
            if not p.enabled:
                continue
            best = chosen.get(p.target)
            key = (rules.specificity(p.model_pattern), -p.id)
            if best is None or key > (rules.specificity(best.model_pattern), -best.id):
                chosen[p.target] = p
        out[name] = [
            BoundPolicy(policy_out(p, versions[p.id]), chosen.get(p.target) is p)
            for p in matching
            if p.id in versions
        ]
    return out
