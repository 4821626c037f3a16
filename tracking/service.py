"""Tracking operations: validation, invariants and the shape of responses. Takes a session."""

from __future__ import annotations

import hashlib
import json
import secrets
import uuid
from collections.abc import Sequence
from math import isfinite
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from tracking import store
from tracking.core.auth import ResourceScope
from tracking.core.clock import now_ms
from tracking.core.errors import InvalidParameter, ResourceNotFound
from tracking.core.wire import decode_page_token, encode_double, encode_page_token
from tracking.errors import (
    ExperimentAlreadyExists,
    ExperimentNotFound,
    InactiveExperiment,
    InactiveRun,
    LoggedModelNotFound,
    ParamChanged,
    RunNotFound,
)
from tracking.schemas import (
    CreateExperiment,
    CreateLoggedModel,
    CreateRun,
    DatasetInputOut,
    DatasetOut,
    ExperimentOut,
    ExperimentTagOut,
    Id,
    KeyValue,
    LogBatch,
    LoggedModelDataOut,
    LoggedModelInfoOut,
    LoggedModelOut,
    LogInputs,
    MetricIn,
    MetricOut,
    ModelInputOut,
    ModelOutputOut,
    RunDataOut,
    RunInfoOut,
    RunInputsOut,
    RunOut,
    RunOutputsOut,
    SearchExperiments,
    SearchRuns,
    TagOut,
    UpdateRun,
)
from tracking.store import ExperimentIdentity, MetricPoint, RunHandle
from tracking.validation import (
    MAX_DATASET_DIGEST,
    MAX_DATASET_NAME,
    MAX_DATASET_PROFILE,
    MAX_DATASET_SCHEMA,
    MAX_DATASET_SOURCE,
    MAX_EXPERIMENT_SEARCH_RESULTS,
    MAX_HISTORY_PAGE,
    MAX_PARAM_VALUE_LEN,
    MAX_RUN_NAME_LEN,
    MAX_RUN_TAG_VALUE_LEN,
    MAX_SEARCH_RESULTS,
    check_length,
    require,
    truncate,
    validate_batch_sizes,
    validate_experiment_name,
    validate_experiment_tag,
    validate_key,
    validate_max_results,
    validate_metric_value,
    validate_timestamp,
)

RUN_NAME_TAG = "mlflow.runName"
RUN_STATUSES = {"RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED"}
VIEW_TYPES = {"ACTIVE_ONLY", "DELETED_ONLY", "ALL"}
LOGGED_MODEL_STATUSES = {
    "LOGGED_MODEL_PENDING",
    "LOGGED_MODEL_READY",
    "LOGGED_MODEL_UPLOAD_FAILED",
}


def parse_experiment_id(value: Id | None) -> int:
    require(value, "experiment_id")
    try:
        parsed = int(str(value))
    except ValueError:
        raise ExperimentNotFound(value) from None
    if not 0 <= parsed < 2**63:  # beyond 64 bits no row can have it (nor can drivers bind it)
        raise ExperimentNotFound(value)
    return parsed


def _view_type(value: str | None) -> str:
    view = (value or "ACTIVE_ONLY").upper()
    if view not in VIEW_TYPES:
        raise InvalidParameter(
            f"Invalid view type '{value}'. Expected one of ACTIVE_ONLY, DELETED_ONLY, ALL."
        )
    return view


# --- rendering -------------------------------------------------------------------------------


def experiment_out(row: Any, tags: Sequence[tuple[str, str]]) -> ExperimentOut:
    return ExperimentOut(
        experiment_id=str(row.experiment_id),
        name=row.name,
        artifact_location=row.artifact_location,
        lifecycle_stage=row.lifecycle_stage,
        creation_time=row.creation_time,
        last_update_time=row.last_update_time,
        workspace="default",
        tags=[ExperimentTagOut(k, v) for k, v in tags],
    )


def _metric_value(value: float, is_nan: bool) -> float | str:
    return "NaN" if is_nan else encode_double(value)


def run_out(b: store.RunBundle, experiment_id: int | None = None) -> RunOut:
    r = b.row
    return RunOut(
        info=RunInfoOut(
            run_id=r.run_uuid,
            run_uuid=r.run_uuid,
            run_name=r.name,
            experiment_id=str(r.experiment_id if experiment_id is None else experiment_id),
            user_id=r.user_id,
            status=r.status,
            start_time=r.start_time,
            end_time=r.end_time,
            artifact_uri=r.artifact_uri,
            lifecycle_stage=r.lifecycle_stage,
        ),
        data=RunDataOut(
            # Rows are (run_id, key, value, is_nan, timestamp, step) tuples.
            metrics=[
                MetricOut(
                    m[1],
                    "NaN" if m[3] else (m[2] if isfinite(m[2]) else encode_double(m[2])),
                    m[4],
                    m[5],
                )
                for m in b.metrics
            ],
            params=[TagOut(k, v) for k, v in b.params],
            tags=[TagOut(k, v) for k, v in b.tags],
        ),
        inputs=RunInputsOut(
            dataset_inputs=[
                DatasetInputOut(
                    tags=[TagOut(k, v) for k, v in tags],
                    dataset=DatasetOut(
                        name=d.name,
                        digest=d.digest,
                        source_type=d.source_type,
                        source=d.source,
                        schema=d.schema,
                        profile=d.profile,
                    ),
                )
                for d, tags in b.dataset_inputs
            ],
            model_inputs=[ModelInputOut(m) for m in b.model_inputs],
        ),
        outputs=RunOutputsOut(model_outputs=[ModelOutputOut(m, st) for m, st in b.model_outputs]),
    )


