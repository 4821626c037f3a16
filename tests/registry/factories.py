"""Small async builders for registry test data, on the session the test passes in."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from registry import service
from registry.schemas import CreateModelVersion, CreateRegisteredModel, KeyValue
from tracking import service as tracking
from tracking.schemas import CreateExperiment, CreateLoggedModel, CreateRun, ModelRefIn

ACTOR = "tester"


async def make_run(session: AsyncSession, experiment_id: str | None = None) -> str:
    """A run in a fresh experiment (or the one given); returns its run id."""
    if experiment_id is None:
        experiment_id = await tracking.create_experiment(
            session, CreateExperiment(name=f"exp-{uuid.uuid4().hex[:10]}")
        )
    run = await tracking.create_run(session, CreateRun(experiment_id=experiment_id, start_time=1))
    return run.info.run_id


async def make_logged_model(
    session: AsyncSession, run_id: str | None = None, *, name: str = "model"
) -> str:
    """A logged model (MLflow 3's log_model), produced by ``run_id`` when given."""
    experiment_id = "0"
    if run_id is not None:
        experiment_id = (await tracking.get_run(session, run_id)).info.experiment_id
    model = await tracking.create_logged_model(
        session, CreateLoggedModel(experiment_id=experiment_id, name=name, source_run_id=run_id)
    )
    if run_id is not None:
        await tracking.log_outputs(session, run_id, [ModelRefIn(model.info.model_id, 0)])
    return model.info.model_id


async def make_model(
    session: AsyncSession, name: str | None = None, *, tags: dict[str, str] | None = None
) -> str:
    name = f"model-{uuid.uuid4().hex[:10]}" if name is None else name
    await service.create_registered_model(
        session,
        CreateRegisteredModel(name=name, tags=[KeyValue(k, v) for k, v in (tags or {}).items()]),
        actor=ACTOR,
    )
    return name


async def make_version(
    session: AsyncSession,
    name: str,
    *,
    run_id: str | None = None,
    tags: dict[str, str] | None = None,
    stage: str | None = None,
) -> str:
    """A version from ``runs:/<run>/model`` (a fresh run unless given); returns its number."""
    run_id = run_id or await make_run(session)
    version = await service.create_model_version(
        session,
        CreateModelVersion(
            name=name,
            source=f"runs:/{run_id}/model",
            run_id=run_id,
            tags=[KeyValue(k, v) for k, v in (tags or {}).items()],
        ),
        actor=ACTOR,
    )
    if stage is not None:
        await service.transition_stage(session, name, version.version, stage, actor=ACTOR)
    return version.version
