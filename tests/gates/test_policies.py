"""Gate policies are versioned: edits make new immutable versions, applying a file is idempotent."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from gates.policies import rules, service
from gates.policies.errors import GateAlreadyExists, InvalidPolicy
from gates.policies.schemas import ChampionComparison, MetricThreshold, PolicySpec
from tests.gates.factories import ADMIN
from tracking.core.errors import InvalidParameter


def _spec(name: str, model: str = "fraud", target: str = "Production", **kw: object) -> PolicySpec:
    return PolicySpec(name=name, model=model, target=target, **kw)  # type: ignore[arg-type]


def test_metric_expressions_parse_into_thresholds() -> None:
    assert rules.parse_threshold("val_auc >= 0.90") == MetricThreshold("val_auc", ">=", 0.9)
    assert rules.parse_threshold("latency_ms<=50") == MetricThreshold("latency_ms", "<=", 50)
    assert rules.parse_threshold("loss != 1e-3").op == "!="
    for bad in ("val_auc => 1", "val_auc >= high", ">= 3", "x >= nan"):
        with pytest.raises(InvalidPolicy):
            rules.parse_threshold(bad)


def test_targets_are_canonical_stages_or_aliases() -> None:
    assert rules.canonical_target("production") == "Production"
    assert rules.canonical_target("@champion") == "@champion"
    with pytest.raises(InvalidParameter, match="not a pointer"):
        rules.canonical_target("None")


async def test_update_makes_a_new_version_and_unchanged_update_does_not(
    session: AsyncSession,
) -> None:
    name = f"g-{uuid.uuid4().hex[:8]}"
    created = await service.create_policy(
        session, _spec(name, model=f"m-{name}", metrics=["val_auc >= 0.9"]), actor=ADMIN
    )
    assert created.version == "1"
    same, changed = await service.update_policy(
        session, _spec(name, model=f"m-{name}", metrics=["val_auc>=0.9"]), actor=ADMIN
    )
    assert (same.version, changed) == ("1", False)
    edited, changed = await service.update_policy(
        session,
        _spec(name, model=f"m-{name}", metrics=["val_auc >= 0.95"], required_approvals=2),
        actor=ADMIN,
    )
    assert (edited.version, changed) == ("2", True)
    assert edited.rules.required_approvals == 2
    versions, _ = await service.list_policy_versions(session, name)
    assert [v.version for v in versions] == ["2", "1"]
    assert versions[1].rules.metrics == [MetricThreshold("val_auc", ">=", 0.9)]


async def test_apply_creates_then_leaves_unchanged_policies_alone(session: AsyncSession) -> None:
    tag = uuid.uuid4().hex[:8]
    specs = [
        _spec(f"a-{tag}", model=f"fraud-{tag}", target="Staging", metrics=["auc >= 0.8"]),
        _spec(f"b-{tag}", model=f"fraud-{tag}", target="Production", required_approvals=2),
    ]
    first = await service.apply_policies(session, specs, actor=ADMIN)
    assert [r.action for r in first] == ["created", "created"]
    again = await service.apply_policies(session, specs, actor=ADMIN)
    assert [(r.action, r.version) for r in again] == [("unchanged", "1"), ("unchanged", "1")]
    specs[1] = _spec(f"b-{tag}", model=f"fraud-{tag}", target="Production", required_approvals=1)
    third = await service.apply_policies(session, specs, actor=ADMIN)
    assert [(r.action, r.version) for r in third] == [("unchanged", "1"), ("updated", "2")]


async def test_duplicate_names_and_bindings_are_refused(session: AsyncSession) -> None:
    name = f"g-{uuid.uuid4().hex[:8]}"
    await service.create_policy(session, _spec(name, model=f"x-{name}"), actor=ADMIN)
    with pytest.raises(GateAlreadyExists):
        await service.create_policy(session, _spec(name, model=f"y-{name}"), actor=ADMIN)
    with pytest.raises(InvalidPolicy, match="already binds"):
        await service.create_policy(session, _spec(f"{name}-2", model=f"x-{name}"), actor=ADMIN)


async def test_champion_needs_exactly_one_margin(session: AsyncSession) -> None:
    with pytest.raises(InvalidPolicy):
        await service.create_policy(
            session,
            _spec(f"g-{uuid.uuid4().hex[:8]}", champion=ChampionComparison(metric="auc")),
            actor=ADMIN,
        )


async def test_overlapping_gates_on_one_target_are_refused_naming_the_governing_gate(
    session: AsyncSession,
) -> None:
    tag = uuid.uuid4().hex[:8]
    await service.create_policy(session, _spec(f"glob-{tag}", model=f"f{tag}*"), actor=ADMIN)
    with pytest.raises(InvalidPolicy, match=f"glob-{tag}"):
        await service.create_policy(session, _spec(f"exact-{tag}", model=f"f{tag}"), actor=ADMIN)
    with pytest.raises(InvalidPolicy, match=f"glob-{tag}"):
        await service.create_policy(
            session, _spec(f"wide-{tag}", model=f"f{tag[:4]}*"), actor=ADMIN
        )
    # Another target, or a pattern no name can share, is fine.
    await service.create_policy(
        session, _spec(f"stg-{tag}", model=f"f{tag}", target="Staging"), actor=ADMIN
    )
    await service.create_policy(session, _spec(f"other-{tag}", model=f"g{tag}*"), actor=ADMIN)
    # Handing a model over to its own gate: disable the glob first; re-enabling it is refused.
    await service.set_enabled(session, f"glob-{tag}", False, actor=ADMIN)
    await service.create_policy(session, _spec(f"exact-{tag}", model=f"f{tag}"), actor=ADMIN)
    exact = await service.gate_for(session, f"f{tag}", "Production")
    assert exact is not None and exact.policy.name == f"exact-{tag}"
    with pytest.raises(InvalidPolicy, match=f"exact-{tag}"):
        await service.set_enabled(session, f"glob-{tag}", True, actor=ADMIN)


async def test_secrets_rotate_with_two_active_and_revoke(session: AsyncSession) -> None:
    name = f"g-{uuid.uuid4().hex[:8]}"
    await service.create_policy(session, _spec(name, model=f"m-{name}"), actor=ADMIN)
    first = await service.add_secret(session, name, actor=ADMIN)
    assert first.secret and first.secret.startswith("whsec_")
    second = await service.rotate_secret(session, name, 3600, actor=ADMIN)
    policy = await service.find_policy(session, name)
    active = await service.active_secret_values(session, policy.id)
    assert [sid for sid, _ in active] == [second.secret_id, first.secret_id]
    listed = await service.list_secrets(session, name)
    assert all(x.secret is None for x in listed)  # shown once, at creation
    third = await service.rotate_secret(session, name, 3600, actor=ADMIN)
    active = await service.active_secret_values(session, policy.id)
    assert [sid for sid, _ in active] == [third.secret_id, second.secret_id]
    await service.revoke_secret(session, name, second.secret_id, actor=ADMIN)
    active = await service.active_secret_values(session, policy.id)
    assert [sid for sid, _ in active] == [third.secret_id]


async def test_gate_secrets_are_sealed_at_rest_when_a_key_is_set(session: AsyncSession) -> None:
    from sqlalchemy import select

    from gates.events.signing import SecretBox
    from gates.policies.models import GateSecret

    name = f"sealed-{uuid.uuid4().hex[:8]}"
    await service.create_policy(session, _spec(name, model=f"m-{name}"), actor=ADMIN)
    box = SecretBox("a key from the secret store")
    created = await service.add_secret(session, name, actor=ADMIN, box=box)
    assert created.secret and created.secret.startswith("whsec_")  # shown once, in clear
    stored = (
        await session.execute(
            select(GateSecret.secret).where(GateSecret.secret_id == created.secret_id)
        )
    ).scalar_one()
    assert created.secret not in stored and stored.startswith("aesgcm:")
    policy = await service.find_policy(session, name)
    # The right key opens it for signature checks; without it (or with another) it is unusable.
    assert await service.active_secret_values(session, policy.id, box) == [
        (created.secret_id, created.secret)
    ]
    assert await service.active_secret_values(session, policy.id) == []
    assert await service.active_secret_values(session, policy.id, SecretBox("other")) == []
    # Secrets stored while no key was set (marked unsealed) keep working after one is set.
    legacy = await service.add_secret(session, name, actor=ADMIN)
    assert (legacy.secret_id, legacy.secret) in await service.active_secret_values(
        session, policy.id, box
    )


async def test_secret_key_rotation_new_key_first_keeps_old_secrets_open(
    session: AsyncSession,
) -> None:
    from gates.events.signing import SecretBox

    old_key, new_key = "o" * 32, "n" * 32
    name = f"rotated-{uuid.uuid4().hex[:8]}"
    await service.create_policy(session, _spec(name, model=f"m-{name}"), actor=ADMIN)
    policy = await service.find_policy(session, name)
    before = await service.add_secret(session, name, actor=ADMIN, box=SecretBox(old_key))
    rotated = SecretBox(f"{new_key},{old_key}")  # MLGATE_WEBHOOK_SECRET_KEY=new,old
    after = await service.add_secret(session, name, actor=ADMIN, box=rotated)
    assert set(await service.active_secret_values(session, policy.id, rotated)) == {
        (before.secret_id, before.secret),
        (after.secret_id, after.secret),
    }
    # The first key sealed the new secret: the new key alone opens it, the old key alone not.
    assert await service.active_secret_values(session, policy.id, SecretBox(new_key)) == [
        (after.secret_id, after.secret)
    ]
    assert await service.active_secret_values(session, policy.id, SecretBox(old_key)) == [
        (before.secret_id, before.secret)
    ]
