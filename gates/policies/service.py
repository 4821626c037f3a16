"""Gate policies: create, update (a new immutable version), apply, disable; secrets; decisions.

Takes a session and flushes; the request (or CLI command) boundary commits.
"""

from __future__ import annotations

import logging
import secrets as random_ids
from dataclasses import dataclass

import msgspec
from sqlalchemy.ext.asyncio import AsyncSession

from gates.approvals import store as approval_store
from gates.events.signing import SecretBox, SecretUnavailable
from gates.policies import ports, rules, store
from gates.policies.errors import (
    DecisionNotFound,
    GateAlreadyExists,
    GateNotFound,
    InvalidPolicy,
    SecretNotFound,
    TooManySecrets,
)
from gates.policies.models import GateDecision, GatePolicy, GatePolicyVersion, GateSecret
from gates.policies.schemas import (
    ApplyResult,
    CheckResult,
    DecisionOut,
    PolicyOut,
    PolicySpec,
    PolicyVersionOut,
    SecretOut,
)
from gates.policies.signatures import SECRET_PREFIX, new_secret
from tracking.core.auth import ResourceScope
from tracking.core.clock import now_ms
from tracking.core.errors import InvalidParameter
from tracking.core.wire import decode_page_token, encode_page_token

log = logging.getLogger("mlgate.gates")
# Without MLGATE_WEBHOOK_SECRET_KEY, secrets are stored marked as unsealed.
UNSEALED = SecretBox("")

MAX_PAGE = 1000
DEFAULT_PAGE = 100
MAX_ACTIVE_SECRETS = 2
DEFAULT_ROTATION_GRACE_SECONDS = 24 * 3600
MAX_ROTATION_GRACE_SECONDS = 30 * 24 * 3600


def page_limit(max_results: int | None) -> int:
    if max_results is None:
        return DEFAULT_PAGE
    if not 1 <= max_results <= MAX_PAGE:
        raise InvalidParameter(f"max_results must be between 1 and {MAX_PAGE}.")
    return max_results


def new_id() -> str:
    return random_ids.token_hex(16)


# --- rendering -----------------------------------------------------------------------------------


def policy_out(p: GatePolicy, v: GatePolicyVersion) -> PolicyOut:
    return PolicyOut(
        policy_id=str(p.id),
        name=p.name,
        model=p.model_pattern,
        target=p.target,
        enabled=p.enabled,
        version=str(v.version),
        rules=rules.decode_rules(v.spec),
        created_at=p.created_at,
        updated_at=p.updated_at,
        created_by=p.created_by,
    )


def policy_version_out(v: GatePolicyVersion) -> PolicyVersionOut:
    return PolicyVersionOut(
        version=str(v.version),
        policy_version_id=str(v.id),
        model=v.model_pattern,
        target=v.target,
        rules=rules.decode_rules(v.spec),
        created_at=v.created_at,
        created_by=v.created_by,
    )


_checks_type = list[CheckResult]


def encode_checks(checks: list[CheckResult]) -> str:
    return msgspec.json.encode(checks).decode()


def decision_out(
    d: GateDecision, policy_name: str, approval_status: str | None = None
) -> DecisionOut:
    return DecisionOut(
        decision_id=d.id,
        outcome=d.outcome,
        checks=msgspec.json.decode(d.checks, type=_checks_type),
        policy_id=str(d.policy_id),
        policy_name=policy_name,
        policy_version=str(d.policy_version),
        model=d.model_name,
        target=d.target,
        actor=d.actor,
        created_at=d.created_at,
        dry_run=d.dry_run,
        trigger=d.trigger,
        run_id=d.run_id,
        version=None if d.version is None else str(d.version),
        digest=d.digest,
        requested_by=d.requested_by,
        idempotency_key=d.idempotency_key,
        approval_request_id=d.approval_request_id,
        approval_status=approval_status,
        supersedes=d.supersedes,
        superseded_by=d.superseded_by,
        verified_identity=(
            msgspec.json.decode(d.verified_identity, type=dict[str, str])
            if d.verified_identity
            else None
        ),
    )


def secret_out(sec: GateSecret, gate: str, now: int, *, revealed: str | None = None) -> SecretOut:
    active = sec.revoked_at is None and (sec.expires_at is None or sec.expires_at > now)
    return SecretOut(
        secret_id=sec.secret_id,
        gate=gate,
        created_at=sec.created_at,
        created_by=sec.created_by,
        active=active,
        expires_at=sec.expires_at,
        revoked_at=sec.revoked_at,
        secret=revealed,
    )