# --- experiments -------------------------------------------------------------------------------


async def create_experiment(s: AsyncSession, req: CreateExperiment) -> str:
    name = validate_experiment_name(req.name)
    tags = [validate_experiment_tag(t.key, t.value) for t in req.tags]
    if req.artifact_location:
        # A client-chosen root (file:, s3:, or another experiment's mlflow-artifacts: folder) would
        # let it read or write outside its own area: MLflow CVE-2023-6909 / CVE-2024-0520 class.
        raise InvalidParameter(
            "artifact_location cannot be set by clients: mlgate assigns each experiment a proxied "
            "'mlflow-artifacts:/<experiment_id>' location."
        )
    if await store.experiment_name_taken(s, name):
        raise ExperimentAlreadyExists(name)
    experiment_id = await store.insert_experiment(
        s, name=name, artifact_location=None, now=now_ms()
    )
    await store.upsert_experiment_tags(s, experiment_id, tags)
    return str(experiment_id)


async def get_experiment(s: AsyncSession, experiment_id: Id | None) -> ExperimentOut:
    eid = parse_experiment_id(experiment_id)
    found = await store.get_experiments(s, [eid])
    if not found:
        raise ExperimentNotFound(experiment_id)
    return experiment_out(*found[0])


async def get_experiment_by_name(s: AsyncSession, name: str | None) -> ExperimentOut:
    require(name, "experiment_name")
    assert name is not None
    eid = await store.find_experiment_id_by_name(s, name)
    if eid is None:
        raise ExperimentNotFound(name, by="name")
    return experiment_out(*(await store.get_experiments(s, [eid]))[0])


async def _existing_experiment(
    s: AsyncSession, experiment_id: Id | None, *, lock: bool = False
) -> tuple[int, str]:
    eid = parse_experiment_id(experiment_id)
    stage = await store.experiment_lifecycle(s, eid, lock=lock)
    if stage is None:
        raise ExperimentNotFound(experiment_id)
    return eid, stage


async def rename_experiment(
    s: AsyncSession, experiment_id: Id | None, new_name: str | None
) -> None:
    eid, stage = await _existing_experiment(s, experiment_id)
    name = validate_experiment_name(new_name)
    if stage != "active":
        raise InactiveExperiment(experiment_id)
    current = await store.find_experiment_id_by_name(s, name)
    if current is not None and current != eid:
        raise ExperimentAlreadyExists(name)
    await store.update_experiment(s, eid, name=name, last_update_time=now_ms())


async def delete_experiment(s: AsyncSession, experiment_id: Id | None) -> None:
    eid, _ = await _existing_experiment(s, experiment_id)
    if eid == 0:
        raise InvalidParameter(
            "Cannot delete the default experiment '0'. This is an internally reserved experiment."
        )
    now = now_ms()
    await store.update_experiment(s, eid, lifecycle_stage="deleted", last_update_time=now)
    await store.set_runs_lifecycle_for_experiment(
        s, eid, lifecycle_stage="deleted", deleted_time=now
    )


async def restore_experiment(s: AsyncSession, experiment_id: Id | None) -> None:
    eid, stage = await _existing_experiment(s, experiment_id)
    if stage != "deleted":
        raise InvalidParameter(f"Cannot restore an active experiment. Experiment {eid} is active.")
    await store.update_experiment(s, eid, lifecycle_stage="active", last_update_time=now_ms())
    await store.set_runs_lifecycle_for_experiment(
        s, eid, lifecycle_stage="active", deleted_time=None
    )


async def set_experiment_tag(
    s: AsyncSession, experiment_id: Id | None, key: str | None, value: str | None
) -> None:
    eid, stage = await _existing_experiment(s, experiment_id)
    if stage != "active":
        raise InactiveExperiment(experiment_id)
    await store.upsert_experiment_tags(s, eid, [validate_experiment_tag(key, value)])


async def delete_experiment_tag(s: AsyncSession, experiment_id: Id | None, key: str | None) -> None:
    eid, stage = await _existing_experiment(s, experiment_id)
    require(key, "key")
    assert key is not None
    if stage != "active":
        raise InactiveExperiment(experiment_id)
    if not await store.delete_experiment_tag(s, eid, key):
        raise ResourceNotFound(f"No tag with name: {key} in experiment with id {eid}")


def _fingerprint(*parts: object) -> str:
    return hashlib.blake2s(repr(parts).encode(), digest_size=6).hexdigest()


