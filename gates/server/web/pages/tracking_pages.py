"""Experiment and run pages: the experiments list, the runs table, charts, run comparison and
the run page. Every list is one bounded page; every history is downsampled by the database."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from litestar import Request, Response, get
from sqlalchemy.ext.asyncio import AsyncSession

from gates.identity.policy import allows, visible_scope
from gates.server.web import charts
from gates.server.web.pages.logged_models import run_logged_models
from gates.server.web.render import page, with_query
from gates.server.web.runs_table import (
    RUNS_PAGE,
    RunRow,
    RunsTableView,
    keys_of,
    run_points,
    run_row,
)
from registry import service as registry
from registry.schemas import SearchModelVersions
from tracking import service as tracking
from tracking.core.auth import (
    Permission,
    ResourceScope,
    current_principal,
    permission_opt,
    visibility,
)
from tracking.core.errors import InvalidParameter, PermissionDenied
from tracking.core.http import database
from tracking.errors import RunNotFound
from tracking.schemas import RunOut, SearchExperiments, SearchRuns

Req = Request[Any, Any, Any]

EXPERIMENTS_PAGE = 50
MAX_EXPERIMENTS_PAGE = 500
MAX_RUNS_PAGE = 500
DEFAULT_COLUMNS = 8  # metric and param columns shown before the user chooses
MAX_CHOSEN_COLUMNS = 60
MAX_KEY_LENGTH = 250
MAX_CHART_RUNS = 20
DEFAULT_CHART_RUNS = 10
MAX_CHART_KEYS = 12  # metric charts per page (more are one click away in the key chooser)
MAX_PARALLEL_PARAMS = 12
MAX_PARALLEL_METRICS = 8
RUN_PAGE_CHART_KEYS = 30
RUN_PAGE_POINTS = 500
RUN_PAGE_VERSIONS = 50
COMPARE_MIN_RUNS = 2
SOURCE_TAGS = (
    ("Source", "mlflow.source.name"),
    ("Source type", "mlflow.source.type"),
    ("Git commit", "mlflow.source.git.commit"),
    ("Git repository", "mlflow.source.git.repoURL"),
    ("Parent run", "mlflow.parentRunId"),
)
NOTE_TAG = "mlflow.note.content"
DATASET_CONTEXT_TAG = "mlflow.data.context"
_RUN_ID = re.compile(r"^[0-9a-fA-F]{32}$")

EXPERIMENT_LIST = permission_opt(Permission("experiment", "read", filtered=True))
EXPERIMENT_READ = permission_opt(Permission("experiment", "read", "experiment_id"))
RUN_READ = permission_opt(Permission("run", "read", "run_id"))
# The guard reads only the first run_ids value; the handler checks every run (_readable_runs).
# optional: with no run_ids at all the guard lets the handler answer "choose 2 to 20 runs".
RUNS_READ = permission_opt(Permission("run", "read", "run_ids", optional=True))


# --- query parameters -----------------------------------------------------------------------------


def _text(request: Req, name: str, limit: int = 2000) -> str:
    value = request.query_params.get(name)
    return value.strip()[:limit] if isinstance(value, str) else ""


def _texts(request: Req, name: str, limit: int = MAX_CHOSEN_COLUMNS) -> list[str]:
    """Repeated values, stripped, deduplicated, in order; at most ``limit`` of them."""
    found: list[str] = []
    for value in request.query_params.getall(name, []):
        text = value.strip()
        if text and len(text) <= MAX_KEY_LENGTH and text not in found:
            found.append(text)
    return found[:limit]


def _page_size(request: Req, default: int, cap: int) -> int:
    raw = _text(request, "max_results", 20)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidParameter(f"max_results must be a whole number, not {raw!r}.") from None
    if value < 1:
        raise InvalidParameter("max_results must be at least 1.")
    return min(value, cap)


def _view_type(request: Req) -> str:
    view = _text(request, "view", 20).upper() or "ACTIVE_ONLY"
    return view if view in ("ACTIVE_ONLY", "DELETED_ONLY", "ALL") else "ACTIVE_ONLY"


def _run_ids(request: Req) -> list[str]:
    ids = _texts(request, "run_ids", limit=1000)
    if len(ids) > MAX_CHART_RUNS:
        raise InvalidParameter(
            f"Choose at most {MAX_CHART_RUNS} runs (got {len(ids)}): charts and comparisons "
            "stay readable and bounded that way."
        )
    return ids


def _chart_context(series: Sequence[Any], rows: Sequence[RunRow]) -> dict[str, Any]:
    """What ``_trk_metric_charts.html`` and ``#trk-chart-data`` need for metric charts."""
    data = charts.metric_charts(
        series, {r.run_id: r.name for r in rows}, {r.run_id: r.start_time for r in rows}
    )
    return {"metric_charts": data, "chart_data": charts.to_json({"metrics": data})}


