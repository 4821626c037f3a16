"""The promotion service: decisions check by check, the move or nothing, idempotency, guards."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from gates.policies import promotion
from gates.policies import service as policies
from gates.policies.errors import GatedTarget, IdempotencyKeyReused
from gates.policies.ports import Actor
from gates.policies.schemas import ChampionComparison, DecisionOut, PromoteRequest
from registry import service as registry
from registry.artifacts.storage import LocalStorage
from registry.errors import RegisteredModelNotFound
from registry.schemas import CreateModelVersion, CreateRegisteredModel
from tests.gates.factories import make_gate, make_run

CI = Actor("ci-admin", is_admin=True, authenticated=True)


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "artifacts")


pytestmark = pytest.mark.usefixtures("app_hooks")


async def _promote(
    session: AsyncSession,
    storage: LocalStorage,
    model: str,
    target: str,
    *,
    run_id: str | None = None,
    version: str | None = None,
    key: str | None = None,
    dry_run: bool = False,
) -> DecisionOut:
    req = PromoteRequest(
        model=model,
        target=target,
        run_id=run_id,
        version=version,
        idempotency_key=None if dry_run else key or uuid.uuid4().hex,
        dry_run=dry_run,
    )
    result = await promotion.promote(
        session, req, raw_body=b"", signed=None, bearer=CI, storage=storage, approval_ttl_hours=72
    )
    return result.decision


def _verdicts(d: DecisionOut) -> dict[str, str]:
    return {c.name: c.verdict for c in d.checks}


async def test_passing_run_registers_a_version_and_moves_the_stage(
    session: AsyncSession, storage: LocalStorage, unique: str
) -> None:
    model = f"fraud-{unique}"
    await make_gate(
        session,
        model,
        "Staging",
        metrics=["val_auc >= 0.9", "latency_ms <= 50"],
        required_tags=["git_commit"],
        params={"data_version": "v3"},
    )
    run_id = await make_run(
        session,
        metrics={"val_auc": 0.93, "latency_ms": 40},
        tags={"git_commit": "abc"},
        params={"data_version": "v3"},
        storage=storage,
    )
    decision = await _promote(session, storage, model, "staging", run_id=run_id)
    assert decision.outcome == "passed", decision.checks
    assert decision.version == "1" and decision.digest
    assert _verdicts(decision) == {
        "metric:latency_ms": "pass",
        "metric:val_auc": "pass",
        "tag:git_commit": "pass",
        "param:data_version": "pass",
        "run_status": "pass",
        "artifact_digest": "pass",
    }
    auc = next(c for c in decision.checks if c.name == "metric:val_auc")
    assert (auc.observed, auc.threshold, auc.expected) == (0.93, 0.9, ">= 0.9")
    mv = await registry.get_model_version(session, model, "1")
    assert mv.current_stage == "Staging" and mv.source == f"runs:/{run_id}/model"
    history, _ = await registry.pointer_history(session, model, "Staging")
    assert decision.decision_id in (history[0].comment or "")
    stored = await policies.get_decision(session, decision.decision_id)
    assert stored.outcome == "passed" and stored.policy_version == "1"


async def test_failing_run_is_refused_with_its_checks_and_nothing_is_created(
    session: AsyncSession, storage: LocalStorage, unique: str
) -> None:
    model = f"fraud-{unique}"
    await make_gate(session, model, "Staging", metrics=["val_auc >= 0.9"], required_tags=["git"])
    run_id = await make_run(session, metrics={"val_auc": 0.85}, status="RUNNING", storage=storage)
    decision = await _promote(session, storage, model, "Staging", run_id=run_id)
    assert decision.outcome == "failed"
    verdicts = _verdicts(decision)
    assert verdicts["metric:val_auc"] == "fail"
    assert verdicts["tag:git"] == "fail"
    assert verdicts["run_status"] == "fail"
    assert verdicts["artifact_digest"] == "skip"
    assert decision.version is None
    with pytest.raises(RegisteredModelNotFound, match="not found"):
        await registry.get_registered_model(session, model)


async def test_missing_digest_fails_and_rolls_the_version_back(
    session: AsyncSession, storage: LocalStorage, unique: str
) -> None:
    model = f"fraud-{unique}"
    await make_gate(session, model, "Staging")
    run_id = await make_run(session)  # no files: nothing to fingerprint
    decision = await _promote(session, storage, model, "Staging", run_id=run_id)
    assert decision.outcome == "failed"
    assert _verdicts(decision)["artifact_digest"] == "fail"
    assert decision.version is None
    with pytest.raises(RegisteredModelNotFound, match="not found"):
        await registry.get_registered_model(session, model)


async def test_champion_must_be_beaten_by_the_margin(
    session: AsyncSession, storage: LocalStorage, unique: str
) -> None:
    model = f"fraud-{unique}"
    await make_gate(
        session,
        model,
        "@champion",
        champion=ChampionComparison(metric="val_auc", min_improvement=0.01),
    )
    first = await make_run(session, metrics={"val_auc": 0.90}, storage=storage)
    d1 = await _promote(session, storage, model, "@champion", run_id=first)
    assert d1.outcome == "passed"
    assert next(c for c in d1.checks if c.name == "champion:val_auc").detail == (
        "no version holds the target yet"
    )
    slightly = await make_run(session, metrics={"val_auc": 0.905}, storage=storage)
    d2 = await _promote(session, storage, model, "@champion", run_id=slightly)
    assert d2.outcome == "failed"
    champ = next(c for c in d2.checks if c.name == "champion:val_auc")
    assert champ.verdict == "fail" and champ.observed == 0.905
    assert "champion version 1: 0.9" in (champ.detail or "")
    better = await make_run(session, metrics={"val_auc": 0.92}, storage=storage)
    d3 = await _promote(session, storage, model, "@champion", run_id=better)
    assert d3.outcome == "passed" and d3.version == "2"
    assert (await registry.get_version_by_alias(session, model, "champion")).version == "2"


async def test_no_regression_margin_is_relative_when_asked(
    session: AsyncSession, storage: LocalStorage, unique: str
) -> None:
    model = f"fraud-{unique}"
    await make_gate(
        session,
        model,
        "Staging",
        champion=ChampionComparison(
            metric="latency_ms", higher_is_better=False, max_regression=0.10, relative=True
        ),
    )
    base = await make_run(session, metrics={"latency_ms": 100}, storage=storage)
    assert (await _promote(session, storage, model, "Staging", run_id=base)).outcome == "passed"
    ok = await make_run(session, metrics={"latency_ms": 109}, storage=storage)
    assert (await _promote(session, storage, model, "Staging", run_id=ok)).outcome == "passed"
    # The champion is now version 2 (109 ms); 125 ms is more than 10% worse.
    slow = await make_run(session, metrics={"latency_ms": 125}, storage=storage)
    assert (await _promote(session, storage, model, "Staging", run_id=slow)).outcome == "failed"


async def test_prior_target_is_required_and_reuses_the_staged_version(
    session: AsyncSession, storage: LocalStorage, unique: str
) -> None:
    model = f"fraud-{unique}"
    await make_gate(session, model, "Staging")
    await make_gate(session, model, "Production", prior_targets=["Staging"])
    run_id = await make_run(session, storage=storage)
    early = await _promote(session, storage, model, "Production", run_id=run_id)
    assert early.outcome == "failed"
    assert _verdicts(early)["prior_target:Staging"] == "fail"
    staged = await _promote(session, storage, model, "Staging", run_id=run_id)
    assert staged.outcome == "passed" and staged.version == "1"
    prod = await _promote(session, storage, model, "Production", run_id=run_id)
    assert prod.outcome == "passed" and prod.version == "1"  # the same version, not a copy
    assert (await registry.get_model_version(session, model, "1")).current_stage == "Production"


async def test_same_idempotency_key_returns_the_stored_decision(
    session: AsyncSession, storage: LocalStorage, unique: str
) -> None:
    model = f"fraud-{unique}"
    await make_gate(session, model, "Staging")
    run_id = await make_run(session, storage=storage)
    first = await _promote(session, storage, model, "Staging", run_id=run_id, key="k1")
    again = await _promote(session, storage, model, "Staging", run_id=run_id, key="k1")
    assert again == first
    versions = await registry.versions_of_run(session, model, run_id)
    assert [v.version for v in versions] == ["1"]
    other = await make_run(session, storage=storage)
    with pytest.raises(IdempotencyKeyReused):
        await _promote(session, storage, model, "Staging", run_id=other, key="k1")


async def test_dry_run_evaluates_without_acting(
    session: AsyncSession, storage: LocalStorage, unique: str
) -> None:
    model = f"fraud-{unique}"
    await make_gate(session, model, "Staging", metrics=["val_auc >= 0.9"])
    run_id = await make_run(session, metrics={"val_auc": 0.95}, storage=storage)
    decision = await _promote(session, storage, model, "Staging", run_id=run_id, dry_run=True)
    assert decision.dry_run and decision.outcome == "passed" and decision.version is None
    assert "dry run" in (
        next(c for c in decision.checks if c.name == "artifact_digest").detail or ""
    )
    with pytest.raises(RegisteredModelNotFound, match="not found"):
        await registry.get_registered_model(session, model)


async def test_plain_transition_onto_a_gated_target_is_refused_naming_the_gate(
    session: AsyncSession, storage: LocalStorage, unique: str
) -> None:
    model = f"fraud-{unique}"
    gate = await make_gate(session, model, "Production")
    await make_gate(session, model, "@champion", name=f"{gate}-alias")
    run_id = await make_run(session, storage=storage)
    await registry.create_registered_model(session, CreateRegisteredModel(name=model), actor="bob")
    await registry.create_model_version(
        session,
        CreateModelVersion(name=model, source=f"runs:/{run_id}/model", run_id=run_id),
        actor="bob",
    )
    with pytest.raises(GatedTarget, match=gate):
        await registry.transition_stage(session, model, "1", "Production", actor="bob")
    with pytest.raises(GatedTarget, match=f"{gate}-alias"):
        await registry.set_alias(session, model, "champion", "1", actor="bob")
    # Other targets are not gated.
    await registry.transition_stage(session, model, "1", "Staging", actor="bob")