async def search_experiments(
    s: AsyncSession, req: SearchExperiments, *, scope: ResourceScope | None = None
) -> tuple[list[ExperimentOut], str | None]:
    """One page of experiments; ``scope`` (None: all) keeps those the caller may read."""
    from tracking.search import experiment_search_select

    limit = validate_max_results(req.max_results, 1000, MAX_EXPERIMENT_SEARCH_RESULTS)
    view = _view_type(req.view_type)
    fingerprint = _fingerprint("exp", req.filter or "", tuple(req.order_by), view)
    offset = decode_page_token(req.page_token, fingerprint)
    stmt = (
        experiment_search_select(req.filter, list(req.order_by), view, scope)
        .offset(offset)
        .limit(limit + 1)
    )
    ids = [row[0] for row in await s.execute(stmt)]
    token = encode_page_token(offset + limit, fingerprint) if len(ids) > limit else None
    rows = await store.get_experiments(s, ids[:limit])
    return [experiment_out(r, t) for r, t in rows], token


# --- runs ----------------------------------------------------------------------------------------

_ADJECTIVES = (
    "amber",
    "bold",
    "brisk",
    "calm",
    "clever",
    "crisp",
    "daring",
    "eager",
    "fair",
    "gentle",
    "glad",
    "keen",
    "lively",
    "lucid",
    "merry",
    "nimble",
    "polite",
    "quiet",
    "rapid",
    "sharp",
    "silent",
    "steady",
    "sunny",
    "swift",
    "tidy",
    "vivid",
    "warm",
    "wise",
    "witty",
    "zesty",
)
_NOUNS = (
    "badger",
    "bison",
    "crane",
    "dolphin",
    "falcon",
    "ferret",
    "gecko",
    "heron",
    "ibis",
    "jackal",
    "koala",
    "lark",
    "lemur",
    "lynx",
    "marten",
    "newt",
    "ocelot",
    "otter",
    "panda",
    "puffin",
    "quail",
    "raven",
    "robin",
    "salmon",
    "seal",
    "stork",
    "tapir",
    "toad",
    "wren",
    "yak",
)


def generate_run_name() -> str:
    return f"{secrets.choice(_ADJECTIVES)}-{secrets.choice(_NOUNS)}-{secrets.randbelow(1000)}"


USER_TAG = "mlflow.user"


async def create_run(s: AsyncSession, req: CreateRun, *, user: str | None = None) -> RunOut:
    """Start a run. ``user`` is the authenticated caller when auth is on: it becomes the run's
    ``user_id`` and ``mlflow.user`` tag whatever the client claims; None keeps MLflow's
    behaviour (the client's ``user_id``)."""
    raw_id = req.experiment_id if req.experiment_id not in (None, "") else "0"
    eid = parse_experiment_id(raw_id)
    tags = {
        validate_key(t.key, "tag"): truncate(t.value or "", MAX_RUN_TAG_VALUE_LEN) for t in req.tags
    }
    tag_name = tags.get(RUN_NAME_TAG)
    if req.run_name and tag_name and req.run_name != tag_name:
        raise InvalidParameter(
            f"Both 'run_name' argument and 'mlflow.runName' tag are specified, but with different "
            f"values (run_name='{req.run_name}', mlflow.runName='{tag_name}')."
        )
    name = req.run_name or tag_name or generate_run_name()
    check_length(name, MAX_RUN_NAME_LEN, "Run name")
    tags[RUN_NAME_TAG] = name
    if user is not None:
        tags[USER_TAG] = user
    run_uuid = uuid.uuid4().hex
    start_time = req.start_time if req.start_time is not None else now_ms()
    user_id = user if user is not None else (req.user_id or "")
    started = await store.insert_run_in_active_experiment(
        s,
        run_uuid=run_uuid,
        experiment_id=eid,
        name=name,
        user_id=user_id,
        start_time=start_time,
    )
    if started is None:
        experiment = await store.experiment_stage_and_location(s, eid)
        if experiment is None:
            raise ExperimentNotFound(raw_id)
        raise InactiveExperiment(eid)
    run_pk, artifact_uri = started
    await store.upsert_run_tags(s, run_pk, tags)
    # Everything in the new run is known here: answer without reading it back.
    return RunOut(
        info=RunInfoOut(
            run_id=run_uuid,
            run_uuid=run_uuid,
            run_name=name,
            experiment_id=str(eid),
            user_id=user_id,
            status="RUNNING",
            start_time=start_time,
            artifact_uri=artifact_uri,
            lifecycle_stage="active",
        ),
        data=RunDataOut(metrics=[], params=[], tags=[TagOut(k, v) for k, v in tags.items()]),
        inputs=RunInputsOut(),
    )


async def _run(s: AsyncSession, run_id: str | None) -> RunHandle:
    require(run_id, "run_id")
    assert run_id is not None
    handle = await store.get_run_handle(s, run_id)
    if handle is None:
        raise RunNotFound(run_id)
    return handle


async def _active_run(s: AsyncSession, run_id: str | None) -> RunHandle:
    handle = await _run(s, run_id)
    if handle.lifecycle_stage != "active":
        raise InactiveRun(handle.run_uuid)
    return handle


async def get_run(s: AsyncSession, run_id: str | None) -> RunOut:
    handle = await _run(s, run_id)
    return run_out((await store.load_runs(s, [handle.id]))[0])