# --- policies ------------------------------------------------------------------------------------


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
    matching = [
        p
        for p in await store.enabled_policies_for_target(s, target)
        if rules.pattern_matches(p.model_pattern, model)
    ]
    if not matching:
        return None
    chosen = max(matching, key=lambda p: (rules.specificity(p.model_pattern), -p.id))
    return ResolvedGate(
        chosen, await store.get_policy_version(s, chosen.id, chosen.current_version)
    )


# --- secrets -------------------------------------------------------------------------------------


async def add_secret(
    s: AsyncSession, gate: str | None, *, actor: str, box: SecretBox = UNSEALED
) -> SecretOut:
    """A new signing secret for ``gate``; the answer is the only time it is shown."""
    policy = await find_policy(s, gate, lock=True)
    now = now_ms()
    if len(await store.active_secrets(s, policy.id, now)) >= MAX_ACTIVE_SECRETS:
        raise TooManySecrets(policy.name)
    return await _insert_secret(s, policy, now, actor, box)


async def _insert_secret(
    s: AsyncSession, policy: GatePolicy, now: int, actor: str, box: SecretBox
) -> SecretOut:
    secret_id = "gs_" + random_ids.token_hex(12)
    plain = new_secret()
    await store.insert_secret(
        s,
        policy_id=policy.id,
        secret_id=secret_id,
        # Sealed with MLGATE_WEBHOOK_SECRET_KEY when it is set: a database dump alone cannot
        # sign promotions.
        secret=box.seal(plain),
        created_at=now,
        created_by=actor,
    )
    created = await store.get_secret(s, policy.id, secret_id)
    assert created is not None
    await ports.audit(
        s, "policy.secret_added", f"policy:{policy.name}", {"secret_id": secret_id}, actor
    )
    return secret_out(created, policy.name, now, revealed=plain)


async def rotate_secret(
    s: AsyncSession,
    gate: str | None,
    grace_seconds: int | None = None,
    *,
    actor: str,
    box: SecretBox = UNSEALED,
) -> SecretOut:
    """A new secret; the newest previous one stays valid for ``grace_seconds`` (default a
    day), and any older ones are revoked, so at most two are ever active."""
    grace = DEFAULT_ROTATION_GRACE_SECONDS if grace_seconds is None else grace_seconds
    if not 0 <= grace <= MAX_ROTATION_GRACE_SECONDS:
        raise InvalidParameter(f"grace_seconds must be between 0 and {MAX_ROTATION_GRACE_SECONDS}.")
    policy = await find_policy(s, gate, lock=True)
    now = now_ms()
    active = await store.active_secrets(s, policy.id, now)  # newest first
    for index, old in enumerate(active):
        if index == 0 and grace > 0:
            expires = now + grace * 1000
            if old.expires_at is None or old.expires_at > expires:
                await store.update_secret(s, old.id, expires_at=expires)
        else:
            await store.update_secret(s, old.id, revoked_at=now)
    return await _insert_secret(s, policy, now, actor, box)


async def revoke_secret(
    s: AsyncSession, gate: str | None, secret_id: str | None, *, actor: str
) -> SecretOut:
    policy = await find_policy(s, gate, lock=True)
    if not secret_id:
        raise InvalidParameter("Missing value for required parameter 'secret_id'.")
    found = await store.get_secret(s, policy.id, secret_id)
    if found is None:
        raise SecretNotFound(secret_id)
    now = now_ms()
    if found.revoked_at is None:
        await store.update_secret(s, found.id, revoked_at=now)
        found.revoked_at = now
        await ports.audit(
            s, "policy.secret_revoked", f"policy:{policy.name}", {"secret_id": secret_id}, actor
        )
    return secret_out(found, policy.name, now)


async def list_secrets(s: AsyncSession, gate: str | None) -> list[SecretOut]:
    policy = await find_policy(s, gate)
    now = now_ms()
    return [secret_out(x, policy.name, now) for x in await store.list_secrets(s, policy.id, 100)]


