"""Attacks on a model version's ``source`` (MLflow's path-traversal / LFI CVE record).

Each test is one attack class; every spelling must be refused with INVALID_PARAMETER_VALUE
(400) and must not consume a version number.
"""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from registry import service
from registry.schemas import CreateModelVersion
from tests.registry.factories import ACTOR, make_logged_model, make_model, make_run, make_version
from tracking import service as tracking
from tracking.core.errors import InvalidParameter, MlflowError


async def _refused(
    session: AsyncSession,
    name: str,
    source: str,
    *,
    run_id: str | None = None,
    model_id: str | None = None,
) -> str:
    with pytest.raises(MlflowError) as err:
        async with session.begin_nested():
            await service.create_model_version(
                session,
                CreateModelVersion(name=name, source=source, run_id=run_id, model_id=model_id),
                actor=ACTOR,
            )
    assert err.value.status_code == 400, (source, err.value.message)
    assert err.value.error_code == "INVALID_PARAMETER_VALUE"
    return err.value.message


async def _accepted(session: AsyncSession, name: str, source: str, **kw: str | None) -> object:
    return await service.create_model_version(
        session, CreateModelVersion(name=name, source=source, **kw), actor=ACTOR
    )


async def _run_root(session: AsyncSession, run_id: str) -> str:
    return (await tracking.get_run(session, run_id)).info.artifact_uri


async def test_file_uris_are_refused(session: AsyncSession) -> None:
    # CVE-2023-1177 / CVE-2023-6909: file:// sources read arbitrary server files.
    name = await make_model(session)
    for source in (
        "file:///etc/passwd",
        "FILE:///etc/passwd",
        "file:/etc/passwd",
        "file://localhost/etc/passwd",
        "file:passwd",
    ):
        await _refused(session, name, source)


async def test_other_schemes_are_refused(session: AsyncSession) -> None:
    # Any scheme the server would open itself escapes the artifact store it guards.
    name = await make_model(session)
    for source in (
        "s3://bucket/model",
        "gs://bucket/model",
        "http://169.254.169.254/latest/meta-data",
        "https://evil.example/model",
        "hdfs://nn/model",
        "dbfs:/model",
        "ftp://host/model",
        "c:/windows/system32",
        "local:/etc/passwd",
    ):
        await _refused(session, name, source)


async def test_local_paths_are_refused(session: AsyncSession) -> None:
    # CVE-2023-1177 class: bare absolute or relative paths are local files.
    name = await make_model(session)
    for source in ("/etc/passwd", "//server/share/model", "model", "./model", "../model", "~/x"):
        await _refused(session, name, source)


async def test_dot_dot_segments_are_refused(session: AsyncSession) -> None:
    # CVE-2023-2356 / CVE-2023-6831: '..' walks out of the run's artifact root.
    name = await make_model(session)
    run_id = await make_run(session)
    root = await _run_root(session, run_id)
    for source in (
        f"runs:/{run_id}/../other/artifacts",
        f"runs:/{run_id}/model/../../../../etc",
        f"runs:/{run_id}/./model",
        f"runs:/{run_id}/model//x",
        f"{root}/../../../etc/passwd",
        f"{root}/model/..",
    ):
        await _refused(session, name, source, run_id=run_id)


async def test_percent_encoded_and_double_encoded_traversal_is_refused(
    session: AsyncSession,
) -> None:
    # CVE-2024-1560: '%2e%2e' (and '%252e%252e' decoded twice) became '..' after the check.
    name = await make_model(session)
    run_id = await make_run(session)
    root = await _run_root(session, run_id)
    for source in (
        f"runs:/{run_id}/%2e%2e/%2e%2e/etc",
        f"runs:/{run_id}/%2E%2E%2Fsecret",
        f"runs:/{run_id}/%252e%252e/x",
        f"{root}/%2e%2e%2f%2e%2e%2fetc",
        f"{root}/..%2f..%2fetc",
        f"{root}/%252e%252e%252fetc",
        "file%3A%2F%2F%2Fetc%2Fpasswd",
    ):
        await _refused(session, name, source, run_id=run_id)


async def test_backslashes_are_refused(session: AsyncSession) -> None:
    # CVE-2023-2780 / CVE-2023-6977: '\..\' passed checks that only split on '/'.
    name = await make_model(session)
    run_id = await make_run(session)
    root = await _run_root(session, run_id)
    for source in (
        f"runs:/{run_id}/..\\..\\secret",
        f"{root}\\..\\..\\etc",
        f"{root}/model\\..\\..",
        "C:\\Windows\\win.ini",
    ):
        await _refused(session, name, source, run_id=run_id)


async def test_queries_fragments_and_params_used_to_smuggle_paths_are_refused(
    session: AsyncSession,
) -> None:
    # CVE-2023-6909 / CVE-2024-1483 / CVE-2024-1594: '?', '#' and ';' hid a path from the check.
    name = await make_model(session)
    run_id = await make_run(session)
    root = await _run_root(session, run_id)
    for source in (
        f"{root}/model?/../../../../etc",
        f"{root}/model#/../../../../etc",
        f"runs:/{run_id}/model#../../x",
        f"runs:/{run_id}/model?x=1",
        f"{root}/model;/../../../etc",
        f"file:///etc/passwd#{root}",
        f"file:///etc/passwd?{root}",
    ):
        await _refused(session, name, source, run_id=run_id)


