"""The checks of a gate policy, evaluated against a run's provenance and the current champion."""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from gates.policies.rules import target_pointer
from gates.policies.schemas import ChampionComparison, CheckResult, MetricThreshold, PolicyRules
from registry import service as registry
from tracking import service as tracking
from tracking.core.errors import InvalidParameter, ResourceNotFound
from tracking.schemas import RunOut

PASS, FAIL, PENDING, SKIP = "pass", "fail", "pending", "skip"
_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
    "==": operator.eq,
    "!=": operator.ne,
}


@dataclass(slots=True)
class Candidate:
    """What is being promoted: the run, and the version once it exists."""

    model: str
    target: str
    run: RunOut | None
    version: int | None = None
    digest: str | None = None
    digest_checked: bool = False
    model_exists: bool = True
    # The registered model's row as read in this transaction (None before it exists).
    model_row: Any = None
    # Earlier versions registered from the same run count for "has passed Staging".
    related_versions: list[int] = field(default_factory=list)
    # The version's own tags (empty until it exists).
    version_tags: dict[str, str] = field(default_factory=dict)
    # Who registered the version (authenticated; None with auth off or before it exists).
    version_author: str | None = None

    @property
    def author(self) -> str | None:
        """Who made what is promoted, barred from approving it: the run's author, or for a
        version without a run (a prompt version) the principal that registered it."""
        if self.run is not None:
            return self.run.info.user_id or None
        return self.version_author


@dataclass(frozen=True, slots=True)
class Champion:
    version: int
    run: RunOut | None


def run_metrics(run: RunOut | None) -> dict[str, float]:
    if run is None:
        return {}
    out: dict[str, float] = {}
    for m in run.data.metrics:
        out[m.key] = m.value if isinstance(m.value, float | int) else float(m.value)
    return out


def _kv(items: list[object]) -> dict[str, str]:
    return {getattr(i, "key", ""): getattr(i, "value", "") for i in items}


async def load_run(s: AsyncSession, run_id: str) -> RunOut:
    """The run as the checks read it (info, params, tags, latest metrics, model outputs; no
    dataset inputs), in two reads; the same run then resolves a ``runs:/`` source."""
    return await tracking.get_run_for_checks(s, run_id)


async def find_champion(s: AsyncSession, model: str, target: str) -> Champion | None:
    """The version holding ``target`` now (with its run), or None."""
    kind, pointer = target_pointer(target)
    try:
        if kind == "stage":
            found = await registry.get_latest_versions(s, model, [pointer])
            if not found:
                return None
            holder = found[0]
        else:
            holder = await registry.get_version_by_alias(s, model, pointer)
    except (ResourceNotFound, InvalidParameter):
        return None
    run = None
    if holder.run_id:
        try:
            run = await load_run(s, holder.run_id)
        except ResourceNotFound:
            run = None
    return Champion(int(holder.version), run)


def _threshold(t: MetricThreshold, metrics: dict[str, float]) -> CheckResult:
    name = f"metric:{t.metric}"
    expected = f"{t.op} {t.value:g}"
    value = metrics.get(t.metric)
    if value is None:
        return CheckResult(
            name, FAIL, None, t.value, expected, f"the run has no metric '{t.metric}'"
        )
    if math.isnan(value):
        return CheckResult(name, FAIL, "NaN", t.value, expected, "the metric is NaN")
    ok = _OPS[t.op](value, t.value)
    return CheckResult(name, PASS if ok else FAIL, value, t.value, expected)


def _champion(
    c: ChampionComparison, candidate: Candidate, champion: Champion | None
) -> CheckResult:
    name = f"champion:{c.metric}"
    relative = " of the champion's value" if c.relative else ""
    if c.min_improvement is not None:
        margin = c.min_improvement
        expected = f"beats the champion by >= {margin:g}{relative}"
    else:
        margin = c.max_regression or 0.0
        expected = f"regresses by <= {margin:g}{relative}"
    if champion is None:
        return CheckResult(name, PASS, None, margin, expected, "no version holds the target yet")
    if candidate.version is not None and champion.version == candidate.version:
        return CheckResult(
            name, PASS, None, margin, expected, f"version {champion.version} already holds it"
        )
    theirs = run_metrics(champion.run).get(c.metric)
    ours = run_metrics(candidate.run).get(c.metric)
    if ours is None or math.isnan(ours):
        return CheckResult(
            name, FAIL, None, margin, expected, f"the candidate has no metric '{c.metric}'"
        )
    if theirs is None or math.isnan(theirs):
        return CheckResult(
            name,
            PASS,
            ours,
            margin,
            expected,
            f"champion version {champion.version} has no metric '{c.metric}'",
        )
    gain = (ours - theirs) if c.higher_is_better else (theirs - ours)
    scale = abs(theirs) if c.relative else 1.0
    if c.min_improvement is not None:
        ok = gain >= margin * scale and gain > 0
    else:
        ok = gain >= -margin * scale
    detail = f"champion version {champion.version}: {theirs:g}; change {gain:+g}"
    return CheckResult(name, PASS if ok else FAIL, ours, margin, expected, detail)


