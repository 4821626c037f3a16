"""A run's life: create, update (status, end time, name), delete and restore, with its
experiment's; every write to a deleted run or in a deleted experiment is refused."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from tests.tracking.helpers import make_experiment, make_run, tags_of
from tracking import service
from tracking.core.errors import InvalidParameter, ResourceNotFound
from tracking.errors import (
    ExperimentNotFound,
    InactiveExperiment,
    InactiveRun,
    MissingParameter,
    RunNotFound,
)
from tracking.schemas import CreateRun, KeyValue, LogBatch, MetricIn, UpdateRun


@pytest.fixture
async def experiment(session: AsyncSession, unique: str) -> str:
    return await make_experiment(session, f"life-{unique}")


async def test_a_new_run_is_running_active_and_stores_artifacts_under_its_experiment(
    session: AsyncSession, experiment: str
) -> None:
    run = await service.create_run(
        session, CreateRun(experiment_id=experiment, user_id="ann", start_time=123)
    )
    info = run.info
    assert (info.status, info.lifecycle_stage, info.start_time, info.end_time) == (
        "RUNNING",
        "active",
        123,
        None,
    )
    assert info.user_id == "ann" and info.experiment_id == experiment
    assert info.artifact_uri == f"mlflow-artifacts:/{experiment}/{info.run_id}/artifacts"
    # No name given: the server picks one and records it as the mlflow.runName tag.
    assert info.run_name and tags_of(run)["mlflow.runName"] == info.run_name
    stored = await service.get_run(session, info.run_id)
    assert stored.info == info


async def test_the_authenticated_user_replaces_the_claimed_one(
    session: AsyncSession, experiment: str
) -> None:
    claimed = CreateRun(experiment_id=experiment, user_id="mallory")
    run = await service.create_run(session, claimed, user="alice")
    assert run.info.user_id == "alice" and tags_of(run)["mlflow.user"] == "alice"


async def test_run_name_and_name_tag_must_agree(session: AsyncSession, experiment: str) -> None:
    tag = KeyValue("mlflow.runName", "from-tag")
    run = await service.create_run(session, CreateRun(experiment_id=experiment, tags=[tag]))
    assert run.info.run_name == "from-tag"
    with pytest.raises(InvalidParameter, match="Both 'run_name' argument and"):
        await service.create_run(
            session, CreateRun(experiment_id=experiment, run_name="other", tags=[tag])
        )


async def test_a_run_needs_an_existing_active_experiment(
    session: AsyncSession, experiment: str
) -> None:
    with pytest.raises(ExperimentNotFound):
        await service.create_run(session, CreateRun(experiment_id="987654321"))
    await service.delete_experiment(session, experiment)
    with pytest.raises(InactiveExperiment):
        await service.create_run(session, CreateRun(experiment_id=experiment))


async def test_no_experiment_id_means_the_default_experiment(session: AsyncSession) -> None:
    run = await service.create_run(session, CreateRun())
    assert run.info.experiment_id == "0"


async def test_update_sets_status_end_time_and_name(session: AsyncSession, experiment: str) -> None:
    run_id = await make_run(session, experiment, name="first")
    info = await service.update_run(
        session, UpdateRun(run_id=run_id, status="FINISHED", end_time=999, run_name="second")
    )
    assert (info.status, info.end_time, info.run_name) == ("FINISHED", 999, "second")
    assert tags_of(await service.get_run(session, run_id))["mlflow.runName"] == "second"
    # A status-only update keeps the rest; every MLflow status is accepted, in any order.
    for status in ("KILLED", "SCHEDULED", "FAILED", "RUNNING"):
        info = await service.update_run(session, UpdateRun(run_uuid=run_id, status=status))
        assert (info.status, info.end_time, info.run_name) == (status, 999, "second")


async def test_an_unknown_status_is_invalid_and_changes_nothing(
    session: AsyncSession, experiment: str
) -> None:
    run_id = await make_run(session, experiment)
    with pytest.raises(InvalidParameter, match="Invalid run status"):
        await service.update_run(session, UpdateRun(run_id=run_id, status="DONE", end_time=5))
    info = (await service.get_run(session, run_id)).info
    assert (info.status, info.end_time) == ("RUNNING", None)


async def test_set_tag_run_name_renames_the_run(session: AsyncSession, experiment: str) -> None:
    run_id = await make_run(session, experiment, name="before")
    await service.set_tag(session, run_id, "mlflow.runName", "after")
    assert (await service.get_run(session, run_id)).info.run_name == "after"


async def test_deleting_a_run_hides_it_and_refuses_writes_until_restored(
    session: AsyncSession, experiment: str
) -> None:
    run_id = await make_run(session, experiment)
    await service.delete_run(session, run_id)
    assert (await service.get_run(session, run_id)).info.lifecycle_stage == "deleted"
    writes = [
        service.log_param(session, run_id, "p", "1"),
        service.set_tag(session, run_id, "t", "1"),
        service.delete_tag(session, run_id, "t"),
        service.update_run(session, UpdateRun(run_id=run_id, status="FINISHED")),
        service.log_batch(session, LogBatch(run_id=run_id, metrics=[MetricIn("m", 1.0, 0, 0)])),
    ]
    for write in writes:
        with pytest.raises(InactiveRun, match="must be in the 'active' state"):
            await write
    await service.restore_run(session, run_id)
    assert (await service.get_run(session, run_id)).info.lifecycle_stage == "active"
    await service.log_param(session, run_id, "p", "1")


async def test_deleting_an_experiment_deletes_its_runs_and_restoring_brings_them_back(
    session: AsyncSession, experiment: str
) -> None:
    run_id = await make_run(session, experiment)
    await service.delete_experiment(session, experiment)
    assert (await service.get_run(session, run_id)).info.lifecycle_stage == "deleted"
    with pytest.raises(InactiveExperiment):
        await service.restore_run(session, run_id)  # its experiment is still deleted
    await service.restore_experiment(session, experiment)
    assert (await service.get_run(session, run_id)).info.lifecycle_stage == "active"
    with pytest.raises(InvalidParameter, match="Cannot restore an active experiment"):
        await service.restore_experiment(session, experiment)


async def test_the_default_experiment_cannot_be_deleted(session: AsyncSession) -> None:
    with pytest.raises(InvalidParameter, match="default experiment"):
        await service.delete_experiment(session, "0")


async def test_missing_runs_and_tags_are_not_found(session: AsyncSession, experiment: str) -> None:
    for call in (service.get_run, service.delete_run, service.restore_run):
        with pytest.raises(RunNotFound):
            await call(session, "f" * 32)
    with pytest.raises(MissingParameter, match="run_id"):
        await service.get_run(session, None)
    run_id = await make_run(session, experiment)
    with pytest.raises(ResourceNotFound, match="No tag with name: nope"):
        await service.delete_tag(session, run_id, "nope")
