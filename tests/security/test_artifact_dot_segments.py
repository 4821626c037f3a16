"""'.' segments on the artifact routes: dropped once, as mlflow server reads them, never a way out.

``download_artifacts(artifact_path=".")`` lists ``<run root>/.``; the artifact routes accept it
by dropping '.' segments in the one parse, so every later check (reserved and frozen areas,
grants, the store's own root) sees only the canonical path. '..' stays refused everywhere.
"""

from __future__ import annotations

import http.client
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from registry.artifacts.paths import in_frozen_area, parse_artifact_path
from tests.conftest import LiveServer
from tracking.core.errors import InvalidParameter

ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts"

CANONICAL = {
    ".": (),
    "./": (),
    "./a": ("a",),
    "a/.": ("a",),
    "a/./b/.": ("a", "b"),
    "./././a/": ("a",),
    "./mlgate-frozen/x": ("mlgate-frozen", "x"),
}

STILL_REFUSED = [
    "..",
    "./..",
    "a/./../..",
    "./../etc/passwd",
    "a/.//b",  # empty segments stay refused
    "/./a",  # absolute
    "./%2e%2e/x",  # a second encoding layer
    ".\\..\\x",
    "./C:/x",
]


@pytest.mark.parametrize(("raw", "parts"), list(CANONICAL.items()), ids=repr)
def test_dot_segments_are_dropped_on_artifact_routes(raw: str, parts: tuple[str, ...]) -> None:
    path = parse_artifact_path(raw, allow_root=True, dot_segments=True)
    assert path.parts == parts
    # Elsewhere (model version sources) '.' is still refused outright.
    if parts and raw not in (".", "./"):
        with pytest.raises(InvalidParameter):
            parse_artifact_path(raw)


def test_checks_see_the_canonical_path() -> None:
    assert in_frozen_area(parse_artifact_path("./mlgate-frozen/x", dot_segments=True))
    assert parse_artifact_path("./_mlgate/k", dot_segments=True).is_reserved
    with pytest.raises(InvalidParameter):  # only the root remains: not a file
        parse_artifact_path("./.", dot_segments=True)


@pytest.mark.parametrize("raw", STILL_REFUSED, ids=repr)
def test_dot_segments_never_open_a_way_out(raw: str) -> None:
    with pytest.raises(InvalidParameter):
        parse_artifact_path(raw, allow_root=True, dot_segments=True)


def _raw(base_url: str, method: str, target: str, body: bytes = b"") -> tuple[int, bytes]:
    """Send ``target`` byte for byte (HTTP clients would collapse the '.' segments first)."""
    parts = urlsplit(base_url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.request(method, target, body=body or None)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_dot_segment_writes_land_on_the_canonical_path_and_respect_guarded_areas(
    live_server: LiveServer,
) -> None:
    status, _ = _raw(live_server.url, "PUT", f"{ARTIFACTS}/0/./dots/./a.txt", b"canonical")
    assert status == 200
    stored = live_server.artifacts / "0" / "dots" / "a.txt"
    assert stored.read_bytes() == b"canonical"
    status, body = _raw(live_server.url, "GET", f"{ARTIFACTS}/./0/dots/a.txt")
    assert (status, body) == (200, b"canonical")
    for guarded in ("./mlgate-frozen/sha256/x", "./_mlgate/audit/x", "MLGATE-FROZEN/./x"):
        status, body = _raw(live_server.url, "PUT", f"{ARTIFACTS}/{guarded}", b"pwned")
        assert status == 403, (guarded, body)
    for whole_store in (f"{ARTIFACTS}/./", f"{ARTIFACTS}/./."):
        status, _ = _raw(live_server.url, "DELETE", whole_store)
        assert 400 <= status < 500
    assert stored.read_bytes() == b"canonical"
    for escape in ("./../x", "0/./../../x", "./%2e%2e/x"):
        status, _ = _raw(live_server.url, "PUT", f"{ARTIFACTS}/{escape}", b"pwned")
        assert status == 400, escape
        status, _ = _raw(live_server.url, "GET", f"{ARTIFACTS}?path={escape}")
        assert status == 400, escape
    assert not (Path(live_server.artifacts).parent / "x").exists()