def _presence(kind: str, key: str, values: dict[str, str], want: str | None) -> CheckResult:
    name = f"{kind}:{key}"
    got = values.get(key)
    if want is None:
        ok = got is not None and got != ""
        return CheckResult(name, PASS if ok else FAIL, got, None, "present")
    return CheckResult(name, PASS if got == want else FAIL, got, None, f"== {want}")


async def _prior_target(s: AsyncSession, candidate: Candidate, target: str) -> CheckResult:
    name = f"prior_target:{target}"
    versions = [v for v in [candidate.version, *candidate.related_versions] if v is not None]
    if not versions:
        return CheckResult(name, FAIL, None, None, "held before", "no version of this run exists")
    try:
        held = await registry.versions_that_held(s, candidate.model, target, versions)
    except ResourceNotFound:
        held = set()
    if held:
        shown = ", ".join(str(v) for v in sorted(held))
        return CheckResult(name, PASS, f"version {shown}", None, "held before")
    return CheckResult(
        name,
        FAIL,
        None,
        None,
        "held before",
        f"no version of this run has been on {target}",
    )


async def evaluate(
    s: AsyncSession,
    rules: PolicyRules,
    candidate: Candidate,
    *,
    approvals: int | None = None,
) -> list[CheckResult]:
    """Every check of ``rules``, each with what was observed; never stops at the first failure.

    ``approvals`` is the number of valid approvals so far (None: the request is new, and a
    policy that needs approvals makes that check ``pending``).
    """
    run = candidate.run
    metrics = run_metrics(run)
    checks = [_threshold(t, metrics) for t in rules.metrics]
    if rules.champion is not None:
        champion = await find_champion(s, candidate.model, candidate.target)
        checks.append(_champion(rules.champion, candidate, champion))
    tags = _kv(list(run.data.tags)) if run else {}
    params = _kv(list(run.data.params)) if run else {}
    checks += [_presence("tag", k, tags, None) for k in rules.required_tags]
    checks += [_presence("tag", k, tags, v) for k, v in rules.tags.items()]
    checks += [_presence("param", k, params, None) for k in rules.required_params]
    checks += [_presence("param", k, params, v) for k, v in rules.params.items()]
    version_tags = candidate.version_tags
    checks += [_presence("version_tag", k, version_tags, None) for k in rules.required_version_tags]
    checks += [_presence("version_tag", k, version_tags, v) for k, v in rules.version_tags.items()]
    if rules.require_finished:
        status = run.info.status if run else None
        checks.append(
            CheckResult(
                "run_status",
                PASS if status == "FINISHED" else FAIL,
                status,
                None,
                "FINISHED",
                None if run else "the version has no run",
            )
        )
    if rules.require_digest:
        checks.append(digest_check(candidate))
    for target in rules.prior_targets:
        checks.append(await _prior_target(s, candidate, target))
    if rules.required_approvals:
        given = approvals or 0
        verdict = PASS if given >= rules.required_approvals else PENDING
        checks.append(
            CheckResult(
                "approvals",
                verdict,
                given,
                rules.required_approvals,
                f">= {rules.required_approvals}",
            )
        )
    return checks


def digest_check(candidate: Candidate) -> CheckResult:
    if not candidate.digest_checked:
        return CheckResult(
            "artifact_digest", SKIP, None, None, "present", "not computed: other checks failed"
        )
    if candidate.digest:
        return CheckResult("artifact_digest", PASS, candidate.digest, None, "present")
    return CheckResult(
        "artifact_digest", FAIL, None, None, "present", "the version's artifacts have no digest"
    )


def outcome_of(checks: list[CheckResult]) -> str:
    verdicts = {c.verdict for c in checks}
    if FAIL in verdicts:
        return "failed"
    if PENDING in verdicts:
        return "pending_approval"
    return "passed"
