"""MLflow's input limits on tracking writes (mlflow-rest-contract.md section 5).

Keys: at most 250 characters of a safe charset, a normalised relative path. Param and run-tag
values are truncated (6000 / 8000), experiment tag values are refused past 20000. A batch holds
at most 1000 metrics, 100 params, 100 tags and 1000 items in all. A logged param never changes.
Every refusal is INVALID_PARAMETER_VALUE and leaves nothing written.
"""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from tests.tracking.helpers import make_experiment, make_run, params_of, tags_of
from tracking import service
from tracking.core.errors import InvalidParameter
from tracking.errors import MissingParameter, ParamChanged
from tracking.schemas import CreateExperiment, CreateRun, KeyValue, LogBatch, MetricIn, UpdateRun


@pytest.fixture
async def run_id(session: AsyncSession, unique: str) -> str:
    return await make_run(session, await make_experiment(session, f"limits-{unique}"))


def _metrics(n: int) -> list[MetricIn]:
    return [MetricIn(f"m{i}", 1.0, 0, 0) for i in range(n)]


def _kvs(n: int, prefix: str) -> list[KeyValue]:
    return [KeyValue(f"{prefix}{i}", "v") for i in range(n)]


async def _refused_leaving_run_unchanged(s: AsyncSession, batch: LogBatch, match: str) -> None:
    before = await service.get_run(s, str(batch.run_id))
    with pytest.raises(InvalidParameter, match=match):
        await service.log_batch(s, batch)
    assert (await service.get_run(s, str(batch.run_id))).data == before.data


@pytest.mark.parametrize(
    ("metrics", "params", "tags", "match"),
    [
        (1001, 0, 0, "at most 1000 metrics"),
        (0, 101, 0, "at most 100 params"),
        (0, 0, 101, "at most 100 tags"),
        (901, 100, 0, "1000 metrics, params and tags in total"),
    ],
)
async def test_oversized_batches_are_refused_whole(
    session: AsyncSession, run_id: str, metrics: int, params: int, tags: int, match: str
) -> None:
    batch = LogBatch(run_id=run_id, metrics=_metrics(metrics), params=_kvs(params, "p"),
                     tags=_kvs(tags, "t"))  # fmt: skip
    await _refused_leaving_run_unchanged(session, batch, match)


async def test_a_batch_at_every_limit_is_accepted(session: AsyncSession, run_id: str) -> None:
    batch = LogBatch(run_id=run_id, metrics=_metrics(800), params=_kvs(100, "p"),
                     tags=_kvs(100, "t"))  # fmt: skip
    await service.log_batch(session, batch)
    run = await service.get_run(session, run_id)
    assert (len(run.data.metrics), len(run.data.params)) == (800, 100)
    assert len([t for t in run.data.tags if t.key.startswith("t")]) == 100


@pytest.mark.parametrize(
    ("key", "match"),
    [
        ("k" * 251, "exceeded length limit of 250"),
        ("bad*key", "Invalid param name"),
        ("/absolute", "cannot be absolute"),
        ("a/../b", "non-normalised"),
        ("a//b", "non-normalised"),
    ],
)
async def test_bad_keys_are_invalid_for_params_tags_and_metrics(
    session: AsyncSession, run_id: str, key: str, match: str
) -> None:
    with pytest.raises(InvalidParameter, match=match):
        await service.log_param(session, run_id, key, "v")
    with pytest.raises(InvalidParameter, match=match.replace("param", "tag")):
        await service.set_tag(session, run_id, key, "v")
    with pytest.raises(InvalidParameter, match=match.replace("param", "metric")):
        await service.log_metric(session, run_id, MetricIn(key, 1.0, 0, 0))


async def test_a_key_of_250_safe_characters_is_accepted(session: AsyncSession, run_id: str) -> None:
    key = "k/ -.:_" + "x" * 243
    await service.log_param(session, run_id, key, "v")
    assert params_of(await service.get_run(session, run_id)) == {key: "v"}


