"""Attacks on the resolve endpoint's ``models:/`` URI: only the four registry forms are accepted.

Each attack class is tried against the parser (``registry.uris``) and over real HTTP, where the
query string is sent already encoded (httpx keeps it verbatim) so the server decodes it once.
"""

from __future__ import annotations

from urllib.parse import quote

import httpx
import pytest

from registry.uris import ModelVersionUri, parse_model_uri
from tests.conftest import LiveServer
from tracking.core.errors import InvalidParameter

RESOLVE = "/api/2.0/mlgate/models/resolve"

ACCEPTED = {
    "models:/fraud/3": ModelVersionUri("fraud", version=3),
    "models:/fraud/Production": ModelVersionUri("fraud", stage="Production"),
    "models:/fraud/staging": ModelVersionUri("fraud", stage="Staging"),
    "models:/fraud/ARCHIVED": ModelVersionUri("fraud", stage="Archived"),
    "models:/fraud/None": ModelVersionUri("fraud", stage="None"),
    "models:/fraud/latest": ModelVersionUri("fraud"),
    "models:/fraud/Latest": ModelVersionUri("fraud"),
    "models:/fraud@champion": ModelVersionUri("fraud", alias="champion"),
    "models:/my model v2/1": ModelVersionUri("my model v2", version=1),
    "models:/a@b/1": ModelVersionUri("a@b", version=1),  # as MLflow: a suffix wins over '@'
    "models:/a@b@c": ModelVersionUri("a@b", alias="c"),
}

REFUSED = {
    "traversal": [
        "models:/../x",
        "models:/../1",
        "models:/./1",
        "models:/a..b/1",
        "models:/..@champion",
    ],
    "other schemes": [
        "file:///etc/passwd",
        "file:/etc/passwd",
        "runs:/0123456789abcdef0123456789abcdef/model",
        "mlflow-artifacts:/0/abc/artifacts/model",
        "s3://bucket/model",
        "http://169.254.169.254/latest/meta-data",
        "MODELS:/fraud/1",
        "/etc/passwd",
        "fraud/1",
    ],
    "extra segments": [
        "models:/a/b/c",
        "models:/a/1/",
        "models:/a/",
        "models:/a//1",
        "models://host/a/1",
        "models:///a/1",
    ],
    "percent-encoding": [
        "models:/%2e%2e/1",
        "models:/a%2F..%2Fb/1",
        "models:/%252e%252e/1",
        "models:/fraud/%31",
        "models:/fraud@champ%69on",
    ],
    "smuggling characters": [
        "models:/fraud/1?x=../../etc/passwd",
        "models:/fraud/1#../../x",
        "models:/fraud;../1",
        "models:/..\\..\\x/1",
        "models:/fraud/1\n",
        "models:/fra\x00ud/1",
        " models:/fraud/1",
    ],
    "not a version": [
        "models:/fraud",
        "models:/m-0123456789abcdef0123456789abcdef",
        "models:/fraud/Prod",
        "models:/fraud/-1",
        "models:/fraud/1.0",
        "models:/fraud/\u0661",  # an Arabic-Indic digit: str.isdigit() is not enough
        "models:/fraud/12345678901",
        "models:/fraud@",
        "models:/@champion",
        "models:/fraud@bad alias",
        "models:/",
        "",
        "models:/" + "a" * 700 + "/1",
    ],
}
ALL_REFUSED = [(kind, uri) for kind, uris in REFUSED.items() for uri in uris]


@pytest.mark.parametrize(("raw", "expected"), ACCEPTED.items())
def test_registry_uri_forms_are_parsed(raw: str, expected: ModelVersionUri) -> None:
    assert parse_model_uri(raw) == expected


@pytest.mark.parametrize(("kind", "raw"), ALL_REFUSED)
def test_everything_else_is_refused_by_the_parser(kind: str, raw: str) -> None:
    with pytest.raises(InvalidParameter):
        parse_model_uri(raw)


@pytest.mark.parametrize(("kind", "raw"), ALL_REFUSED)
def test_resolve_endpoint_refuses_junk_uris(live_server: LiveServer, kind: str, raw: str) -> None:
    # Encoded as a well-behaved client would ('%' too), so the server sees exactly ``raw``.
    r = httpx.get(f"{live_server.url}{RESOLVE}?uri={quote(raw, safe='/:@')}")
    assert r.status_code == 400, (raw, r.text)
    assert r.json()["error_code"] == "INVALID_PARAMETER_VALUE"


@pytest.mark.parametrize(
    "query",
    [
        "uri=models:/%252e%252e/1",  # double-encoded '..': decoded once, '%' remains
        "uri=models:/a%252F..%252Fb/1",  # double-encoded '/'
        "uri=models:/a%2F..%2Fb/1",  # encoded '/': decoded once, then an extra segment
        "uri=models%3A%2F%2E%2E%2F1",  # everything encoded once: 'models:/../1'
        "uri=models:/fraud/1%3Fx%3D1",  # an encoded query
        "uri=models:/fraud/1%00",  # an encoded NUL
    ],
)
def test_resolve_endpoint_decodes_the_query_exactly_once(
    live_server: LiveServer, query: str
) -> None:
    r = httpx.get(f"{live_server.url}{RESOLVE}?{query}")
    assert r.status_code == 400, (query, r.text)
    assert r.json()["error_code"] == "INVALID_PARAMETER_VALUE"


def test_resolve_endpoint_requires_a_uri(live_server: LiveServer) -> None:
    r = httpx.get(f"{live_server.url}{RESOLVE}")
    assert r.status_code == 400
    assert r.json()["error_code"] == "INVALID_PARAMETER_VALUE"
