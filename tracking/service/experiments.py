"""Experiments: create, rename, delete and restore, tags, search, and lookups for the guard."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from tracking import store
from tracking.core.auth import ResourceScope
from tracking.core.clock import now_ms
from tracking.core.errors import InvalidParameter, ResourceNotFound
from tracking.core.wire import decode_page_token, encode_page_token
from tracking.errors import ExperimentAlreadyExists, ExperimentNotFound, InactiveExperiment
from tracking.schemas import CreateExperiment, ExperimentOut, Id, SearchExperiments
from tracking.service.lookups import (
    existing_experiment,
    page_fingerprint,
    parse_experiment_id,
    parse_view_type,
)
from tracking.service.rendering import experiment_out
from tracking.store import ExperimentIdentity
from tracking.validation import (
    MAX_EXPERIMENT_SEARCH_RESULTS,
    require,
    validate_experiment_name,
    validate_experiment_tag,
    validate_max_results,
)


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


async def rename_experiment(
    s: AsyncSession, experiment_id: Id | None, new_name: str | None
) -> None:
    eid, stage = await existing_experiment(s, experiment_id)
    name = validate_experiment_name(new_name)
    if stage != "active":
        raise InactiveExperiment(experiment_id)
    current = await store.find_experiment_id_by_name(s, name)
    if current is not None and current != eid:
        raise ExperimentAlreadyExists(name)
    await store.update_experiment(s, eid, name=name, last_update_time=now_ms())


async def delete_experiment(s: AsyncSession, experiment_id: Id | None) -> None:
    eid, _ = await existing_experiment(s, experiment_id)
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
    eid, stage = await existing_experiment(s, experiment_id)
    if stage != "deleted":
        raise InvalidParameter(f"Cannot restore an active experiment. Experiment {eid} is active.")
    await store.update_experiment(s, eid, lifecycle_stage="active", last_update_time=now_ms())
    await store.set_runs_lifecycle_for_experiment(
        s, eid, lifecycle_stage="active", deleted_time=None
    )


async def set_experiment_tag(
    s: AsyncSession, experiment_id: Id | None, key: str | None, value: str | None
) -> None:
    eid, stage = await existing_experiment(s, experiment_id)
    if stage != "active":
        raise InactiveExperiment(experiment_id)
    await store.upsert_experiment_tags(s, eid, [validate_experiment_tag(key, value)])


async def delete_experiment_tag(s: AsyncSession, experiment_id: Id | None, key: str | None) -> None:
    eid, stage = await existing_experiment(s, experiment_id)
    require(key, "key")
    assert key is not None
    if stage != "active":
        raise InactiveExperiment(experiment_id)
    if not await store.delete_experiment_tag(s, eid, key):
        raise ResourceNotFound(f"No tag with name: {key} in experiment with id {eid}")


async def search_experiments(
    s: AsyncSession, req: SearchExperiments, *, scope: ResourceScope | None = None
) -> tuple[list[ExperimentOut], str | None]:
    """One page of experiments; ``scope`` (None: all) keeps those the caller may read."""
    from tracking.search import experiment_search_select

    limit = validate_max_results(req.max_results, 1000, MAX_EXPERIMENT_SEARCH_RESULTS)
    view = parse_view_type(req.view_type)
    fingerprint = page_fingerprint("exp", req.filter or "", tuple(req.order_by), view)
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


KEY_SCAN_RUNS = 1000
KEY_SCAN_LIMIT = 500


async def experiment_keys(s: AsyncSession, experiment_id: Id | None) -> dict[str, list[str]]:
    """Metric, param and tag keys logged by the experiment's recent runs (for column choice)."""
    return await store.recent_keys(
        s, parse_experiment_id(experiment_id), runs=KEY_SCAN_RUNS, limit=KEY_SCAN_LIMIT
    )
