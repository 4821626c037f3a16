"""Registry pages: the models list, a model's page and a version's page (provenance, files,
gate decisions and the comparison with the version holding the target)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from litestar import Request, Response, get
from sqlalchemy.ext.asyncio import AsyncSession

from gates.approvals import service as approvals
from gates.deployments import service as deployments
from gates.identity.policy import allows
from gates.policies import service as policies
from gates.policies.schemas import CheckResult, PolicyRules
from gates.server.web.pages.move_stories import move_stories
from gates.server.web.render import page, with_query
from registry import service as registry
from registry.schemas import ModelVersionOut, SearchRegisteredModels
from registry.service.history import pointer_names
from registry.service.model_versions import versions_with_digests
from registry.service.registered_models import current_holders
from tracking import service as tracking
from tracking.core.auth import Permission, Principal, current_principal, permission_opt, visibility
from tracking.core.errors import InvalidParameter, MlflowError
from tracking.core.http import database
from tracking.schemas import RunOut, SearchRuns

Req = Request[Any, Any, Any]

MODELS_PAGE = 50
VERSIONS_PAGE = 100
HISTORY_PAGE = 100
FILES_PAGE = 200
DECISIONS_SHOWN = 50
APPROVALS_SHOWN = 50
MAX_ALIASES_AS_OF = 30
ACTIVE_STAGES = ("Staging", "Production")
COMPARISON_OPERATORS = (">=", "<=", "==", "!=", ">", "<")
SOURCE_COMMIT_TAG = "mlflow.source.git.commit"
SOURCE_NAME_TAG = "mlflow.source.name"
# Run ids are generated hex strings; anything else is never put into a search filter.
_RUN_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# A search box entry that already speaks MLflow's filter grammar.
_FILTER_LIKE = re.compile(r"(=|<|>|\b(?:i?like|in)\b)", re.IGNORECASE)

MODEL_LIST = permission_opt(Permission("registered_model", "read", filtered=True))
MODEL_READ = permission_opt(Permission("registered_model", "read", "name"))
VERSION_READ = permission_opt(Permission("model_version", "read", "name"))


# --- small shared helpers (the approvals inbox uses them too) -------------------------------------


def model_url(name: str) -> str:
    return f"/models/{quote(name, safe='')}"


def version_url(name: str, version: str | int) -> str:
    return f"{model_url(name)}/versions/{quote(str(version), safe='')}"


def query_text(request: Req, key: str, limit: int = 1000) -> str:
    value = request.query_params.get(key)
    return value.strip()[:limit] if isinstance(value, str) else ""


def search_filter(q: str) -> str | None:
    """The search box: MLflow's filter grammar as typed, else a name substring."""
    if not q:
        return None
    if _FILTER_LIKE.search(q):
        return q
    return "name ILIKE '%" + q.replace("'", "''") + "%'"


def operator_of(check: CheckResult) -> str:
    """The comparison operator a check's ``expected`` starts with (``>= 0.9``), or ''."""
    expected = check.expected or ""
    for op in COMPARISON_OPERATORS:
        if expected.startswith(op):
            return op
    return ""


def rules_summary(rules: PolicyRules) -> list[str]:
    """A policy's rules as short lines people read: thresholds, champion, approvals..."""
    lines = [f"{t.metric} {t.op} {t.value:g}" for t in rules.metrics]
    c = rules.champion
    if c is not None:
        direction = "higher is better" if c.higher_is_better else "lower is better"
        rel = " (relative)" if c.relative else ""
        if c.min_improvement is not None:
            lines.append(f"beats champion on {c.metric} by >= {c.min_improvement:g}{rel}")
        else:
            lines.append(
                f"regresses vs champion on {c.metric} by <= {c.max_regression or 0:g}{rel}"
            )
        lines[-1] += f"; {direction}"
    lines += [f"tag {k} present" for k in rules.required_tags]
    lines += [f"tag {k} == {v}" for k, v in rules.tags.items()]
    lines += [f"param {k} present" for k in rules.required_params]
    lines += [f"param {k} == {v}" for k, v in rules.params.items()]
    lines += [f"version tag {k} present" for k in rules.required_version_tags]
    lines += [f"version tag {k} == {v}" for k, v in rules.version_tags.items()]
    if rules.require_finished:
        lines.append("run FINISHED")
    if rules.require_digest:
        lines.append("artifact digest present")
    if rules.prior_targets:
        lines.append("held before: " + ", ".join(rules.prior_targets))
    lines.append(f"approvals required: {rules.required_approvals}")
    return lines