async def active_secret_values(
    s: AsyncSession, policy_id: int, box: SecretBox = UNSEALED
) -> list[tuple[str, str]]:
    """(secret id, secret) of the gate's active secrets that this server can open, newest first.

    A secret sealed under another key (or with the key unset) cannot verify anything: it is
    left out and logged, and a request signed with it fails as a bad signature.
    """
    opened: list[tuple[str, str]] = []
    for x in await store.active_secrets(s, policy_id, now_ms()):
        try:
            opened.append((x.secret_id, open_gate_secret(box, x.secret)))
        except SecretUnavailable as exc:
            log.warning("gate secret %s cannot be opened: %s", x.secret_id, exc)
    return opened


def open_gate_secret(box: SecretBox, stored: str) -> str:
    """The plaintext of a stored gate secret (rows written before sealing are plain)."""
    if stored.startswith(SECRET_PREFIX):
        return stored
    return box.open(stored)


# --- decisions -----------------------------------------------------------------------------------


async def _approval_statuses(s: AsyncSession, found: list[GateDecision]) -> dict[str, str]:
    ids = [d.approval_request_id for d in found if d.approval_request_id]
    return await approval_store.current_statuses(s, ids, now_ms())


def _with_status(d: GateDecision, names: dict[int, str], statuses: dict[str, str]) -> DecisionOut:
    status = statuses.get(d.approval_request_id) if d.approval_request_id else None
    return decision_out(d, names.get(d.policy_id, ""), status)


async def render_decision(s: AsyncSession, d: GateDecision) -> DecisionOut:
    names = await store.policy_names(s, {d.policy_id})
    return _with_status(d, names, await _approval_statuses(s, [d]))


async def get_decision(
    s: AsyncSession, decision_id: str | None, *, scope: ResourceScope | None = None
) -> DecisionOut:
    """A decision by id; one about a model ``scope`` hides answers as not found."""
    if not decision_id:
        raise InvalidParameter("Missing value for required parameter 'decision_id'.")
    found = await store.get_decision(s, decision_id, scope=scope)
    if found is None or found.outcome == "evaluating":
        raise DecisionNotFound(decision_id)
    return await render_decision(s, found)


async def list_decisions(
    s: AsyncSession,
    model: str | None = None,
    target: str | None = None,
    max_results: int | None = None,
    page_token: str | None = None,
    *,
    scope: ResourceScope | None = None,
) -> tuple[list[DecisionOut], str | None]:
    """A page of decisions about the models ``scope`` lets through (None: all)."""
    limit = page_limit(max_results)
    canonical = rules.canonical_target(target) if target else None
    fingerprint = f"decisions:{model}:{canonical}"
    offset = decode_page_token(page_token, fingerprint)
    found = await store.list_decisions(
        s, model=model, target=canonical, offset=offset, limit=limit + 1, scope=scope
    )
    names = await store.policy_names(s, {d.policy_id for d in found})
    token = encode_page_token(offset + limit, fingerprint) if len(found) > limit else None
    statuses = await _approval_statuses(s, found[:limit])
    return [_with_status(d, names, statuses) for d in found[:limit]], token


async def announce_decision(s: AsyncSession, out: DecisionOut) -> None:
    """The gate.decided event and the audit entry, in the deciding transaction."""
    payload = msgspec.to_builtins(out)
    await ports.emit_event(s, "gate.decided", payload)
    await ports.audit(s, "gate.decided", f"model:{out.model}", payload, out.actor)


async def record_decision(s: AsyncSession, **values: object) -> DecisionOut:
    """Store a decision that needs no idempotency key (the re-evaluation of an approval)."""
    decision_id = new_id()
    await store.claim_decision(s, id=decision_id, created_at=now_ms(), **values)
    found = await store.get_decision(s, decision_id)
    assert found is not None
    return await render_decision(s, found)


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


async def decisions_for_version(
    s: AsyncSession, model: str, version: int, max_results: int | None = None
) -> list[DecisionOut]:
    """The gate decisions about one version of a model, newest first."""
    found = await store.decisions_for_version(s, model, version, page_limit(max_results))
    names = await store.policy_names(s, {d.policy_id for d in found})
    statuses = await _approval_statuses(s, found)
    return [_with_status(d, names, statuses) for d in found]


async def decisions_by_ids(s: AsyncSession, ids: list[str]) -> dict[str, DecisionOut]:
    """Several decisions by id (two queries), e.g. those of a page of approval requests."""
    found = await store.decisions_by_ids(s, ids)
    names = await store.policy_names(s, {d.policy_id for d in found})
    statuses = await _approval_statuses(s, found)
    return {d.id: _with_status(d, names, statuses) for d in found}
