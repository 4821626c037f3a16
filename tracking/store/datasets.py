"""Datasets, a run's dataset inputs and its links to logged models."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from tracking.core.db import dialect_insert
from tracking.models import Dataset, DatasetInput, DatasetInputTag, RunModelLink
from tracking.store.key_values import KeyValueTable, write_key_values


async def find_dataset(s: AsyncSession, experiment_id: int, name: str, digest: str) -> str | None:
    return (
        await s.execute(
            select(Dataset.dataset_uuid).where(
                Dataset.experiment_id == experiment_id,
                Dataset.name == name,
                Dataset.digest == digest,
            )
        )
    ).scalar_one_or_none()


# The input tag MLflow sets to say what a dataset was used for ("training", "eval"...).
DATASET_CONTEXT_TAG = "mlflow.data.context"
MAX_DATASET_SUMMARIES = 1000


async def dataset_summaries(s: AsyncSession, experiment_ids: Sequence[int]) -> list[Any]:
    """Distinct (experiment, name, digest, context) of the datasets the experiments' runs
    used, in that order, at most MAX_DATASET_SUMMARIES (MLflow UI's dataset filter)."""
    context = (
        select(DatasetInputTag.value)
        .where(
            DatasetInputTag.input_id == DatasetInput.id,
            DatasetInputTag.key == DATASET_CONTEXT_TAG,
        )
        .scalar_subquery()
    )
    stmt = (
        select(Dataset.experiment_id, Dataset.name, Dataset.digest, context.label("context"))
        .join(DatasetInput, DatasetInput.dataset_uuid == Dataset.dataset_uuid)
        .where(Dataset.experiment_id.in_(list(experiment_ids)))
        .distinct()
        .order_by(Dataset.experiment_id, Dataset.name, Dataset.digest, context)
        .limit(MAX_DATASET_SUMMARIES)
    )
    return list((await s.execute(stmt)).all())


async def insert_dataset(s: AsyncSession, **values: Any) -> None:
    await s.execute(
        dialect_insert(s)(Dataset.__table__)
        .values(**values)
        .on_conflict_do_nothing(
            index_elements=[Dataset.experiment_id, Dataset.name, Dataset.digest]
        )
    )


INPUT_TAGS = KeyValueTable(DatasetInputTag.__table__, "input_id")


async def link_dataset_input(
    s: AsyncSession, run_pk: int, dataset_uuid: str, tags: dict[str, str]
) -> None:
    await s.execute(
        dialect_insert(s)(DatasetInput.__table__)
        .values(run_id=run_pk, dataset_uuid=dataset_uuid)
        .on_conflict_do_nothing(index_elements=[DatasetInput.run_id, DatasetInput.dataset_uuid])
    )
    input_id = (
        await s.execute(
            select(DatasetInput.id).where(
                DatasetInput.run_id == run_pk, DatasetInput.dataset_uuid == dataset_uuid
            )
        )
    ).scalar_one()
    await write_key_values(s, INPUT_TAGS, input_id, tags)


async def link_models(
    s: AsyncSession, run_pk: int, links: Sequence[tuple[str, int]], direction: str
) -> None:
    if not links:
        return
    ins = dialect_insert(s)(RunModelLink.__table__)
    await s.execute(
        ins.on_conflict_do_update(
            index_elements=[RunModelLink.run_id, RunModelLink.model_id, RunModelLink.direction],
            set_={"step": ins.excluded.step},
        ),
        [{"run_id": run_pk, "model_id": m, "direction": direction, "step": st} for m, st in links],
    )