def metric_directions(rules: PolicyRules | None) -> dict[str, bool]:
    """metric -> higher is better, as far as a gate's rules say."""
    out: dict[str, bool] = {}
    if rules is None:
        return out
    for t in rules.metrics:
        if t.op in (">=", ">"):
            out[t.metric] = True
        elif t.op in ("<=", "<"):
            out[t.metric] = False
    if rules.champion is not None:
        out[rules.champion.metric] = rules.champion.higher_is_better
    return out


# --- runs the caller may (or may not) read ----------------------------------------------------


@dataclass(slots=True)
class RunAccess:
    """A run as the page may show it: ``run`` is None when missing or not readable."""

    run_id: str
    run: RunOut | None = None
    readable: bool = True
    experiment: str | None = None

    @property
    def note(self) -> str:
        if not self.readable:
            return (
                f"You cannot read experiment '{self.experiment}', which logged run "
                f"{self.run_id}: its provenance is hidden."
            )
        if self.run is None:
            return f"Run {self.run_id} was not found."
        return ""


def can_read_experiment(principal: Principal | None, experiment_id: int, name: str) -> bool:
    """The guard's own rule for reading a run (auth off or admin: everything)."""
    if principal is None or principal.is_admin:
        return True
    return allows(principal.grants, "experiment", name, experiment_id, "read")


async def load_runs(
    s: AsyncSession, principal: Principal | None, run_ids: list[str | None]
) -> dict[str, RunAccess]:
    """Load several runs in a fixed number of queries, hiding those of unreadable experiments."""
    wanted = sorted({r for r in run_ids if r and _RUN_ID.match(r)})
    out = {r: RunAccess(r) for r in wanted}
    if not wanted:
        return out
    experiments = await tracking.experiments_of_runs(s, wanted)
    readable = []
    for run_id, exp in experiments.items():
        if can_read_experiment(principal, exp.experiment_id, exp.name):
            readable.append(run_id)
        else:
            out[run_id] = RunAccess(run_id, None, False, exp.name)
    if readable:
        quoted = ", ".join(f"'{r}'" for r in sorted(readable))
        found, _ = await tracking.search_runs(
            s,
            SearchRuns(
                experiment_ids=sorted({str(experiments[r].experiment_id) for r in readable}),
                filter=f"attributes.run_id IN ({quoted})",
                run_view_type="ALL",
                max_results=len(readable),
            ),
        )
        for run in found:
            out[run.info.run_id] = RunAccess(run.info.run_id, run)
    return out


# --- comparisons ---------------------------------------------------------------------------------


@dataclass(slots=True)
class CompareRow:
    key: str
    ours: Any
    theirs: Any
    css: str = ""  # '' | changed | better | worse


@dataclass(slots=True)
class Comparison:
    """The candidate's metrics and params beside those of the version holding the target."""

    target: str
    holder: ModelVersionOut | None
    candidate_run: RunAccess | None
    holder_run: RunAccess | None
    metrics: list[CompareRow] = field(default_factory=list)
    params: list[CompareRow] = field(default_factory=list)
    same_version: bool = False


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    return None


def compare_runs(
    ours: RunOut | None, theirs: RunOut | None, directions: dict[str, bool]
) -> tuple[list[CompareRow], list[CompareRow]]:
    """Rows of metrics and params, each marked changed / better / worse."""
    om = {m.key: m.value for m in ours.data.metrics} if ours else {}
    tm = {m.key: m.value for m in theirs.data.metrics} if theirs else {}
    metrics = []
    for key in sorted(set(om) | set(tm)):
        a, b = om.get(key), tm.get(key)
        css = ""
        if a != b:
            css = "changed"
            x, y = _number(a), _number(b)
            if key in directions and x is not None and y is not None:
                better = x > y if directions[key] else x < y
                css = "better" if better else "worse"
        metrics.append(CompareRow(key, a, b, css))
    op = {p.key: p.value for p in ours.data.params} if ours else {}
    tp = {p.key: p.value for p in theirs.data.params} if theirs else {}
    params = [
        CompareRow(k, op.get(k), tp.get(k), "changed" if op.get(k) != tp.get(k) else "")
        for k in sorted(set(op) | set(tp))
    ]
    return metrics, params


