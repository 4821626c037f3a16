"""Logged models: create, finalize, tags and params, search, registered versions."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from tracking import store
from tracking.core.auth import ResourceScope
from tracking.core.clock import now_ms
from tracking.core.errors import InvalidParameter, ResourceNotFound
from tracking.core.wire import decode_page_token, encode_page_token
from tracking.errors import InactiveExperiment, LoggedModelNotFound
from tracking.schemas import CreateLoggedModel, KeyValue, LoggedModelOut
from tracking.service.lookups import (
    existing_experiment,
    generate_run_name,
    page_fingerprint,
    parse_experiment_id,
)
from tracking.service.rendering import logged_model_out
from tracking.validation import (
    MAX_DATASET_NAME,
    MAX_PARAM_VALUE_LEN,
    MAX_RUN_TAG_VALUE_LEN,
    MAX_SEARCH_RESULTS,
    check_length,
    require,
    truncate,
    validate_key,
    validate_max_results,
)


def _kv(items: Sequence[KeyValue], kind: str, limit: int) -> dict[str, str]:
    return {validate_key(i.key, kind): truncate(i.value or "", limit) for i in items}


async def create_logged_model(s: AsyncSession, req: CreateLoggedModel) -> LoggedModelOut:
    eid, stage = await existing_experiment(s, req.experiment_id)
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
    fingerprint = page_fingerprint(
        "lm", tuple(experiment_ids), req.filter or "", tuple(order), tuple(datasets)
    )
    offset = decode_page_token(req.page_token, fingerprint)
    if not experiment_ids:
        raise InvalidParameter("experiment_ids must contain at least one experiment id.")
    stmt = logged_model_search_select(experiment_ids, req.filter, order, datasets, scope)
    ids = [row[0] for row in await s.execute(stmt.offset(offset).limit(limit + 1))]
    token = encode_page_token(offset + limit, fingerprint) if len(ids) > limit else None
    return [logged_model_out(b) for b in await store.load_logged_models(s, ids[:limit])], token