async def test_long_param_and_tag_values_are_truncated_like_mlflow(
    session: AsyncSession, run_id: str
) -> None:
    await service.log_param(session, run_id, "p", "x" * 6001)
    await service.set_tag(session, run_id, "t", "y" * 8001)
    run = await service.get_run(session, run_id)
    assert params_of(run)["p"] == "x" * 6000
    assert tags_of(run)["t"] == "y" * 8000
    # The truncated value is the stored one: logging the long value again is no change.
    await service.log_param(session, run_id, "p", "x" * 7000)


async def test_a_logged_param_never_changes(session: AsyncSession, run_id: str) -> None:
    await service.log_param(session, run_id, "alpha", "1")
    await service.log_param(session, run_id, "alpha", "1")  # the same value again is fine
    with pytest.raises(ParamChanged, match="Changing param values is not allowed"):
        await service.log_param(session, run_id, "alpha", "2")
    with pytest.raises(ParamChanged, match="Attempted logging new value '3'"):
        await service.log_batch(session, LogBatch(run_id=run_id, params=[KeyValue("alpha", "3")]))
    assert params_of(await service.get_run(session, run_id)) == {"alpha": "1"}


async def test_a_batch_naming_one_param_twice_with_two_values_is_refused(
    session: AsyncSession, run_id: str
) -> None:
    same = [KeyValue("p", "1"), KeyValue("p", "1")]
    await service.log_batch(session, LogBatch(run_id=run_id, params=same))
    clash = LogBatch(run_id=run_id, params=[KeyValue("q", "1"), KeyValue("q", "2")])
    await _refused_leaving_run_unchanged(session, clash, "Duplicate parameter keys")


@pytest.mark.parametrize(
    ("point", "error", "match"),
    [
        (MetricIn("m", 1.0, -1, 0), InvalidParameter, "Timestamp must be non-negative"),
        (MetricIn("m", 1.0, None, 0), MissingParameter, "timestamp"),
        (MetricIn("m", None, 0, 0), InvalidParameter, "expected a number"),
        (MetricIn(None, 1.0, 0, 0), MissingParameter, "key"),
    ],
)
async def test_malformed_metric_points_are_invalid(
    session: AsyncSession, run_id: str, point: MetricIn, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        await service.log_metric(session, run_id, point)
    await _refused_leaving_run_unchanged(session, LogBatch(run_id=run_id, metrics=[point]), match)


async def test_experiment_name_and_tag_limits(session: AsyncSession, unique: str) -> None:
    name = f"{unique}-" + "n" * (500 - len(unique) - 1)
    eid = await service.create_experiment(session, CreateExperiment(name=name))
    with pytest.raises(InvalidParameter, match="maximum length of 500"):
        await service.create_experiment(session, CreateExperiment(name=name + "n"))
    with pytest.raises(MissingParameter, match="'name'"):
        await service.create_experiment(session, CreateExperiment(name=""))
    await service.set_experiment_tag(session, eid, "t", "v" * 20000)
    with pytest.raises(InvalidParameter, match="exceeded length limit of 20000"):
        await service.set_experiment_tag(session, eid, "t", "v" * 20001)
    tags = {t.key: t.value for t in (await service.get_experiment(session, eid)).tags}
    assert tags == {"t": "v" * 20000}


async def test_run_names_longer_than_250_are_invalid(session: AsyncSession, run_id: str) -> None:
    experiment_id = (await service.get_run(session, run_id)).info.experiment_id
    with pytest.raises(InvalidParameter, match="Run name exceeds the maximum length of 250"):
        await service.create_run(
            session, CreateRun(experiment_id=experiment_id, run_name="r" * 251)
        )
    with pytest.raises(InvalidParameter, match="Run name exceeds the maximum length of 250"):
        await service.update_run(session, UpdateRun(run_id=run_id, run_name="r" * 251))
    info = await service.update_run(session, UpdateRun(run_id=run_id, run_name="r" * 250))
    assert info.run_name == "r" * 250


async def test_client_chosen_artifact_locations_are_refused(
    session: AsyncSession, unique: str
) -> None:
    # A client-picked root could reach outside its own area (CVE-2023-6909 class).
    req = CreateExperiment(name=f"loc-{unique}", artifact_location="file:///etc")
    with pytest.raises(InvalidParameter, match="artifact_location cannot be set"):
        await service.create_experiment(session, req)