def comparison(
    target: str,
    candidate_version: str,
    candidate: RunAccess | None,
    holder: ModelVersionOut | None,
    runs: dict[str, RunAccess],
    directions: dict[str, bool],
) -> Comparison:
    holder_run = runs.get(holder.run_id) if holder is not None and holder.run_id else None
    out = Comparison(target, holder, candidate, holder_run)
    out.same_version = holder is not None and holder.version == candidate_version
    out.metrics, out.params = compare_runs(
        candidate.run if candidate else None,
        holder_run.run if holder_run else None,
        directions,
    )
    return out


# --- the models list ------------------------------------------------------------------------------


@dataclass(slots=True)
class ModelRow:
    name: str
    url: str
    description: str | None
    tags: list[tuple[str, str]]
    stages: dict[str, str]
    aliases: list[tuple[str, str]]
    gates: list[tuple[str, str]]  # (target, gate name) of the gates guarding it
    last_updated: int


async def models_page_data(
    s: AsyncSession, filter_string: str | None, page_token: str | None, scope: Any
) -> tuple[list[ModelRow], str | None]:
    """One page of models with stages, aliases and gate badges: a fixed number of queries."""
    found, token = await registry.search_registered_models(
        s,
        SearchRegisteredModels(
            filter=filter_string, max_results=MODELS_PAGE, page_token=page_token
        ),
        scope=scope,
    )
    bound = await policies.policies_for_models(s, [m.name for m in found])
    rows = []
    for m in found:
        stages = {
            v.current_stage: v.version
            for v in m.latest_versions
            if v.current_stage in ACTIVE_STAGES
        }
        gates = sorted(
            (b.policy.target, b.policy.name) for b in bound.get(m.name, []) if b.effective
        )
        rows.append(
            ModelRow(
                name=m.name,
                url=model_url(m.name),
                description=m.description,
                tags=[(t.key, t.value) for t in m.tags],
                stages=stages,
                aliases=[(a.alias, a.version) for a in m.aliases],
                gates=gates,
                last_updated=m.last_updated_timestamp,
            )
        )
    return rows, token


@get("/models", opt=MODEL_LIST, include_in_schema=False)
async def models_list(request: Req) -> Response[Any]:
    q = query_text(request, "q")
    token = query_text(request, "page_token") or None
    rows: list[ModelRow] = []
    next_token = None
    error = None
    try:
        async with database(request).read() as s:
            rows, next_token = await models_page_data(
                s, search_filter(q), token, visibility(request, "registered_model")
            )
    except MlflowError as exc:
        if exc.status_code >= 500:
            raise
        error = exc.message
    return page(
        request,
        "models.html",
        status_code=400 if error else 200,
        q=q,
        rows=rows,
        error=error,
        next_url=(
            with_query("/models", q=q, page_token=next_token) if next_token is not None else None
        ),
        first_url=with_query("/models", q=q) if token else None,
    )


# --- a model's page --------------------------------------------------------------------------


