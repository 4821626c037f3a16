"""Resolving a model is one prebuilt statement on the driver per request, with no ORM session,
and answers exactly what the session-based service answers (errors included)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

from gates.server.hooks import registry_hooks
from registry import events, service
from tests.hot_app import HotApp, hot_app, migrated_database
from tests.registry.factories import ACTOR, make_model, make_run, make_version
from tracking.core.db import Database
from tracking.core.errors import MlflowError
from tracking.core.wire import ok

API = "/api/2.0/mlflow"


@pytest.fixture(scope="module")
async def resolve_world(make_database: Any) -> tuple[str, str]:
    """A database with a model of four versions (v4 Production and @champion, @backup; v3
    Staging) and an empty model; returns its URL and the model's name."""
    url = await migrated_database(make_database, "resolve")
    db = Database(url, session_info=events.session_info(registry_hooks(auth=False)))
    try:
        async with db.write() as s:
            name = await make_model(s, tags={"team": "fraud"})
            run_id = await make_run(s)
            for number in range(4):
                await make_version(s, name, run_id=run_id, tags={"n": str(number)})
            await service.transition_stage(s, name, "4", "Production", actor=ACTOR)
            await service.transition_stage(s, name, "3", "Staging", actor=ACTOR)
            await service.set_alias(s, name, "champion", "4", actor=ACTOR)
            await service.set_alias(s, name, "backup", "4", actor=ACTOR)
            await make_model(s, f"{name}-empty")
    finally:
        await db.dispose()
    return url, name


def _json(value: Any) -> Any:
    return msgspec.json.decode(msgspec.json.encode(value))


async def _session_answer(app: HotApp, call: Any) -> Any:
    async with app.db.read() as s:
        return _json(await call(s))


async def test_resolve_requests_are_prebuilt_statements_without_a_session(
    resolve_world: tuple[str, str],
    tmp_path: Path,
) -> None:
    url, name = resolve_world
    async with hot_app(url, tmp_path) as app:
        cases = [
            ("GET", "model-versions/get-download-uri", {"name": name, "version": "4"}, 1),
            (
                "POST",
                "registered-models/get-latest-versions",
                {"name": name, "stages": ["Production"]},
                1,
            ),
            (
                "GET",
                "registered-models/get-latest-versions",
                {"name": name, "stages": "Staging"},
                1,
            ),
            ("GET", "registered-models/alias", {"name": name, "alias": "champion"}, 1),
            ("GET", "registered-models/alias", {"name": name, "alias": "latest"}, 1),
            ("GET", "model-versions/get", {"name": name, "version": "4"}, 1),
        ]
        for method, path, args, statements in cases:
            kw = {"json": args} if method == "POST" else {"params": args}
            with app.count() as counted:
                response = await app.client.request(method, f"{API}/{path}", **kw)
            assert response.status_code == 200, (path, response.text)
            assert counted.sessions == 0, path
            assert len(counted.statements) == statements, (path, counted.statements)


async def test_resolve_answers_match_the_session_service(
    resolve_world: tuple[str, str], tmp_path: Path
) -> None:
    url, name = resolve_world
    async with hot_app(url, tmp_path) as app:
        get = app.client.get
        uri = (
            await get(
                f"{API}/model-versions/get-download-uri", params={"name": name, "version": "2"}
            )
        ).json()
        assert uri == {
            "artifact_uri": await _session_answer(
                app, lambda s: service.get_download_uri(s, name, "2")
            )
        }
        latest = await app.client.post(
            f"{API}/registered-models/get-latest-versions", json={"name": name}
        )
        expected = await _session_answer(app, lambda s: service.get_latest_versions(s, name, None))
        assert latest.json() == {"model_versions": expected}
        assert [v["version"] for v in expected] == ["2", "3", "4"]  # None, Staging, Production
        assert expected[2]["aliases"] == ["backup", "champion"]
        assert expected[2]["tags"] == [{"key": "n", "value": "3"}]
        alias = (
            await get(f"{API}/registered-models/alias", params={"name": name, "alias": "backup"})
        ).json()
        assert alias == {
            "model_version": await _session_answer(
                app, lambda s: service.get_version_by_alias(s, name, "backup")
            )
        }
        version = (
            await get(f"{API}/model-versions/get", params={"name": name, "version": "1"})
        ).json()
        assert version == {
            "model_version": await _session_answer(
                app, lambda s: service.get_model_version(s, name, "1")
            )
        }