def _timed(response: Response[Any], timing: charts.ServerTiming) -> Response[Any]:
    response.headers["Server-Timing"] = timing.header()
    return response


# --- permissions ----------------------------------------------------------------------------------


async def _readable_runs(request: Req, s: AsyncSession, run_ids: Sequence[str]) -> list[RunOut]:
    """The runs, in order, after checking that the user may read every one of them.

    The global guard checked only the first ``run_ids`` value (it reads one query value per
    field), so each run's experiment is checked here against the same grants.
    """
    experiments = await tracking.experiments_of_runs(s, run_ids)
    principal = current_principal(request)
    if principal is not None and not principal.is_admin:
        for run_id in run_ids:
            experiment = experiments.get(run_id)
            if experiment is None or not allows(
                principal.grants, "experiment", experiment.name, experiment.experiment_id, "read"
            ):
                raise PermissionDenied(f"Permission denied: 'read' on run '{run_id[:64]}'.")
    for run_id in run_ids:
        if run_id not in experiments:
            raise RunNotFound(run_id[:64])
    return await tracking.get_runs(s, run_ids)


def _model_scope(request: Req) -> ResourceScope | None:
    """The registered models this user may read (None: all), for listing a run's versions."""
    principal = current_principal(request)
    if principal is None or principal.is_admin:
        return None
    return visible_scope(principal.grants, "registered_model")


# --- shaping runs for templates -------------------------------------------------------------------


# --- pages ----------------------------------------------------------------------------------------


@get("/experiments", opt=EXPERIMENT_LIST, include_in_schema=False)
async def experiments_list(request: Req) -> Response[Any]:
    timing = charts.ServerTiming()
    q = _text(request, "q", 500)
    view = _view_type(request)
    page_token = _text(request, "page_token") or None
    error = None
    experiments: list[Any] = []
    token = None
    try:
        max_results = _page_size(request, EXPERIMENTS_PAGE, MAX_EXPERIMENTS_PAGE)
        escaped = q.replace("'", "''")
        query = SearchExperiments(
            filter=f"name ILIKE '%{escaped}%'" if q else None,
            view_type=view,
            max_results=max_results,
            page_token=page_token,
        )
        async with database(request).read() as s:
            experiments, token = await tracking.search_experiments(
                s, query, scope=visibility(request, "experiment")
            )
    except InvalidParameter as exc:
        error = exc.message
        max_results = EXPERIMENTS_PAGE

    def link(**changes: Any) -> str:
        state: dict[str, Any] = {
            "q": q,
            "view": None if view == "ACTIVE_ONLY" else view,
            "max_results": None if max_results == EXPERIMENTS_PAGE else max_results,
        }
        state.update(changes)
        return with_query("/experiments", **state)

    response = page(
        request,
        "experiments.html",
        status_code=400 if error else 200,
        experiments=experiments,
        q=q,
        view=view,
        error=error,
        next_href=link(page_token=token) if token else None,
        first_href=link() if page_token else None,
    )
    return _timed(response, timing)


async def _search_experiment_runs(
    request: Req,
    s: AsyncSession,
    experiment_id: str,
    filter_text: str,
    order_by: str,
    view: str,
    page_token: str | None,
) -> tuple[list[RunOut], str | None, int, str | None]:
    """A page of the experiment's runs, the next page's token, the page size, and why the
    search was refused (None when it was not)."""
    try:
        max_results = _page_size(request, RUNS_PAGE, MAX_RUNS_PAGE)
        search = SearchRuns(
            experiment_ids=[experiment_id],
            filter=filter_text or None,
            order_by=[order_by] if order_by else [],
            run_view_type=view,
            max_results=max_results,
            page_token=page_token,
        )
        runs, token = await tracking.search_runs(s, search, scope=visibility(request, "experiment"))
    except InvalidParameter as exc:
        return [], None, RUNS_PAGE, exc.message
    return runs, token, max_results, None