async def test_host_bearing_uris_are_refused(session: AsyncSession) -> None:
    # mlflow-artifacts://host/… makes the client fetch from a server of the attacker's choice.
    name = await make_model(session)
    run_id = await make_run(session)
    root = await _run_root(session, run_id)
    path = root.removeprefix("mlflow-artifacts:/")
    model_id = await make_logged_model(session, run_id)
    for source, kw in (
        (f"mlflow-artifacts://evil.example/{path}/model", {"run_id": run_id}),
        (f"runs://evil.example/{run_id}/model", {"run_id": run_id}),
        (f"models://evil.example/{model_id}", {"model_id": model_id}),
    ):
        await _refused(session, name, source, **kw)


async def test_proxied_paths_outside_the_runs_or_models_root_are_refused(
    session: AsyncSession,
) -> None:
    # A source naming another run's files (or the whole experiment) would let one version
    # serve bytes its run never produced.
    name = await make_model(session)
    run_id, other = await make_run(session), await make_run(session)
    root, other_root = await _run_root(session, run_id), await _run_root(session, other)
    experiment_root = root.rsplit("/", 2)[0]
    await _refused(session, name, f"{other_root}/model", run_id=run_id)
    await _refused(session, name, experiment_root, run_id=run_id)
    await _refused(session, name, f"{root}x/model", run_id=run_id)  # prefix, not a parent
    await _refused(session, name, "mlflow-artifacts:/", run_id=run_id)
    # Without a run or logged model there is no root to be inside of.
    await _refused(session, name, f"{root}/model")
    model_id = await make_logged_model(session, other)
    await _refused(session, name, f"{root}/model", model_id=model_id)


async def test_sources_must_agree_with_run_id_and_model_id(session: AsyncSession) -> None:
    name = await make_model(session)
    run_id, other = await make_run(session), await make_run(session)
    model_id = await make_logged_model(session, run_id)
    other_model = await make_logged_model(session, other)
    await _refused(session, name, f"runs:/{run_id}/model", run_id=other)
    await _refused(session, name, f"models:/{model_id}", model_id=other_model)
    await _refused(session, name, f"models:/{model_id}", run_id=other)
    await _refused(session, name, f"runs:/{'0' * 32}/model")  # no such run
    await _refused(session, name, f"models:/m-{'0' * 32}")  # no such logged model
    await _refused(session, name, "runs:/not-a-run-id/model")


async def test_registered_version_sources_share_the_source_versions_files_only(
    session: AsyncSession,
) -> None:
    # A models:/<name>/<v> source (copy_model_version) never names a location of its own: the
    # copy gets exactly the source version's stored files, and its lineage cannot be re-pointed.
    name = await make_model(session)
    run_id, other = await make_run(session), await make_run(session)
    await make_version(session, name, run_id=run_id)
    target = await make_model(session)
    copy = await _accepted(session, target, f"models:/{name}/1")
    assert copy.source == f"models:/{name}/1"  # type: ignore[attr-defined]
    assert copy.run_id == run_id  # type: ignore[attr-defined]
    assert await service.get_download_uri(session, target, "1") == await service.get_download_uri(
        session, name, "1"
    )
    await _refused(session, target, f"models:/{name}/1", run_id=other)  # lineage must match
    await _refused(session, target, f"models:/{name}@champion")  # no such alias (400)
    for source in (f"models:/{name}/1/../2", f"models:/{name}/%31", f"models://host/{name}/1"):
        await _refused(session, target, source)
    with pytest.raises(MlflowError) as err:  # no such version / model: 404, as MLflow answers
        async with session.begin_nested():
            await _accepted(session, target, f"models:/{name}/7")
    assert err.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    assert (await service.get_model_version(session, target, "1")).version == "1"


async def test_control_characters_and_padding_are_refused(session: AsyncSession) -> None:
    # NUL truncates paths in C code; CR/LF split headers; padding makes two spellings of one path.
    name = await make_model(session)
    run_id = await make_run(session)
    for source in (
        f"runs:/{run_id}/model\x00.txt",
        f"runs:/{run_id}/mo\ndel",
        f" runs:/{run_id}/model",
        f"runs:/{run_id}/model ",
        "x" * 3000,
    ):
        with pytest.raises(InvalidParameter):
            async with session.begin_nested():
                await service.create_model_version(
                    session, CreateModelVersion(name=name, source=source), actor=ACTOR
                )


async def test_refusals_do_not_consume_version_numbers_and_canonical_form_is_stored(
    session: AsyncSession,
) -> None:
    name = await make_model(session)
    run_id = await make_run(session)
    root = await _run_root(session, run_id)
    await _refused(session, name, "file:///etc/passwd")
    first = await _accepted(session, name, f"RUNS:/{run_id}/model/", run_id=run_id)
    assert first.version == "1"  # type: ignore[attr-defined]
    assert first.source == f"runs:/{run_id}/model"  # type: ignore[attr-defined]
    triple = root.replace("mlflow-artifacts:/", "mlflow-artifacts:///")
    second = await _accepted(session, name, f"{triple}/model", run_id=run_id)
    assert second.source == f"{root}/model"  # type: ignore[attr-defined]
    assert await service.get_download_uri(session, name, "2") == f"{root}/model"


def test_the_http_api_answers_400_invalid_parameter_value(live_server: object, unique: str) -> None:
    base = live_server.api  # type: ignore[attr-defined]
    httpx.post(base("registered-models/create"), json={"name": f"sec-{unique}"}).raise_for_status()
    for source in ("file:///etc/passwd", "runs:/x/../../etc", "s3://bucket/x", "/etc/passwd"):
        r = httpx.post(
            base("model-versions/create"), json={"name": f"sec-{unique}", "source": source}
        )
        assert r.status_code == 400, source
        assert r.json()["error_code"] == "INVALID_PARAMETER_VALUE"