_SERVICE = {
    "model-versions/get-download-uri": lambda s, a: service.get_download_uri(
        s, a.get("name"), a.get("version")
    ),
    "model-versions/get": lambda s, a: service.get_model_version(
        s, a.get("name"), a.get("version")
    ),
    "registered-models/alias": lambda s, a: service.get_version_by_alias(
        s, a.get("name"), a.get("alias")
    ),
    "registered-models/get-latest-versions": lambda s, a: service.get_latest_versions(
        s, a.get("name"), a.get("stages")
    ),
}


@pytest.mark.parametrize(
    ("method", "path", "args"),
    [
        ("GET", "model-versions/get-download-uri", {"name": "nope-x", "version": "1"}),
        ("GET", "model-versions/get-download-uri", {"name": "{model}", "version": "9"}),
        ("GET", "model-versions/get-download-uri", {"name": "{model}", "version": "x"}),
        ("GET", "model-versions/get-download-uri", {"name": "nope-x", "version": "x"}),
        ("GET", "model-versions/get", {"name": "{model}", "version": "9"}),
        ("GET", "model-versions/get", {"name": "nope-x", "version": "x"}),
        ("GET", "registered-models/alias", {"name": "{model}", "alias": "nobody"}),
        ("GET", "registered-models/alias", {"name": "nope-x", "alias": "champion"}),
        ("GET", "registered-models/alias", {"name": "{model}-empty", "alias": "latest"}),
        ("GET", "registered-models/alias", {"name": "{model}", "alias": "bad alias"}),
        ("POST", "registered-models/get-latest-versions", {"name": "nope-x"}),
        ("POST", "registered-models/get-latest-versions", {"name": "{model}", "stages": ["Bogus"]}),
        ("POST", "registered-models/get-latest-versions", {"name": "nope-x", "stages": ["Bogus"]}),
    ],
)
async def test_resolve_errors_are_the_full_paths_errors(
    resolve_world: tuple[str, str], tmp_path: Path, method: str, path: str, args: dict[str, Any]
) -> None:
    url, name = resolve_world
    async with hot_app(url, tmp_path) as app:
        filled = {
            k: v.replace("{model}", name) if isinstance(v, str) else v for k, v in args.items()
        }
        kw = {"json": filled} if method == "POST" else {"params": filled}
        response = await app.client.request(method, f"{API}/{path}", **kw)
        with pytest.raises(MlflowError) as raised:
            async with app.db.read() as s:
                await _SERVICE[path](s, filled)
        expected = raised.value
        assert response.status_code == expected.status_code, response.text
        assert response.json() == {"error_code": expected.error_code, "message": expected.message}


async def test_an_empty_stage_of_an_existing_model_answers_an_empty_list(
    resolve_world: tuple[str, str],
    tmp_path: Path,
) -> None:
    url, name = resolve_world
    async with hot_app(url, tmp_path) as app:
        for model in (name, f"{name}-empty"):
            body = {"name": model, "stages": ["Archived"]}
            response = await app.client.post(
                f"{API}/registered-models/get-latest-versions", json=body
            )
            assert response.status_code == 200
            assert response.json() == {"model_versions": []}


async def test_pool_connections_are_returned_after_hot_reads(
    resolve_world: tuple[str, str], tmp_path: Path
) -> None:
    url, name = resolve_world
    async with hot_app(url, tmp_path) as app:
        for _ in range(30):
            await app.client.get(
                f"{API}/model-versions/get-download-uri", params={"name": name, "version": "1"}
            )
            await app.client.get(
                f"{API}/model-versions/get-download-uri", params={"name": "nope-x", "version": "1"}
            )
        assert app.db.read_engine.pool.checkedout() == 0  # type: ignore[attr-defined]