async def get_run_outputs(s: AsyncSession, run_id: str | None) -> RunOut:
    """The run's info and model inputs/outputs only; its params, tags, metrics and dataset
    inputs are left empty (what resolving a ``runs:/`` source needs, in three reads)."""
    handle = await _run(s, run_id)
    return run_out((await store.load_runs(s, [handle.id], data=False))[0])


async def update_run(s: AsyncSession, req: UpdateRun) -> RunInfoOut:
    handle = await _active_run(s, req.run_id or req.run_uuid)
    values: dict[str, Any] = {}
    if req.status:
        status = req.status.upper()
        if status not in RUN_STATUSES:
            raise InvalidParameter(f"Invalid run status '{req.status}'.")
        values["status"] = status
    if req.end_time is not None:
        values["end_time"] = req.end_time
    if req.run_name:
        check_length(req.run_name, MAX_RUN_NAME_LEN, "Run name")
        values["name"] = req.run_name
        await store.upsert_run_tags(s, handle.id, {RUN_NAME_TAG: req.run_name})
    if values:
        await store.update_run(s, handle.id, **values)
    return run_out((await store.load_runs(s, [handle.id]))[0]).info


async def delete_run(s: AsyncSession, run_id: str | None) -> None:
    handle = await _run(s, run_id)
    await store.update_run(s, handle.id, lifecycle_stage="deleted", deleted_time=now_ms())


async def restore_run(s: AsyncSession, run_id: str | None) -> None:
    handle = await _run(s, run_id)
    stage = await store.experiment_lifecycle(s, handle.experiment_id)
    if stage != "active":
        raise InactiveExperiment(handle.experiment_id)
    await store.update_run(s, handle.id, lifecycle_stage="active", deleted_time=None)


def _metric_point(m: MetricIn | Any) -> MetricPoint:
    key = validate_key(m.key, "metric")
    value = validate_metric_value(key, m.value)
    return MetricPoint(
        key=key,
        value=value,
        timestamp=validate_timestamp(key, m.timestamp),
        step=int(m.step or 0),
        model_id=m.model_id or None,
        dataset_name=m.dataset_name or None,
        dataset_digest=m.dataset_digest or None,
    )


async def _log_metric_points(s: AsyncSession, handle: RunHandle, points: list[MetricPoint]) -> None:
    await store.insert_metrics(s, handle.id, points)
    model_points = [p for p in points if p.model_id]
    if model_points:
        known = await store.existing_logged_model_ids(
            s, (p.model_id for p in model_points if p.model_id)
        )
        missing = {p.model_id for p in model_points} - known
        if missing:
            raise LoggedModelNotFound(sorted(str(m) for m in missing)[0])
        await store.insert_logged_model_metrics(s, handle.run_uuid, model_points)


async def _log_metrics_in_one_statement(
    s: AsyncSession, run_id: str | None, points: list[MetricPoint]
) -> bool:
    """The fast path of a metrics-only write (no logged model to check): True when done.

    False sends the caller down the usual path, which finds the run and raises the right
    error (missing, or not active) when the write found no active run.
    """
    if not run_id or any(p.model_id for p in points):
        return False
    return bool(await store.insert_metrics_by_run_uuid(s, run_id, points))


async def log_metric(s: AsyncSession, run_id: str | None, m: Any) -> None:
    point = _metric_point(m)
    if await _log_metrics_in_one_statement(s, run_id, [point]):
        return
    handle = await _active_run(s, run_id)
    await _log_metric_points(s, handle, [point])


async def log_param(
    s: AsyncSession, run_id: str | None, key: str | None, value: str | None
) -> None:
    k = validate_key(key, "param")
    v = truncate("" if value is None else value, MAX_PARAM_VALUE_LEN)
    handle = await _active_run(s, run_id)
    changed = await store.insert_params_checked(s, handle.id, {k: v})
    if changed:
        raise ParamChanged(handle.run_uuid, *changed[0])


async def set_tag(s: AsyncSession, run_id: str | None, key: str | None, value: str | None) -> None:
    k = validate_key(key, "tag")
    v = truncate(value or "", MAX_RUN_TAG_VALUE_LEN)
    handle = await _active_run(s, run_id)
    await store.upsert_run_tags(s, handle.id, {k: v})
    if k == RUN_NAME_TAG:
        await store.update_run(s, handle.id, name=v[:MAX_RUN_NAME_LEN])


async def delete_tag(s: AsyncSession, run_id: str | None, key: str | None) -> None:
    require(key, "key")
    assert key is not None
    handle = await _active_run(s, run_id)
    if not await store.delete_run_tag(s, handle.id, key):
        raise ResourceNotFound(f"No tag with name: {key} in run with id {handle.run_uuid}")