@get("/experiments/{experiment_id:str}", opt=EXPERIMENT_READ, include_in_schema=False)
async def experiment_runs(request: Req, experiment_id: str) -> Response[Any]:
    timing = charts.ServerTiming()
    filter_text = _text(request, "filter", 50_000)
    order_by = _text(request, "order_by", 1000)
    view = _view_type(request)
    page_token = _text(request, "page_token") or None
    async with database(request).read() as s:
        experiment = await tracking.get_experiment(s, experiment_id)
        runs, token, max_results, error = await _search_experiment_runs(
            request, s, experiment.experiment_id, filter_text, order_by, view, page_token
        )
        # The chooser offers every key the experiment's recent runs logged, not just this page's.
        logged = await tracking.experiment_keys(s, experiment.experiment_id)
    rows = [run_row(r) for r in runs]
    seen = {kind: keys_of(rows, kind) for kind in ("metrics", "params", "tags")}
    if "cols" in request.query_params:
        shown = {kind: _texts(request, kind) for kind in seen}
    else:
        shown = {
            "metrics": seen["metrics"][:DEFAULT_COLUMNS],
            "params": seen["params"][:DEFAULT_COLUMNS],
            "tags": [],
        }
    view_state = RunsTableView(
        experiment.experiment_id,
        filter_text,
        order_by,
        view,
        max_results,
        shown["metrics"],
        shown["params"],
        shown["tags"],
    )
    response = page(
        request,
        "runs.html",
        status_code=400 if error else 200,
        experiment=experiment,
        description=next((t.value for t in experiment.tags if t.key == NOTE_TAG), ""),
        rows=rows,
        columns=view_state.columns(),
        state=view_state,
        error=error,
        available={
            kind: sorted(set(seen[kind]) | set(shown[kind]) | set(logged[kind])) for kind in seen
        },
        next_href=view_state.link(page_token=token) if token else None,
        first_href=view_state.link() if page_token else None,
    )
    return _timed(response, timing)


def _axis_choice(raw: str, options: list[tuple[str, str]]) -> tuple[str, str] | None:
    kind, _, key = raw.partition(":")
    return (kind, key) if (kind, key) in options else None


async def _chart_runs(
    request: Req, s: AsyncSession, experiment: Any, run_ids: list[str]
) -> tuple[list[str], list[RunOut]]:
    """The runs to chart (the chosen ones, else the experiment's first page), all readable and
    all of this experiment."""
    if not run_ids:
        first, _ = await tracking.search_runs(
            s,
            SearchRuns(experiment_ids=[experiment.experiment_id], max_results=DEFAULT_CHART_RUNS),
            scope=visibility(request, "experiment"),
        )
        run_ids = [r.info.run_id for r in first]
    runs = await _readable_runs(request, s, run_ids)
    for run in runs:
        if run.info.experiment_id != experiment.experiment_id:
            raise InvalidParameter(
                f"Run '{run.info.run_id}' belongs to experiment {run.info.experiment_id}, "
                f"not {experiment.experiment_id}: compare runs across experiments at "
                "/runs/compare."
            )
    return run_ids, runs


Axis = tuple[str, str]


def _scatter_axes(
    request: Req, rows: list[Any], metric_keys: list[str], param_keys: list[str]
) -> tuple[list[Axis], list[Axis], Axis | None, Axis | None]:
    """The scatter plot's x and y options (numeric params and metrics) and the chosen axes."""
    numeric_params = [
        k for k in param_keys if charts.is_numeric_param(r.params[k] for r in rows if k in r.params)
    ]
    x_options = [("param", k) for k in numeric_params] + [("metric", k) for k in metric_keys]
    y_options = [("metric", k) for k in metric_keys]
    x = _axis_choice(_text(request, "x", 300), x_options) or (x_options[0] if x_options else None)
    y = _axis_choice(_text(request, "y", 300), y_options)
    if y is None and y_options:
        y = next((o for o in y_options if o != x), y_options[0])
    return x_options, y_options, x, y


@get("/experiments/{experiment_id:str}/charts", opt=EXPERIMENT_READ, include_in_schema=False)
async def experiment_charts(request: Req, experiment_id: str) -> Response[Any]:
    timing = charts.ServerTiming()
    chosen_ids = _run_ids(request)
    async with database(request).read() as s:
        experiment = await tracking.get_experiment(s, experiment_id)
        run_ids, runs = await _chart_runs(request, s, experiment, chosen_ids)
        rows = [run_row(r) for r in runs]
        metric_keys = keys_of(rows, "metrics")
        param_keys = keys_of(rows, "params")
        chosen = [k for k in _texts(request, "keys") if k in metric_keys]
        chart_keys = chosen[:MAX_CHART_KEYS] or metric_keys[:MAX_CHART_KEYS]
        budget = charts.series_budget(len(rows) * len(chart_keys))
        series = await tracking.metric_series(s, run_ids, chart_keys, budget) if rows else []
    metric_data = charts.metric_charts(
        series, {r.run_id: r.name for r in rows}, {r.run_id: r.start_time for r in rows}
    )
    points = run_points(rows)
    x_options, y_options, x, y = _scatter_axes(request, rows, metric_keys, param_keys)
    scatter = charts.scatter_data(points, x, y) if x and y else None
    parallel = charts.parallel_data(
        points, param_keys[:MAX_PARALLEL_PARAMS], metric_keys[:MAX_PARALLEL_METRICS]
    )
    response = page(
        request,
        "run_charts.html",
        experiment=experiment,
        rows=rows,
        run_ids=run_ids,
        metric_keys=metric_keys,
        chart_keys=chart_keys,
        x_options=x_options,
        y_options=y_options,
        x=x,
        y=y,
        metric_charts=metric_data,
        more_keys=0,
        chart_data=charts.to_json(
            {"metrics": metric_data, "scatter": scatter, "parallel": parallel}
        ),
        parallel=parallel,
        scatter=scatter,
        points_per_series=budget,
    )
    return _timed(response, timing)