# What ``mlflow.pyfunc.load_model("models:/<name>/<stage>")`` sends with MLflow 3.17's client:
# ``get_latest_versions`` tries the proto's endpoints in order, POST first (GET only when the
# server answers ENDPOINT_NOT_FOUND), its JSON body indented by ``message_to_json``; then
# ``get-download-uri`` as GET query parameters.
MLFLOW_CLIENT_LATEST_BODY = b'{\n  "name": "%s",\n  "stages": [\n    "Production"\n  ]\n}'


@pytest.mark.parametrize(
    ("method", "path", "args"),
    [
        ("POST", "registered-models/get-latest-versions", None),  # the MLflow client's bytes
        ("POST", "registered-models/get-latest-versions", {"name": "{model}"}),
        ("POST", "registered-models/get-latest-versions", {"name": "{model}", "stages": []}),
        (
            "POST",
            "registered-models/get-latest-versions",
            {"name": "{model}", "stages": ["production", "STAGING", "Production"]},
        ),
        (
            "GET",
            "registered-models/get-latest-versions",
            [("name", "{model}"), ("stages", "Production"), ("stages", "None")],
        ),
        ("GET", "registered-models/get-latest-versions", [("name", "{model}")]),
        ("GET", "registered-models/alias", [("name", "{model}"), ("alias", "champion")]),
        ("GET", "model-versions/get", [("name", "{model}"), ("version", "3")]),
    ],
)
async def test_every_resolve_shape_is_one_statement_with_the_session_paths_bytes(
    resolve_world: tuple[str, str],
    tmp_path: Path,
    method: str,
    path: str,
    args: Any,
) -> None:
    url, name = resolve_world
    async with hot_app(url, tmp_path) as app:
        if args is None:
            raw = MLFLOW_CLIENT_LATEST_BODY % name.encode()
            filled: dict[str, Any] = msgspec.json.decode(raw)
            kw: dict[str, Any] = {
                "content": raw,
                "headers": {"Content-Type": "application/json"},
            }
        elif method == "POST":
            filled = {
                k: v.replace("{model}", name) if isinstance(v, str) else v for k, v in args.items()
            }
            kw = {"json": filled}
        else:
            pairs = [(k, v.replace("{model}", name)) for k, v in args]
            filled = {}
            for k, v in pairs:
                if k == "stages":
                    filled.setdefault(k, []).append(v)
                else:
                    filled[k] = v
            kw = {"params": pairs}
        with app.count() as counted:
            response = await app.client.request(method, f"{API}/{path}", **kw)
        assert response.status_code == 200, response.text
        assert counted.sessions == 0
        assert len(counted.statements) == 1, counted.statements
        async with app.db.read() as s:
            expected = await _SERVICE[path](s, filled)
        key = "model_versions" if path.endswith("get-latest-versions") else "model_version"
        assert response.content == ok({key: expected}).content
        if key == "model_versions":
            assert expected  # a found answer: the driver path answered it


async def test_tags_and_aliases_come_in_key_order_on_both_paths(
    resolve_world: tuple[str, str], tmp_path: Path
) -> None:
    url, _ = resolve_world
    async with hot_app(url, tmp_path) as app:
        async with app.db.write() as s:
            name = await make_model(s)
            # Written out of key order: the answer lists them by key, whatever the plan.
            odd = 'a "quoted" \\ value\nwith ü, 🎉 and ["json"]'
            await make_version(s, name, tags={"zeta": "1", "alpha": odd, "mid": "3"})
            await make_version(s, name)  # no tags, no aliases
            await service.transition_stage(s, name, "1", "Production", actor=ACTOR)
            await service.transition_stage(s, name, "2", "Staging", actor=ACTOR)
            for alias in ("zz", "aa", "mm"):
                await service.set_alias(s, name, alias, "1", actor=ACTOR)
        response = await app.client.post(
            f"{API}/registered-models/get-latest-versions", json={"name": name}
        )
        async with app.db.read() as s:
            expected = await service.get_latest_versions(s, name, None)
        assert response.content == ok({"model_versions": expected}).content
        production, staging = response.json()["model_versions"]
        assert "tags" not in staging and "aliases" not in staging  # empty lists are left out
        assert [t["key"] for t in production["tags"]] == ["alpha", "mid", "zeta"]
        assert production["tags"][0]["value"] == odd
        assert production["aliases"] == ["aa", "mm", "zz"]