async def log_batch(s: AsyncSession, req: LogBatch) -> None:
    validate_batch_sizes(len(req.metrics), len(req.params), len(req.tags))
    points = [_metric_point(m) for m in req.metrics]
    params: dict[str, str] = {}
    for p in req.params:
        k = validate_key(p.key, "param")
        v = truncate("" if p.value is None else p.value, MAX_PARAM_VALUE_LEN)
        if k in params and params[k] != v:
            raise InvalidParameter(
                f"Duplicate parameter keys have been submitted: ['{k}']. Please ensure the request "
                "contains only one param value per param key."
            )
        params[k] = v
    tags = {
        validate_key(t.key, "tag"): truncate(t.value or "", MAX_RUN_TAG_VALUE_LEN) for t in req.tags
    }
    only_metrics = points and not params and not tags
    if only_metrics and await _log_metrics_in_one_statement(s, req.run_id, points):
        return
    handle = await _active_run(s, req.run_id)
    changed = await store.insert_params_checked(s, handle.id, params)
    if changed:
        raise ParamChanged(handle.run_uuid, *changed[0])
    await _log_metric_points(s, handle, points)
    await store.upsert_run_tags(s, handle.id, tags)
    if RUN_NAME_TAG in tags:
        await store.update_run(s, handle.id, name=tags[RUN_NAME_TAG][:MAX_RUN_NAME_LEN])


async def log_inputs(s: AsyncSession, req: LogInputs) -> None:
    handle = await _active_run(s, req.run_id)
    for item in req.datasets:
        d = item.dataset
        if d is None:
            raise InvalidParameter("Each dataset input needs a 'dataset'.")
        require(d.name, "dataset.name")
        require(d.digest, "dataset.digest")
        require(d.source_type, "dataset.source_type")
        require(d.source, "dataset.source")
        check_length(d.name, MAX_DATASET_NAME, "Dataset name")
        check_length(d.digest, MAX_DATASET_DIGEST, "Dataset digest")
        check_length(d.source, MAX_DATASET_SOURCE, "Dataset source")
        check_length(d.schema, MAX_DATASET_SCHEMA, "Dataset schema")
        check_length(d.profile, MAX_DATASET_PROFILE, "Dataset profile")
        tags = {}
        for t in item.tags:
            require(t.key, "input tag key")
            check_length(t.key, 255, "Input tag key")
            check_length(t.value, 500, "Input tag value")
            tags[str(t.key)] = t.value or ""
        assert d.name is not None and d.digest is not None
        existing = await store.find_dataset(s, handle.experiment_id, d.name, d.digest)
        if existing is None:
            await store.insert_dataset(
                s,
                dataset_uuid=uuid.uuid4().hex,
                experiment_id=handle.experiment_id,
                name=d.name,
                digest=d.digest,
                source_type=d.source_type,
                source=d.source,
                schema=d.schema,
                profile=d.profile,
            )
            existing = await store.find_dataset(s, handle.experiment_id, d.name, d.digest)
        assert existing is not None
        await store.link_dataset_input(s, handle.id, existing, tags)
    links = []
    for m in req.models:
        require(m.model_id, "models.model_id")
        links.append((str(m.model_id), 0))
    await _require_logged_models(s, [m for m, _ in links])
    await store.link_models(s, handle.id, links, "input")


async def log_outputs(s: AsyncSession, run_id: str | None, models: Sequence[Any]) -> None:
    handle = await _active_run(s, run_id)
    links = []
    for m in models:
        require(m.model_id, "models.model_id")
        links.append((str(m.model_id), int(m.step or 0)))
    await _require_logged_models(s, [m for m, _ in links])
    await store.link_models(s, handle.id, links, "output")


async def _require_logged_models(s: AsyncSession, ids: list[str]) -> None:
    known = await store.existing_logged_model_ids(s, ids)
    for mid in ids:
        if mid not in known:
            raise LoggedModelNotFound(mid)


async def metric_history(
    s: AsyncSession,
    run_id: str | None,
    key: str | None,
    max_results: int | None,
    page_token: str | None,
) -> tuple[list[MetricOut], str | None]:
    require(key, "metric_key")
    assert key is not None
    limit = validate_max_results(max_results, MAX_HISTORY_PAGE, MAX_HISTORY_PAGE)
    handle = await _run(s, run_id)
    fingerprint = _fingerprint("hist", handle.run_uuid, key)
    offset = decode_page_token(page_token, fingerprint)
    rows = await store.metric_history(s, handle.id, key, offset=offset, limit=limit + 1)
    token = encode_page_token(offset + limit, fingerprint) if len(rows) > limit else None
    return [
        MetricOut(k, "NaN" if nan else encode_double(v), ts, step, mid, dname, ddigest)
        for k, v, nan, ts, step, mid, dname, ddigest in rows[:limit]
    ], token


# MLflow's limits on the UI's bulk routes (mlflow/server/handlers.py).
MAX_DATASET_EXPERIMENTS = 20


async def search_dataset_summaries(
    s: AsyncSession, experiment_ids: Sequence[Id]
) -> list[dict[str, str]]:
    """The datasets the experiments' runs used: experiment, name, digest and context."""
    if not experiment_ids:
        raise InvalidParameter("SearchDatasets request must specify at least one experiment_id.")
    if len(experiment_ids) > MAX_DATASET_EXPERIMENTS:
        raise InvalidParameter(
            f"SearchDatasets request cannot specify more than {MAX_DATASET_EXPERIMENTS} "
            f"experiment_ids. Received {len(experiment_ids)} experiment_ids."
        )
    ids = [parse_experiment_id(e) for e in experiment_ids]
    out: list[dict[str, str]] = []
    for row in await store.dataset_summaries(s, ids):
        summary = {"experiment_id": str(row.experiment_id), "name": row.name, "digest": row.digest}
        if row.context:
            summary["context"] = row.context
        out.append(summary)
    return out


