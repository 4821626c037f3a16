"""Fixtures of the security tests: one live server with authentication on, and its world."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from gates.server import migrate
from tests.conftest import LiveServer, stop_server
from tests.security.auth_world import (
    GatesWorld,
    World,
    build_gates_world,
    build_world,
    start_auth_server,
)


@pytest.fixture(scope="session")
def auth_server(make_database, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:  # type: ignore[no-untyped-def]
    """A live server with MLGATE_AUTH=true on its own database (the first admin from settings)."""
    url = make_database("auth")
    migrate.upgrade(url)
    server = start_auth_server(url, tmp_path_factory.mktemp("auth-server"))
    yield server
    stop_server(server)
    text = server.log.read_text(errors="replace")
    if "Traceback" in text:
        print(text[-5000:], file=sys.stderr)


@pytest.fixture(scope="session")
def world(auth_server: LiveServer) -> Iterator[World]:
    built = build_world(auth_server)
    yield built
    built.close()


@pytest.fixture(scope="session")
def gates_world(world: World) -> GatesWorld:
    return build_gates_world(world)