def parse_at(raw: str) -> int:
    """An ``<input type="datetime-local">`` value, read as UTC, in ms."""
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        raise InvalidParameter(
            f"Cannot read the time '{raw}': use YYYY-MM-DDTHH:MM[:SS] (UTC)."
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    if parsed.year < 1970:
        raise InvalidParameter("The time must be after 1970-01-01.")
    return int(parsed.timestamp() * 1000)


def at_input_value(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]


async def _pointers_as_of(s: AsyncSession, model: Any, at_ms: int) -> list[Any]:
    """What every stage and (current or past) alias held at ``at_ms``."""
    pointers = list(ACTIVE_STAGES)
    for p in [*(f"@{a.alias}" for a in model.aliases), *await pointer_names(s, model.name)]:
        if p.startswith("@") and p not in pointers:
            pointers.append(p)
    return [
        await registry.pointer_at(s, model.name, p, at_ms)
        for p in pointers[: len(ACTIVE_STAGES) + MAX_ALIASES_AS_OF]
    ]


@get("/models/{name:str}", opt=MODEL_READ, include_in_schema=False)
async def model_page(request: Req, name: str) -> Response[Any]:
    raw_at = query_text(request, "at", 64)
    versions_token = query_text(request, "versions_token") or None
    history_token = query_text(request, "history_token") or None
    at_ms = None
    at_error = None
    if raw_at:
        try:
            at_ms = parse_at(raw_at)
        except InvalidParameter as exc:
            at_error = exc.message
    async with database(request).read() as s:
        model = await registry.get_registered_model(s, name)
        try:
            versions, next_versions = await versions_with_digests(
                s, model.name, VERSIONS_PAGE, versions_token
            )
            history, next_history = await registry.pointer_history(
                s, model.name, None, HISTORY_PAGE, history_token
            )
        except InvalidParameter as exc:  # a stale or forged page token
            raise InvalidParameter(f"Cannot show that page: {exc.message}") from None
        bound = (await policies.policies_for_models(s, [model.name], include_disabled=True))[
            model.name
        ]
        pending, _ = await approvals.list_requests(s, "pending", model.name, APPROVALS_SHOWN)
        stories = await move_stories(s, model.name, history)
        serving = await deployments.deployments_of(s, model.name)
        as_of = None if at_ms is None else await _pointers_as_of(s, model, at_ms)
    base = model_url(model.name)
    return page(
        request,
        "model.html",
        model=model,
        model_base=base,
        versions=versions,
        version_url=version_url,
        next_versions_url=(
            with_query(base, versions_token=next_versions) if next_versions else None
        ),
        history=history,
        stories=stories,
        next_history_url=with_query(base, history_token=next_history) if next_history else None,
        policies=[(b, rules_summary(b.policy.rules)) for b in bound],
        pending=pending,
        deployments=serving,
        raw_at=raw_at,
        at_value=at_input_value(at_ms) if at_ms is not None else raw_at,
        at_ms=at_ms,
        at_error=at_error,
        as_of=as_of,
    )


# --- a version's page ---------------------------------------------------------------------------


def choose_target(raw: str, bound: list[policies.BoundPolicy]) -> str:
    """The comparison target: ``?target=`` (a stage or ``@alias``), else the gate's target
    (Production first when several gates guard the model), else Production."""
    if raw:
        kind, canonical = registry.parse_pointer(raw)
        return canonical if kind == "stage" else f"@{canonical}"
    targets = [b.policy.target for b in bound if b.effective]
    if "Production" in targets or not targets:
        return "Production"
    return sorted(targets)[0]


async def _files_page(s: AsyncSession, mv: Any, files_token: str | None) -> Any:
    try:
        return await registry.model_version_files(s, mv.name, mv.version, FILES_PAGE, files_token)
    except InvalidParameter as exc:
        raise InvalidParameter(f"Cannot show that page of files: {exc.message}") from None


def _target_or_error(raw: str, bound: list[Any]) -> tuple[str, str | None]:
    """The target to compare against, and why ``raw`` was not usable (the default is shown)."""
    try:
        return choose_target(raw, bound), None
    except MlflowError as exc:
        if exc.status_code >= 500:
            raise
        return choose_target("", bound), exc.message


@get("/models/{name:str}/versions/{version:str}", opt=VERSION_READ, include_in_schema=False)
async def version_page(request: Req, name: str, version: str) -> Response[Any]:
    principal = current_principal(request)
    files_token = query_text(request, "files_token") or None
    raw_target = query_text(request, "target", 300)
    async with database(request).read() as s:
        mv = await registry.get_model_version(s, name, version)
        files = await _files_page(s, mv, files_token)
        decisions = await policies.decisions_for_version(
            s, mv.name, int(mv.version), DECISIONS_SHOWN
        )
        bound = (await policies.policies_for_models(s, [mv.name]))[mv.name]
        target, target_error = _target_or_error(raw_target, bound)
        holder = (await current_holders(s, [(mv.name, target)])).get((mv.name, target))
        runs = await load_runs(s, principal, [mv.run_id, holder.run_id if holder else None])
    gate = next((b.policy for b in bound if b.effective and b.policy.target == target), None)
    candidate = runs.get(mv.run_id) if mv.run_id else None
    compared = comparison(
        target,
        mv.version,
        candidate,
        holder,
        runs,
        metric_directions(gate.rules if gate else None),
    )
    run = candidate.run if candidate else None
    tags = {t.key: t.value for t in run.data.tags} if run else {}
    base = version_url(mv.name, mv.version)
    return page(
        request,
        "version.html",
        mv=mv,
        model_href=model_url(mv.name),
        candidate=candidate,
        run=run,
        source_commit=tags.get(SOURCE_COMMIT_TAG),
        source_name=tags.get(SOURCE_NAME_TAG),
        files=files,
        next_files_url=(
            with_query(base, files_token=files.next_page_token, target=raw_target)
            if files.next_page_token
            else None
        ),
        decisions=decisions,
        operator_of=operator_of,
        comparison=compared,
        gate=gate,
        target_error=target_error,
        raw_target=raw_target,
        targets=sorted({*ACTIVE_STAGES, *(f"@{a}" for a in mv.aliases), target}),
        version_base=base,
        version_url=version_url,
    )


ROUTE_HANDLERS = [models_list, model_page, version_page]