async def search_runs(
    s: AsyncSession, req: SearchRuns, *, scope: ResourceScope | None = None
) -> tuple[list[RunOut], str | None]:
    """One page of runs; ``scope`` (None: all) drops runs of experiments the caller can't read."""
    from tracking.search import run_search_select

    limit = validate_max_results(req.max_results, 1000, MAX_SEARCH_RESULTS)
    view = _view_type(req.run_view_type)
    experiment_ids = [parse_experiment_id(e) for e in req.experiment_ids]
    fingerprint = _fingerprint(
        "runs", tuple(experiment_ids), req.filter or "", tuple(req.order_by), view
    )
    offset = decode_page_token(req.page_token, fingerprint)
    if not experiment_ids:
        return [], None
    stmt = run_search_select(experiment_ids, req.filter, list(req.order_by), view, scope)
    pks = [row[0] for row in await s.execute(stmt.offset(offset).limit(limit + 1))]
    token = encode_page_token(offset + limit, fingerprint) if len(pks) > limit else None
    bundles = await store.load_runs(s, pks[:limit])
    return [run_out(b) for b in bundles], token


# --- logged models -------------------------------------------------------------------------------


def logged_model_out(b: store.LoggedModelBundle) -> LoggedModelOut:
    r = b.row
    return LoggedModelOut(
        info=LoggedModelInfoOut(
            model_id=r.model_id,
            experiment_id=str(r.experiment_id),
            name=r.name,
            creation_timestamp_ms=r.creation_timestamp_ms,
            last_updated_timestamp_ms=r.last_updated_timestamp_ms,
            artifact_uri=r.artifact_location,
            status=r.status,
            model_type=r.model_type or "",
            source_run_id=r.source_run_id or "",
            status_message=r.status_message,
            tags=[TagOut(k, v) for k, v in b.tags],
        ),
        data=LoggedModelDataOut(
            params=[TagOut(k, v) for k, v in b.params],
            metrics=[
                MetricOut(
                    key=m.key,
                    value=_metric_value(m.value, m.is_nan),
                    timestamp=m.timestamp,
                    step=m.step,
                    model_id=m.model_id,
                    dataset_name=m.dataset_name,
                    dataset_digest=m.dataset_digest,
                    run_id=m.run_id,
                )
                for m in b.metrics
            ],
        ),
    )


def _kv(items: Sequence[KeyValue], kind: str, limit: int) -> dict[str, str]:
    return {validate_key(i.key, kind): truncate(i.value or "", limit) for i in items}


async def create_logged_model(s: AsyncSession, req: CreateLoggedModel) -> LoggedModelOut:
    eid, stage = await _existing_experiment(s, req.experiment_id)
    if stage != "active":
        raise InactiveExperiment(eid)
    # mlflow server records source_run_id as given, without looking the run up (an unknown id
    # is metadata, not a reference), so mlgate does the same. The column holds a run id (32
    # characters, as in MLflow's schema); a longer value is refused rather than truncated.
    check_length(req.source_run_id, 32, "source_run_id")
    params = _kv(req.params, "param", MAX_PARAM_VALUE_LEN)
    tags = _kv(req.tags, "tag", MAX_RUN_TAG_VALUE_LEN)
    name = req.name or generate_run_name()
    check_length(name, MAX_DATASET_NAME, "Logged model name")
    model_id = f"m-{uuid.uuid4().hex}"
    location = (await store.get_experiments(s, [eid]))[0][0].artifact_location
    now = now_ms()
    await store.insert_logged_model(
        s,
        model_id=model_id,
        experiment_id=eid,
        name=name,
        artifact_location=f"{location.rstrip('/')}/models/{model_id}/artifacts",
        creation_timestamp_ms=now,
        last_updated_timestamp_ms=now,
        status="LOGGED_MODEL_PENDING",
        lifecycle_stage="active",
        model_type=req.model_type or None,
        source_run_id=req.source_run_id or None,
    )
    await store.insert_logged_model_params(s, model_id, params)
    await store.upsert_logged_model_tags(s, model_id, tags)
    return await get_logged_model(s, model_id)


async def get_logged_model(
    s: AsyncSession, model_id: str, *, allow_deleted: bool = False
) -> LoggedModelOut:
    found = await store.load_logged_models(s, [model_id])
    if not found or (found[0].row.lifecycle_stage != "active" and not allow_deleted):
        raise LoggedModelNotFound(model_id)
    return logged_model_out(found[0])


async def _active_logged_model(s: AsyncSession, model_id: str | None) -> str:
    require(model_id, "model_id")
    assert model_id is not None
    row = await store.get_logged_model_row(s, model_id)
    if row is None or row.lifecycle_stage != "active":
        raise LoggedModelNotFound(model_id)
    return model_id