@dataclass(frozen=True, slots=True)
class CompareRow:
    key: str
    values: list[Any]
    changed: bool


def compare_rows(rows: Sequence[RunRow], kind: str) -> list[CompareRow]:
    out = []
    for key in keys_of(rows, kind):
        values = [getattr(r, kind).get(key) for r in rows]
        out.append(CompareRow(key, values, len({repr(v) for v in values}) > 1))
    return out


@get("/runs/compare", opt=RUNS_READ, include_in_schema=False)
async def compare_runs(request: Req) -> Response[Any]:
    timing = charts.ServerTiming()
    run_ids = _run_ids(request)
    if len(run_ids) < COMPARE_MIN_RUNS:
        raise InvalidParameter(
            f"Choose between {COMPARE_MIN_RUNS} and {MAX_CHART_RUNS} runs to compare "
            f"(got {len(run_ids)})."
        )
    only_changed = _text(request, "diff", 5) == "1"
    async with database(request).read() as s:
        runs = await _readable_runs(request, s, run_ids)
        rows = [run_row(r) for r in runs]
        metric_keys = keys_of(rows, "metrics")
        chart_keys = metric_keys[:MAX_CHART_KEYS]
        budget = charts.series_budget(len(rows) * len(chart_keys))
        series = await tracking.metric_series(s, run_ids, chart_keys, budget)
    sections = {kind: compare_rows(rows, kind) for kind in ("params", "metrics", "tags")}
    info = [
        CompareRow(label, values, len(set(values)) > 1)
        for label, values in (
            ("Experiment", [r.experiment_id for r in rows]),
            ("Status", [r.status for r in rows]),
            ("User", [r.user for r in rows]),
            ("Duration", [r.duration for r in rows]),
        )
    ]
    response = page(
        request,
        "compare.html",
        rows=rows,
        run_ids=run_ids,
        info=info,
        sections=sections,
        only_changed=only_changed,
        diff_href=with_query("/runs/compare", run_ids=run_ids, diff=None if only_changed else 1),
        **_chart_context(series, rows),
        more_keys=len(metric_keys) - len(chart_keys),
    )
    return _timed(response, timing)


@get("/runs/{run_id:str}", opt=RUN_READ, include_in_schema=False)
async def run_page(request: Req, run_id: str) -> Response[Any]:
    timing = charts.ServerTiming()
    async with database(request).read() as s:
        found = await tracking.get_runs(s, [run_id])
        if not found:
            raise RunNotFound(run_id[:64])
        run = found[0]
        experiment = await tracking.get_experiment(s, run.info.experiment_id)
        counts = await tracking.count_metric_points(s, run_id)
        keys = sorted(m.key for m in run.data.metrics)
        chart_keys = keys[:RUN_PAGE_CHART_KEYS]
        budget = charts.series_budget(len(chart_keys), RUN_PAGE_POINTS)
        series = await tracking.metric_series(s, [run_id], chart_keys, budget)
        versions: list[Any] = []
        if _RUN_ID.match(run_id):
            versions, _ = await registry.search_model_versions(
                s,
                SearchModelVersions(filter=f"run_id = '{run_id}'", max_results=RUN_PAGE_VERSIONS),
                scope=_model_scope(request),
            )
        logged = await run_logged_models(request, s, run, versions)
    row = run_row(run)
    response = page(
        request,
        "run.html",
        run=run,
        row=row,
        experiment=experiment,
        source=[(label, row.tags[tag]) for label, tag in SOURCE_TAGS if row.tags.get(tag)],
        note=row.tags.get(NOTE_TAG, ""),
        metrics=sorted(run.data.metrics, key=lambda m: m.key),
        counts=counts,
        params=sorted(run.data.params, key=lambda p: p.key),
        user_tags=sorted(
            (t for t in run.data.tags if not t.key.startswith("mlflow.")), key=lambda t: t.key
        ),
        system_tags=sorted(
            (t for t in run.data.tags if t.key.startswith("mlflow.")), key=lambda t: t.key
        ),
        datasets=run.inputs.dataset_inputs,
        context_tag=DATASET_CONTEXT_TAG,
        versions=versions,
        logged_models=logged,
        **_chart_context(series, [row]),
        more_keys=len(keys) - len(chart_keys),
    )
    return _timed(response, timing)


ROUTE_HANDLERS = [experiments_list, experiment_runs, experiment_charts, compare_runs, run_page]
