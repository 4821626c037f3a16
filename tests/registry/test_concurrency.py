"""Pointer invariants under concurrency, against the live server process (both databases).

Requests are fired at once from one event loop over many connections; the server process
handles them concurrently (PostgreSQL: a pool of connections and row locks; SQLite: one
serialised writer).
"""

from __future__ import annotations

import asyncio
import itertools
import random
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.slow


class Api:
    def __init__(self, server: Any, client: httpx.AsyncClient) -> None:
        self.base = f"{server.url}/api/2.0/mlflow"
        self.mlgate = f"{server.url}/api/2.0/mlgate"
        self.client = client

    async def call(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        r = await self.client.request(method, f"{self.base}/{path}", **kw)
        assert r.status_code == 200, (path, r.status_code, r.text)
        return dict(r.json())

    async def history(self, name: str, pointer: str) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        token = None
        while True:
            params = {"name": name, "pointer": pointer, "max_results": 1000}
            if token:
                params["page_token"] = token
            r = await self.client.get(f"{self.mlgate}/registered-models/history", params=params)
            assert r.status_code == 200, r.text
            body = r.json()
            events += body["events"]
            token = body.get("next_page_token")
            if not token:
                return events[::-1]  # oldest first


async def _model_with_versions(api: Api, name: str, count: int) -> None:
    await api.call("POST", "registered-models/create", json={"name": name})
    exp = await api.call("POST", "experiments/create", json={"name": f"{name}-exp"})
    run = await api.call("POST", "runs/create", json={"experiment_id": exp["experiment_id"]})
    run_id = run["run"]["info"]["run_id"]
    for _ in range(count):
        await api.call(
            "POST",
            "model-versions/create",
            json={"name": name, "source": f"runs:/{run_id}/model", "run_id": run_id},
        )


def _client() -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
    return httpx.AsyncClient(limits=limits, timeout=120)


def _assert_chain(events: list[dict[str, Any]]) -> None:
    """Each move starts where the previous one ended: no move was lost or interleaved."""
    for previous, current in itertools.pairwise(events):
        assert current.get("from_version") == previous.get("to_version"), (previous, current)


async def test_100_concurrent_version_creates_number_exactly_1_to_100(
    live_server: Any, unique: str
) -> None:
    name = f"conc-create-{unique}"
    async with _client() as client:
        api = Api(live_server, client)
        await _model_with_versions(api, name, 0)
        exp = await api.call("POST", "experiments/create", json={"name": f"{name}-runs"})
        run = await api.call("POST", "runs/create", json={"experiment_id": exp["experiment_id"]})
        run_id = run["run"]["info"]["run_id"]

        async def create() -> str:
            body = await api.call(
                "POST",
                "model-versions/create",
                json={"name": name, "source": f"runs:/{run_id}/model", "run_id": run_id},
            )
            return str(body["model_version"]["version"])

        versions = await asyncio.gather(*(create() for _ in range(100)))
        assert sorted(int(v) for v in versions) == list(range(1, 101))
        found = await api.call(
            "GET", "model-versions/search", params={"filter": f"name = '{name}'"}
        )
        assert sorted(int(v["version"]) for v in found["model_versions"]) == list(range(1, 101))


async def test_50_concurrent_transitions_with_archive_leave_one_production_version(
    live_server: Any, unique: str
) -> None:
    name = f"conc-stage-{unique}"
    async with _client() as client:
        api = Api(live_server, client)
        await _model_with_versions(api, name, 50)
        await api.call(
            "POST",
            "model-versions/transition-stage",
            json={"name": name, "version": "1", "stage": "Production"},
        )
        done = asyncio.Event()
        observations = {"latest": 0, "search": 0}

        async def reader() -> None:
            # Between any two commits the model has exactly one Production version; a reader
            # must never catch the moment in between (zero) or a half-archived state (two).
            while not done.is_set():
                latest = await api.call(
                    "POST",
                    "registered-models/get-latest-versions",
                    json={"name": name, "stages": ["Production"]},
                )
                production = [
                    v for v in latest["model_versions"] if v["current_stage"] == "Production"
                ]
                assert len(production) == 1, latest
                observations["latest"] += 1
                found = await api.call(
                    "GET",
                    "model-versions/search",
                    params={"filter": f"name = '{name}'", "max_results": 1000},
                )
                staged = [v for v in found["model_versions"] if v["current_stage"] == "Production"]
                assert len(staged) == 1, [v["version"] for v in staged]
                observations["search"] += 1

        async def transition(version: int) -> None:
            await api.call(
                "POST",
                "model-versions/transition-stage",
                json={
                    "name": name,
                    "version": str(version),
                    "stage": "production",
                    "archive_existing_versions": True,
                },
            )

        readers = [asyncio.create_task(reader()) for _ in range(3)]
        order = list(range(1, 51))
        random.shuffle(order)
        try:
            await asyncio.gather(*(transition(v) for v in order))
        finally:
            done.set()
            await asyncio.gather(*readers)
        assert observations["latest"] > 0 and observations["search"] > 0

        found = await api.call(
            "GET", "model-versions/search", params={"filter": f"name = '{name}'"}
        )
        stages = [v["current_stage"] for v in found["model_versions"]]
        assert stages.count("Production") == 1
        assert stages.count("Archived") == 49
        events = await api.history(name, "Production")
        assert len(events) == 51
        _assert_chain(events)
        winner = next(
            v["version"] for v in found["model_versions"] if v["current_stage"] == "Production"
        )
        assert events[-1]["to_version"] == winner


async def test_concurrent_alias_moves_leave_one_target_and_a_consistent_history(
    live_server: Any, unique: str
) -> None:
    name = f"conc-alias-{unique}"
    async with _client() as client:
        api = Api(live_server, client)
        await _model_with_versions(api, name, 10)
        await api.call(
            "POST",
            "registered-models/alias",
            json={"name": name, "alias": "champion", "version": "1"},
        )
        done = asyncio.Event()

        async def reader() -> None:
            while not done.is_set():
                got = await api.call(
                    "GET", "registered-models/alias", params={"name": name, "alias": "champion"}
                )
                assert 1 <= int(got["model_version"]["version"]) <= 10

        async def move(version: int) -> None:
            await api.call(
                "POST",
                "registered-models/alias",
                json={"name": name, "alias": "champion", "version": str(version)},
            )

        readers = [asyncio.create_task(reader()) for _ in range(2)]
        try:
            await asyncio.gather(*(move(random.randint(1, 10)) for _ in range(50)))
        finally:
            done.set()
            await asyncio.gather(*readers)

        model = await api.call("GET", "registered-models/get", params={"name": name})
        aliases = model["registered_model"]["aliases"]
        assert len(aliases) == 1 and aliases[0]["alias"] == "champion"
        target = aliases[0]["version"]
        holders = [
            v["version"]
            for v in (
                await api.call(
                    "GET", "model-versions/search", params={"filter": f"name = '{name}'"}
                )
            )["model_versions"]
            if "champion" in v.get("aliases", [])
        ]
        assert holders == [target]
        events = await api.history(name, "@champion")
        assert len(events) == 51
        _assert_chain(events)
        assert events[-1]["to_version"] == target