async def finalize_logged_model(
    s: AsyncSession, model_id: str, status: str | None
) -> LoggedModelOut:
    await _active_logged_model(s, model_id)
    value = (status or "").upper()
    if value in {"READY", "UPLOAD_FAILED"}:
        value = f"LOGGED_MODEL_{value}"
    if value not in {"LOGGED_MODEL_READY", "LOGGED_MODEL_UPLOAD_FAILED"}:
        raise InvalidParameter(
            f"Invalid status '{status}': expected LOGGED_MODEL_READY or LOGGED_MODEL_UPLOAD_FAILED."
        )
    await store.update_logged_model(s, model_id, status=value, last_updated_timestamp_ms=now_ms())
    return await get_logged_model(s, model_id)


async def set_logged_model_tags(
    s: AsyncSession, model_id: str, tags: Sequence[KeyValue]
) -> LoggedModelOut:
    await _active_logged_model(s, model_id)
    await store.upsert_logged_model_tags(s, model_id, _kv(tags, "tag", MAX_RUN_TAG_VALUE_LEN))
    await store.update_logged_model(s, model_id, last_updated_timestamp_ms=now_ms())
    return await get_logged_model(s, model_id)


MODEL_VERSIONS_TAG = "mlflow.modelVersions"


async def add_logged_model_version(s: AsyncSession, model_id: str, name: str, version: int) -> None:
    """Append ``{"name", "version"}`` to the logged model's ``mlflow.modelVersions`` tag.

    MLflow's server keeps this tag (a JSON list, in registration order, without duplicates) on
    every logged model a version is registered from. The row lock makes concurrent
    registrations append rather than overwrite. A tag that is not such a list is replaced.
    """
    current = await store.lock_logged_model_tag(s, model_id, MODEL_VERSIONS_TAG)
    entries: list[Any] = []
    if current:
        try:
            decoded = json.loads(current)
        except ValueError:
            decoded = None
        entries = decoded if isinstance(decoded, list) else []
    entry = {"name": name, "version": version}
    if entry not in entries:
        entries.append(entry)
    await store.upsert_logged_model_tags(s, model_id, {MODEL_VERSIONS_TAG: json.dumps(entries)})


async def delete_logged_model_tag(s: AsyncSession, model_id: str, key: str) -> None:
    await _active_logged_model(s, model_id)
    if not await store.delete_logged_model_tag(s, model_id, key):
        raise ResourceNotFound(f"No tag with key '{key}' on logged model '{model_id}'")


async def log_logged_model_params(
    s: AsyncSession, model_id: str, params: Sequence[KeyValue]
) -> None:
    await _active_logged_model(s, model_id)
    if len(params) > 100:
        raise InvalidParameter("A request can log at most 100 logged-model params.")
    await store.insert_logged_model_params(s, model_id, _kv(params, "param", MAX_PARAM_VALUE_LEN))


async def delete_logged_model(s: AsyncSession, model_id: str) -> None:
    await _active_logged_model(s, model_id)
    await store.update_logged_model(
        s, model_id, lifecycle_stage="deleted", last_updated_timestamp_ms=now_ms()
    )


async def search_logged_models(
    s: AsyncSession, req: Any, *, scope: ResourceScope | None = None
) -> tuple[list[LoggedModelOut], str | None]:
    from tracking.search import logged_model_search_select
    from tracking.search.logged_models import OrderSpec

    limit = validate_max_results(req.max_results, 100, MAX_SEARCH_RESULTS)
    experiment_ids = [parse_experiment_id(e) for e in req.experiment_ids]
    order: list[OrderSpec] = [
        (o.field_name or "", o.ascending is not False, o.dataset_name, o.dataset_digest)
        for o in req.order_by
    ]
    datasets = [(d.dataset_name, d.dataset_digest) for d in req.datasets]
    fingerprint = _fingerprint(
        "lm", tuple(experiment_ids), req.filter or "", tuple(order), tuple(datasets)
    )
    offset = decode_page_token(req.page_token, fingerprint)
    if not experiment_ids:
        raise InvalidParameter("experiment_ids must contain at least one experiment id.")
    stmt = logged_model_search_select(experiment_ids, req.filter, order, datasets, scope)
    ids = [row[0] for row in await s.execute(stmt.offset(offset).limit(limit + 1))]
    token = encode_page_token(offset + limit, fingerprint) if len(ids) > limit else None
    return [logged_model_out(b) for b in await store.load_logged_models(s, ids[:limit])], token


# --- lookups for authorization -------------------------------------------------------------------
# The shell's guard asks which experiment a request acts on before the handler runs. Unknown or
# malformed references answer None (or are left out): the guard then decides on what it has.


async def experiment_identity(s: AsyncSession, experiment_id: str) -> ExperimentIdentity | None:
    """The experiment with this wire id (a canonical integer string), or None."""
    try:
        eid = int(experiment_id)
    except ValueError:
        return None
    if str(eid) != experiment_id or eid < 0:
        return None
    return await store.experiment_identity(s, eid)


async def experiment_identity_by_name(s: AsyncSession, name: str) -> ExperimentIdentity | None:
    eid = await store.find_experiment_id_by_name(s, name)
    return None if eid is None else await store.experiment_identity(s, eid)


async def experiments_of_runs(
    s: AsyncSession, run_ids: Sequence[str]
) -> dict[str, ExperimentIdentity]:
    """The experiment of each known run id."""
    return await store.experiments_of_runs(s, list(run_ids))


