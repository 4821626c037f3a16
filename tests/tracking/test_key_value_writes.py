"""Every (owner, key) -> value table goes through one write (tracking.store.key_values).

A second write of a key replaces a tag's value (run, experiment, dataset input and logged-model
tags, and logged-model params, as mlflow server does) but never a run's param (MLflow's rule:
the first value stays and a different one is refused). Nothing leaks across owners.
"""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from tests.tracking.helpers import make_experiment, make_run, params_of, tags_of
from tracking import service
from tracking.errors import ParamChanged
from tracking.schemas import (
    CreateExperiment,
    CreateLoggedModel,
    DatasetIn,
    DatasetInputIn,
    KeyValue,
    LogBatch,
    LogInputs,
)


async def test_run_tags_take_the_latest_value_per_run(session: AsyncSession, unique: str) -> None:
    eid = await make_experiment(session, f"kv-{unique}")
    one, two = await make_run(session, eid), await make_run(session, eid)
    await service.set_tag(session, one, "t", "first")
    await service.log_batch(session, LogBatch(run_id=one, tags=[KeyValue("t", "second")]))
    await service.set_tag(session, two, "t", "other")
    assert tags_of(await service.get_run(session, one))["t"] == "second"
    assert tags_of(await service.get_run(session, two))["t"] == "other"


async def test_run_params_keep_their_first_value_per_run(
    session: AsyncSession, unique: str
) -> None:
    eid = await make_experiment(session, f"kv-{unique}")
    one, two = await make_run(session, eid), await make_run(session, eid)
    await service.log_batch(session, LogBatch(run_id=one, params=[KeyValue("p", "1")]))
    await service.log_param(session, two, "p", "2")  # another run: its own value
    with pytest.raises(ParamChanged):
        await service.log_batch(session, LogBatch(run_id=one, params=[KeyValue("p", "3")]))
    assert params_of(await service.get_run(session, one)) == {"p": "1"}
    assert params_of(await service.get_run(session, two)) == {"p": "2"}


async def test_experiment_tags_take_the_latest_value(session: AsyncSession, unique: str) -> None:
    tags = [KeyValue("t", "a"), KeyValue("t", "b"), KeyValue("u", "c")]
    eid = await service.create_experiment(session, CreateExperiment(name=f"kv-{unique}", tags=tags))

    async def stored() -> dict[str, str]:
        return {t.key: t.value for t in (await service.get_experiment(session, eid)).tags}

    assert await stored() == {"t": "b", "u": "c"}  # a repeated key keeps its last value
    await service.set_experiment_tag(session, eid, "u", "d")
    assert await stored() == {"t": "b", "u": "d"}


async def test_logged_model_tags_and_params_take_the_latest_value(
    session: AsyncSession, unique: str
) -> None:
    eid = await make_experiment(session, f"kv-{unique}")
    model = await service.create_logged_model(
        session,
        CreateLoggedModel(experiment_id=eid, params=[KeyValue("p", "1")],
                          tags=[KeyValue("t", "1")]),
    )  # fmt: skip
    model_id = model.info.model_id
    await service.set_logged_model_tags(session, model_id, [KeyValue("t", "2")])
    await service.log_logged_model_params(session, model_id, [KeyValue("p", "2")])
    got = await service.get_logged_model(session, model_id)
    assert {t.key: t.value for t in got.info.tags} == {"t": "2"}
    assert {p.key: p.value for p in got.data.params} == {"p": "2"}


async def test_dataset_input_tags_take_the_latest_value(session: AsyncSession, unique: str) -> None:
    eid = await make_experiment(session, f"kv-{unique}")
    run_id = await make_run(session, eid)
    dataset = DatasetIn(name="ds", digest="d1", source_type="local", source="s")

    async def log(context: str) -> None:
        item = DatasetInputIn(tags=[KeyValue("mlflow.data.context", context)], dataset=dataset)
        await service.log_inputs(session, LogInputs(run_id=run_id, datasets=[item]))

    await log("training")
    await log("eval")
    inputs = (await service.get_run(session, run_id)).inputs.dataset_inputs
    assert [{t.key: t.value for t in i.tags} for i in inputs] == [{"mlflow.data.context": "eval"}]
