"""The lean run reads (a gate's checks, a ``runs:/`` source) answer what ``get_run`` answers
for what they load, in two statements, and refuse a missing run the same way."""

from __future__ import annotations

import math

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from tests.registry.test_query_counts import count_queries
from tests.tracking.helpers import make_experiment, make_run
from tracking import service
from tracking.errors import MissingParameter, RunNotFound
from tracking.schemas import (
    CreateLoggedModel,
    DatasetIn,
    DatasetInputIn,
    KeyValue,
    LogInputs,
    ModelRefIn,
    RunInputsOut,
    RunOut,
)


def _sorted(run: RunOut) -> tuple[object, ...]:
    """The run with its collections in a fixed order (neither read promises one)."""
    data = run.data
    return (
        run.info,
        sorted((m.key, str(m.value), m.timestamp, m.step) for m in data.metrics),
        sorted((p.key, p.value) for p in data.params),
        sorted((t.key, t.value) for t in data.tags),
        sorted((m.model_id, m.step) for m in run.outputs.model_outputs) if run.outputs else [],
        sorted(m.model_id for m in run.inputs.model_inputs) if run.inputs else [],
    )


async def _rich_run(session: AsyncSession, unique: str) -> str:
    eid = await make_experiment(session, f"reads-{unique}")
    run_id = await make_run(
        session,
        eid,
        metrics={"auc": 0.9, "loss": math.nan, "big": math.inf},
        params={"lr": "0.1", "depth": "6"},
        tags={"team": "fraud"},
    )
    produced = await service.create_logged_model(
        session, CreateLoggedModel(experiment_id=eid, name="model", source_run_id=run_id)
    )
    used = await service.create_logged_model(session, CreateLoggedModel(experiment_id=eid))
    await service.log_outputs(session, run_id, [ModelRefIn(produced.info.model_id, 3)])
    dataset = DatasetIn(name="ds", digest="d1", source_type="local", source="s")
    await service.log_inputs(
        session,
        LogInputs(
            run_id=run_id,
            datasets=[DatasetInputIn(tags=[KeyValue("k", "v")], dataset=dataset)],
            models=[ModelRefIn(used.info.model_id)],
        ),
    )
    return run_id


async def test_the_checks_read_matches_get_run_without_dataset_inputs_in_two_statements(
    session: AsyncSession, unique: str
) -> None:
    run_id = await _rich_run(session, unique)
    full = await service.get_run(session, run_id)
    with count_queries(session) as statements:
        lean = await service.get_run_for_checks(session, run_id)
    assert len(statements) == 2, statements
    assert full.inputs is not None and full.inputs.dataset_inputs  # what the lean read skips
    assert lean.inputs is not None and lean.inputs.dataset_inputs == []
    assert _sorted(lean) == _sorted(full)
    assert {m.key: m.value for m in lean.data.metrics}["loss"] == "NaN"


async def test_the_source_read_matches_get_run_info_and_model_links_in_two_statements(
    session: AsyncSession, unique: str
) -> None:
    run_id = await _rich_run(session, unique)
    full = await service.get_run(session, run_id)
    with count_queries(session) as statements:
        outputs = await service.get_run_outputs(session, run_id)
    assert len(statements) == 2, statements
    assert outputs.info == full.info
    assert not outputs.data.metrics and not outputs.data.params and not outputs.data.tags
    assert outputs.inputs == RunInputsOut(
        dataset_inputs=[], model_inputs=full.inputs.model_inputs if full.inputs else []
    )
    assert outputs.outputs == full.outputs


@pytest.mark.parametrize("read", [service.get_run_for_checks, service.get_run_outputs])
async def test_the_lean_reads_refuse_a_missing_run_as_get_run_does(
    session: AsyncSession, read: object
) -> None:
    missing = "f" * 32
    with pytest.raises(RunNotFound) as expected:
        await service.get_run(session, missing)
    with pytest.raises(RunNotFound) as got:
        await read(session, missing)  # type: ignore[operator]
    assert got.value.message == expected.value.message
    with pytest.raises(MissingParameter):
        await read(session, "")  # type: ignore[operator]
