"""A run's dataset inputs and model links, and the datasets experiments used."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from tracking import store
from tracking.core.errors import InvalidParameter
from tracking.errors import LoggedModelNotFound
from tracking.schemas import Id, LogInputs
from tracking.service.lookups import active_run, parse_experiment_id
from tracking.validation import (
    MAX_DATASET_DIGEST,
    MAX_DATASET_NAME,
    MAX_DATASET_PROFILE,
    MAX_DATASET_SCHEMA,
    MAX_DATASET_SOURCE,
    check_length,
    require,
)


async def log_inputs(s: AsyncSession, req: LogInputs) -> None:
    handle = await active_run(s, req.run_id)
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
    handle = await active_run(s, run_id)
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
