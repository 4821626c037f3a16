"""Policy specs as users write them, turned into canonical, hashable rules (and back)."""

from __future__ import annotations

import fnmatch
import hashlib
import math
import re
from dataclasses import dataclass

import msgspec

from gates.policies.errors import InvalidPolicy
from gates.policies.schemas import MetricThreshold, PolicyRules, PolicySpec
from registry.service import parse_pointer
from tracking.core.errors import InvalidParameter

OPERATORS = (">=", "<=", "==", "!=", ">", "<")
_EXPRESSION = re.compile(
    r"^\s*(?P<metric>[^<>=!]+?)\s*(?P<op>>=|<=|==|!=|>|<)\s*(?P<value>\S+)\s*$"
)
_GLOB_CHARS = set("*?[")
MAX_NAME_LEN = 256
MAX_RULE_ITEMS = 100
MAX_APPROVALS = 10


@dataclass(frozen=True, slots=True)
class Binding:
    """What a policy guards: a model name or glob, and a stage or ``@alias``."""

    model_pattern: str
    target: str


def canonical_target(raw: str | None, what: str = "target") -> str:
    """``production`` -> ``Production``; ``@champion`` stays an alias. Bad input is a 400."""
    if not raw:
        raise InvalidParameter(f"Missing value for required parameter '{what}'.")
    kind, name = parse_pointer(raw.strip())
    return name if kind == "stage" else f"@{name}"


def target_pointer(target: str) -> tuple[str, str]:
    """(pointer kind, canonical pointer name) of a canonical target."""
    return ("alias", target[1:]) if target.startswith("@") else ("stage", target)


def is_glob(pattern: str) -> bool:
    return any(ch in _GLOB_CHARS for ch in pattern)


def pattern_matches(pattern: str, model: str) -> bool:
    return fnmatch.fnmatchcase(model, pattern) if is_glob(pattern) else pattern == model


def _literal_ends(pattern: str) -> tuple[str, str]:
    """The literal text before the first and after the last wildcard of a glob."""
    starts = [i for i, ch in enumerate(pattern) if ch in _GLOB_CHARS]
    if not starts:
        return pattern, pattern
    last = max(i for i, ch in enumerate(pattern) if ch in _GLOB_CHARS or ch == "]")
    return pattern[: starts[0]], pattern[last + 1 :]


def patterns_overlap(a: str, b: str) -> bool:
    """Whether some model name could match both patterns (conservative: when unsure, yes).

    An exact name overlaps a glob that matches it; two globs overlap unless their literal
    prefixes or suffixes already disagree."""
    if not is_glob(a) or not is_glob(b):
        if not is_glob(a) and not is_glob(b):
            return a == b
        exact, glob = (a, b) if not is_glob(a) else (b, a)
        return fnmatch.fnmatchcase(exact, glob)
    (pa, sa), (pb, sb) = _literal_ends(a), _literal_ends(b)
    prefixes_agree = pa.startswith(pb) or pb.startswith(pa)
    suffixes_agree = sa.endswith(sb) or sb.endswith(sa)
    return prefixes_agree and suffixes_agree


def specificity(pattern: str) -> tuple[int, int]:
    """Orders the gates matching one model: an exact name first, then the longest pattern."""
    return (0 if is_glob(pattern) else 1, len(pattern))


def parse_threshold(item: str | MetricThreshold) -> MetricThreshold:
    if isinstance(item, MetricThreshold):
        metric, op, value = item.metric.strip(), item.op.strip(), item.value
    else:
        match = _EXPRESSION.match(item)
        if match is None:
            raise InvalidPolicy(
                f"Invalid metric threshold '{item}': write it as '<metric> <op> <number>' with "
                f"op one of {', '.join(OPERATORS)}."
            )
        metric, op = match["metric"], match["op"]
        try:
            value = float(match["value"])
        except ValueError:
            raise InvalidPolicy(f"Invalid metric threshold '{item}': not a number.") from None
    if op not in OPERATORS:
        raise InvalidPolicy(f"Invalid operator '{op}': use one of {', '.join(OPERATORS)}.")
    if not metric or len(metric) > 250:
        raise InvalidPolicy("A metric threshold needs a metric name of at most 250 characters.")
    if not math.isfinite(value):
        raise InvalidPolicy(f"Threshold of '{metric}' must be a finite number.")
    return MetricThreshold(metric=metric, op=op, value=value)