async def experiments_of_logged_models(
    s: AsyncSession, model_ids: Sequence[str]
) -> dict[str, ExperimentIdentity]:
    """The experiment of each known logged model id."""
    return await store.experiments_of_logged_models(s, list(model_ids))


# --- charts: runs by id and downsampled metric histories ------------------------------------------

MAX_SERIES_POINTS = 5000
MetricSeries = store.MetricSeries
# SQLite caps a compound SELECT at 500 terms; one history is one term of the bucket query.
MAX_SERIES_PER_QUERY = 400


async def get_runs(s: AsyncSession, run_ids: Sequence[str]) -> list[RunOut]:
    """The known runs among ``run_ids``, in that order (a fixed number of queries)."""
    pks = await store.run_pks_by_uuids(s, list(dict.fromkeys(run_ids)))
    bundles = await store.load_runs(s, [pks[r] for r in dict.fromkeys(run_ids) if r in pks])
    return [run_out(b) for b in bundles]


def _bucket_points(buckets: Sequence[store.MetricBucket]) -> tuple[list[int], list[float]]:
    """Each bucket becomes its extremes: two points (one if flat or a single point).

    Which extreme comes first follows the curve's direction (towards the next bucket), so a
    smooth falling curve stays smooth instead of zig-zagging inside every bucket.
    """
    steps: list[int] = []
    values: list[float] = []
    mids = [(b.min_value + b.max_value) / 2 for b in buckets]
    for i, b in enumerate(buckets):
        if b.points == 1 or b.min_value == b.max_value:
            steps.append(b.first_step)
            values.append(b.min_value)
            continue
        if i + 1 < len(buckets):
            rising = mids[i + 1] >= mids[i]
        else:
            rising = i == 0 or mids[i] >= mids[i - 1]
        first, last = (b.min_value, b.max_value) if rising else (b.max_value, b.min_value)
        steps.extend((b.first_step, b.last_step))
        values.extend((first, last))
    return steps, values


async def metric_series(
    s: AsyncSession,
    run_ids: Sequence[str],
    keys: Sequence[str] | None,
    max_points: int,
) -> list[MetricSeries]:
    """Downsampled histories of ``keys`` (None: every key) for each run, ``max_points`` each.

    "Min-max" downsampling in SQL: the step range is cut into ``max_points // 2`` buckets and
    each keeps its lowest and highest value, so the true minimum and maximum (and any spike)
    are always drawn, and no history is ever read whole. Two queries however many series.
    """
    points = max(2, min(int(max_points), MAX_SERIES_POINTS))
    n_buckets = points // 2
    pks = await store.run_pks_by_uuids(s, list(dict.fromkeys(run_ids)))
    uuid_of = {pk: uuid for uuid, pk in pks.items()}
    ranges = await store.metric_step_ranges(s, list(pks.values()), keys)
    if len(ranges) > MAX_SERIES_PER_QUERY:
        raise InvalidParameter(
            f"Too many metric histories requested at once ({len(ranges)}; the limit is "
            f"{MAX_SERIES_PER_QUERY}). Choose fewer runs or metrics."
        )
    specs: list[tuple[int, str, int, int]] = []
    for run_pk, key, first, last in ranges:
        width = (last - first) // n_buckets + 1
        # (step - first) stays inside int64 unless the steps span more than 2**62; then buckets
        # are aligned to zero instead (still at most n_buckets + 1 of them).
        origin = first if last - first < 2**62 else 0
        specs.append((run_pk, key, origin, width))
    grouped: dict[int, list[store.MetricBucket]] = {}
    for bucket in await store.metric_history_buckets(s, specs):
        grouped.setdefault(bucket.series, []).append(bucket)
    out: list[MetricSeries] = []
    for index, (run_pk, key, _, _) in enumerate(specs):
        buckets = grouped.get(index, [])
        steps, values = _bucket_points(buckets)
        total = sum(b.points for b in buckets)
        out.append(
            MetricSeries(
                run_id=uuid_of[run_pk],
                key=key,
                steps=steps,
                values=values,
                total=total,
                downsampled=total > len(steps),
            )
        )
    order = {r: i for i, r in enumerate(dict.fromkeys(run_ids))}
    out.sort(key=lambda series: (order.get(series.run_id, 0), series.key))
    return out


async def count_metric_points(
    s: AsyncSession, run_id: str | None, keys: Sequence[str] | None = None
) -> dict[str, int]:
    """How many points each metric history of the run holds (NaN included)."""
    handle = await _run(s, run_id)
    counts = await store.metric_point_counts(s, [handle.id], keys)
    return {key: count for (_, key), count in counts.items()}


# How far back the runs table's column chooser looks for keys, and how many it offers per kind.
KEY_SCAN_RUNS = 1000
KEY_SCAN_LIMIT = 500


async def experiment_keys(s: AsyncSession, experiment_id: Id | None) -> dict[str, list[str]]:
    """Metric, param and tag keys logged by the experiment's recent runs (for column choice)."""
    return await store.recent_keys(
        s, parse_experiment_id(experiment_id), runs=KEY_SCAN_RUNS, limit=KEY_SCAN_LIMIT
    )