def _keys(items: list[str], what: str) -> list[str]:
    out = sorted({k.strip() for k in items})
    if any(not k for k in out):
        raise InvalidPolicy(f"{what} may not contain an empty key.")
    return out


def rules_from_spec(spec: PolicySpec) -> PolicyRules:
    lists = (
        spec.metrics,
        spec.required_tags,
        spec.required_params,
        spec.required_version_tags,
        spec.prior_targets,
    )
    maps = (spec.tags, spec.params, spec.version_tags)
    if any(len(x) > MAX_RULE_ITEMS for x in lists) or max(len(m) for m in maps) > MAX_RULE_ITEMS:
        raise InvalidPolicy(f"A policy may list at most {MAX_RULE_ITEMS} items per check.")
    if not 0 <= spec.required_approvals <= MAX_APPROVALS:
        raise InvalidPolicy(f"required_approvals must be between 0 and {MAX_APPROVALS}.")
    champion = spec.champion
    if champion is not None:
        if (champion.min_improvement is None) == (champion.max_regression is None):
            raise InvalidPolicy(
                "champion needs exactly one of min_improvement (must beat by) or "
                "max_regression (may be worse by at most)."
            )
        margin = (
            champion.min_improvement
            if champion.min_improvement is not None
            else (champion.max_regression)
        )
        if margin is None or not math.isfinite(margin) or margin < 0:
            raise InvalidPolicy("champion margins must be finite and non-negative.")
        if not champion.metric.strip():
            raise InvalidPolicy("champion needs a metric.")
    thresholds = sorted(
        {parse_threshold(m) for m in spec.metrics}, key=lambda t: (t.metric, t.op, t.value)
    )
    return PolicyRules(
        metrics=thresholds,
        champion=champion,
        required_tags=_keys(spec.required_tags, "required_tags"),
        tags=dict(sorted(spec.tags.items())),
        required_params=_keys(spec.required_params, "required_params"),
        params=dict(sorted(spec.params.items())),
        required_version_tags=_keys(spec.required_version_tags, "required_version_tags"),
        version_tags=dict(sorted(spec.version_tags.items())),
        require_finished=spec.require_finished,
        require_digest=spec.require_digest,
        required_approvals=spec.required_approvals,
        prior_targets=[canonical_target(t, "prior_targets") for t in spec.prior_targets],
        archive_existing_versions=spec.archive_existing_versions,
    )


def binding_from_spec(spec: PolicySpec) -> Binding:
    pattern = (spec.model or "").strip()
    if not pattern:
        raise InvalidParameter("Missing value for required parameter 'model'.")
    if len(pattern) > MAX_NAME_LEN:
        raise InvalidPolicy(f"model may be at most {MAX_NAME_LEN} characters.")
    return Binding(pattern, canonical_target(spec.target))


def validate_gate_name(name: str | None) -> str:
    if not name or not name.strip():
        raise InvalidParameter("Missing value for required parameter 'name'.")
    if len(name) > MAX_NAME_LEN or not re.fullmatch(r"[\w.\-]+", name):
        raise InvalidPolicy(
            f"Invalid gate name '{name}': use letters, digits, '_', '-' and '.', at most "
            f"{MAX_NAME_LEN} characters."
        )
    return name


_encoder = msgspec.json.Encoder(order="deterministic")


def encode_rules(rules: PolicyRules) -> str:
    return _encoder.encode(rules).decode()


def decode_rules(text: str) -> PolicyRules:
    return msgspec.json.decode(text, type=PolicyRules)


def spec_hash(binding: Binding, rules: PolicyRules) -> str:
    canonical = f"{binding.model_pattern}\0{binding.target}\0{encode_rules(rules)}"
    return hashlib.sha256(canonical.encode()).hexdigest()
