"""Path-traversal and local-file-inclusion attacks on the artifact proxy, one per MLflow CVE class.

Each class is attacked twice: against the canonicaliser (``registry.artifacts.paths``) and over
real HTTP against a live server, with a canary file just outside the artifact root that must
never be read, overwritten or deleted. Encoded attacks go through httpx with already-encoded
URLs (httpx keeps them verbatim); literal ``..`` and ``\\`` go through a raw socket, because
every HTTP client normalises those away before sending.
"""

from __future__ import annotations

import socket
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from registry.artifacts.paths import (
    ArtifactPath,
    client_file_name,
    decode_request_path,
    parse_artifact_path,
    parse_artifact_uri,
)
from tests.conftest import LiveServer
from tracking.core.errors import InvalidParameter

ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts"
CANARY = b"canary: this file sits outside the artifact root"

# --- the canonicaliser -----------------------------------------------------------------------

ACCEPTED = {
    "a.txt": ("a.txt",),
    "1/abc/artifacts/model/MLmodel": ("1", "abc", "artifacts", "model", "MLmodel"),
    "dir/": ("dir",),
    "my file (1).txt": ("my file (1).txt",),
    "ünïcødé/データ.bin": ("ünïcødé", "データ.bin"),
    "...": ("...",),
    "a..b/c": ("a..b", "c"),
    "100%.txt": ("100%.txt",),
    "a/b:c.txt": ("a", "b:c.txt"),  # a colon is only a scheme or drive in the first segment
}

REFUSED = {
    # CVE-2023-1177 / CVE-2023-2356 / CVE-2023-6831: '..' segments.
    "dotdot": ["..", "../secret", "a/../../secret", "a/..", "1/r/artifacts/../../../etc/passwd"],
    "dot and empty segments": ["./a", "a/./b", "a//b", "a//", "", "/"],
    # CVE-2023-1176 / CVE-2023-1177: absolute paths.
    "absolute": ["/etc/passwd", "//etc/passwd", "///etc/passwd"],
    # CVE-2023-2780 / CVE-2023-6977: backslash traversal.
    "backslash": ["a\\..\\..\\secret", "..\\secret", "\\etc\\passwd", "a\\b"],
    # NUL truncation and header injection.
    "control characters": ["a\x00.txt", "a\nb", "a\r\nSet-Cookie: x", "a\x7fb", "a\x85b", "\t"],
    # CVE-2024-1560: double decoding ('%252e' -> '%2e' -> '.').
    "percent-encoded": ["%2e%2e/secret", "%2E%2E%2Fsecret", "%252e%252e/secret", "a%2fb", "a%00"],
    # CVE-2023-6909 / CVE-2024-1483 / CVE-2024-1593: '?', '#', ';' smuggling.
    "query, fragment, params": ["a?/../../b", "a#/../../b", "x/..;/y", "a;b", "a?b", "a#b"],
    # Windows drive letters.
    "drive letters": ["C:/Windows/win.ini", "c:\\windows", "C:", "D:relative"],
    # CVE-2023-1177 class: URIs where a relative path is expected.
    "schemes": [
        "file:///etc/passwd",
        "file:/etc/passwd",
        "s3://other-bucket/key",
        "mlflow-artifacts:/0/x",
        "http://evil.example/x",
        "run:1/x",
    ],
    "length": ["a" * 256, "a/" * 600 + "b"],
    "not UTF-8": ["\udcff.txt"],
}


@pytest.mark.parametrize(("raw", "parts"), list(ACCEPTED.items()), ids=repr)
def test_plain_relative_paths_are_canonicalised(raw: str, parts: tuple[str, ...]) -> None:
    path = parse_artifact_path(raw)
    assert path.parts == parts
    assert path.posix == "/".join(parts)
    assert parse_artifact_path(path.posix) == path  # canonical form is a fixed point


@pytest.mark.parametrize(
    "raw", [raw for cases in REFUSED.values() for raw in cases], ids=lambda r: repr(r)[:40]
)
def test_attack_paths_are_refused_by_the_canonicaliser(raw: str) -> None:
    with pytest.raises(InvalidParameter) as err:
        parse_artifact_path(raw)
    assert err.value.status_code == 400
    assert err.value.error_code == "INVALID_PARAMETER_VALUE"


def test_root_is_only_accepted_where_asked_for() -> None:
    assert parse_artifact_path("", allow_root=True).is_root
    with pytest.raises(InvalidParameter):
        parse_artifact_path("")


@pytest.mark.parametrize("parts", [("..",), ("a/b",), ("",), (".",), ("a\\b",), ("x\x00",)])
def test_hand_built_artifact_paths_are_checked_too(parts: tuple[str, ...]) -> None:
    with pytest.raises(InvalidParameter):
        ArtifactPath(parts)


def test_joinpath_and_containment_are_segment_wise() -> None:
    root = parse_artifact_path("1/run/artifacts")
    assert root.joinpath("model/MLmodel").parts[-2:] == ("model", "MLmodel")
    with pytest.raises(InvalidParameter):
        root.joinpath("../../../etc/passwd")
    assert parse_artifact_path("1/run/artifacts/x").is_relative_to(root)
    # A string prefix is not containment: "1/run/artifactsX" is a sibling, not a child.
    assert not parse_artifact_path("1/run/artifactsX").is_relative_to(root)


@pytest.mark.parametrize(
    ("uri", "posix"),
    [
        ("mlflow-artifacts:/1/abc/artifacts", "1/abc/artifacts"),
        ("mlflow-artifacts:///1/abc/artifacts", "1/abc/artifacts"),
        ("mlflow-artifacts:/0", "0"),
    ],
)
def test_artifact_uris_map_to_store_paths(uri: str, posix: str) -> None:
    assert parse_artifact_uri(uri).posix == posix
    assert parse_artifact_uri(parse_artifact_uri(uri).to_uri()).posix == posix


@pytest.mark.parametrize(
    "uri",
    [
        "file:///etc",  # CVE-2023-1177: a local source
        "s3://bucket/key",
        "mlflow-artifacts://evil.example/1/x",  # another host
        "mlflow-artifacts:/1/../../etc",  # CVE-2023-2356
        "mlflow-artifacts:/1/r?/../../etc",  # CVE-2023-6909
        "mlflow-artifacts:/1/r#/../../etc",  # CVE-2024-1483
        "mlflow-artifacts:/1/r/..;/x",  # CVE-2024-1593
        "mlflow-artifacts:/1/%2e%2e/x",  # CVE-2024-1560
        "mlflow-artifacts:/1\\..\\x",  # CVE-2023-2780
    ],
)
def test_hostile_artifact_uris_are_refused(uri: str) -> None:
    with pytest.raises(InvalidParameter):
        parse_artifact_uri(uri)


@pytest.mark.parametrize("raw", [b"a%2fb", b"a%2Fb", b"a%5cb", b"a%5C..%5Cb", b"%ff%fe"])
def test_encoded_separators_and_bad_utf8_are_refused_before_decoding(raw: bytes) -> None:
    with pytest.raises(InvalidParameter):
        decode_request_path(raw)


def test_request_paths_are_decoded_exactly_once() -> None:
    assert decode_request_path(b"a%20b/%C3%BC.txt") == "a b/ü.txt"
    once = decode_request_path(b"%252e%252e")
    assert once == "%2e%2e"  # not '..'
    with pytest.raises(InvalidParameter):
        parse_artifact_path(once)


@pytest.mark.parametrize(
    ("raw", "name"), [("/home/u/model.bin", "model.bin"), ("C:\\u\\m.bin", "m.bin"), ("x", "x")]
)
def test_multipart_file_names_keep_only_the_base_name(raw: str, name: str) -> None:
    assert client_file_name(raw) == name


@pytest.mark.parametrize("raw", ["", "/x/..", "dir/", "a\x00", "%2e%2e"])
def test_bad_multipart_file_names_are_refused(raw: str) -> None:
    with pytest.raises(InvalidParameter):
        client_file_name(raw)


# --- over HTTP, against a live server ----------------------------------------------------------


@pytest.fixture(scope="module")
def canary(live_server: LiveServer) -> Path:
    """A file beside the artifact root, plus a symlink inside the root pointing at its folder."""
    outside = live_server.artifacts.parent
    secret = outside / "secret.txt"
    secret.write_bytes(CANARY)
    live_server.artifacts.mkdir(parents=True, exist_ok=True)
    link = live_server.artifacts / "escape-link"
    if not link.is_symlink():
        link.symlink_to(outside, target_is_directory=True)
    return secret


def raw_http(base_url: str, method: str, target: str, body: bytes = b"") -> tuple[int, bytes]:
    """Send a request line verbatim (no client-side normalisation); return status and body."""
    parts = urlsplit(base_url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    head = (
        f"{method} {target} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    with socket.create_connection((host, port), timeout=30) as sock:
        sock.sendall(head.encode("latin-1") + body)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    status_line, _, rest = received.partition(b"\r\n")
    _, _, payload = rest.partition(b"\r\n\r\n")
    return int(status_line.split()[1]), payload


def assert_refused(status: int, body: bytes, canary: Path) -> None:
    assert 400 <= status < 500, (status, body)
    assert CANARY not in body
    assert canary.read_bytes() == CANARY


# Encoded attacks, sent verbatim by httpx: (suffix after /artifacts/, attack class).
ENCODED_GETS = [
    "%2e%2e/secret.txt",
    "%2E%2E%2Fsecret.txt",
    "..%2fsecret.txt",
    "1/r/artifacts/%2e%2e/%2e%2e/%2e%2e/%2e%2e/secret.txt",
    "%252e%252e/secret.txt",
    "%252e%252e%252fsecret.txt",
    "..%5csecret.txt",
    "%2fetc%2fpasswd",
    "secret.txt%00.png",
    "x%3f/%2e%2e/secret.txt",
    "x%23/%2e%2e/secret.txt",
    "x/..%3b/secret.txt",
    "C:/Windows/win.ini",
    "file:%2f%2f%2fetc%2fpasswd",
    "escape-link/secret.txt",  # symlink escape
]


@pytest.mark.parametrize("suffix", ENCODED_GETS)
def test_encoded_traversal_downloads_are_refused(
    live_server: LiveServer, canary: Path, suffix: str
) -> None:
    url = f"{live_server.url}{ARTIFACTS}/{suffix}"
    assert httpx.URL(url).raw_path.endswith(suffix.encode())  # really sent as written
    r = httpx.get(url)
    assert_refused(r.status_code, r.content, canary)
    assert r.headers["content-type"].startswith("application/json")
    assert r.json()["error_code"] in {"INVALID_PARAMETER_VALUE", "PERMISSION_DENIED"}


@pytest.mark.parametrize(
    "target",
    [
        f"{ARTIFACTS}/../secret.txt",
        f"{ARTIFACTS}/1/r/artifacts/../../../../secret.txt",
        f"{ARTIFACTS}//etc/passwd",
        f"{ARTIFACTS}/..\\secret.txt",
        f"{ARTIFACTS}/a/./../../secret.txt",
        f"{ARTIFACTS}/escape-link/../escape-link/secret.txt",
    ],
)
def test_literal_traversal_downloads_are_refused(
    live_server: LiveServer, canary: Path, target: str
) -> None:
    status, body = raw_http(live_server.url, "GET", target)
    assert_refused(status, body, canary)


@pytest.mark.parametrize(
    "query",
    [
        "path=..",
        "path=%2e%2e",
        "path=%252e%252e",
        "path=/",
        "path=/etc",
        "path=file:///etc",
        "path=..%5c..",
        "path=escape-link",
    ],
)
def test_traversal_listings_are_refused(live_server: LiveServer, canary: Path, query: str) -> None:
    r = httpx.get(f"{live_server.url}{ARTIFACTS}?{query}")
    assert_refused(r.status_code, r.content, canary)
    assert b"secret.txt" not in r.content


def test_root_listing_does_not_show_symlinks_or_staging(
    live_server: LiveServer, canary: Path
) -> None:
    r = httpx.get(f"{live_server.url}{ARTIFACTS}")
    assert r.status_code == 200
    names = {f["path"] for f in r.json().get("files", [])}
    assert "escape-link" not in names
    assert not any(n.startswith(".mlgate") for n in names)


@pytest.mark.parametrize(
    "suffix",
    [
        "%2e%2e/secret.txt",
        "%252e%252e/secret.txt",
        "..%5csecret.txt",
        "escape-link/secret.txt",
        ".mlgate-staging/x",
    ],
)
def test_traversal_uploads_never_write_outside_the_root(
    live_server: LiveServer, canary: Path, suffix: str
) -> None:
    r = httpx.put(f"{live_server.url}{ARTIFACTS}/{suffix}", content=b"pwned")
    assert_refused(r.status_code, r.content, canary)


def test_literal_dotdot_upload_is_refused(live_server: LiveServer, canary: Path) -> None:
    name = f"pwned-{uuid.uuid4().hex}.txt"
    status, body = raw_http(live_server.url, "PUT", f"{ARTIFACTS}/../{name}", b"pwned")
    assert_refused(status, body, canary)
    assert not (live_server.artifacts.parent / name).exists()


@pytest.mark.parametrize(
    "suffix", ["%2e%2e", "..%2f..", "%252e%252e", "escape-link", "escape-link/secret.txt"]
)
def test_traversal_deletes_are_refused(live_server: LiveServer, canary: Path, suffix: str) -> None:
    r = httpx.delete(f"{live_server.url}{ARTIFACTS}/{suffix}")
    assert_refused(r.status_code, r.content, canary)
    assert (live_server.artifacts / "escape-link").is_symlink()


def test_literal_dotdot_delete_is_refused(live_server: LiveServer, canary: Path) -> None:
    status, body = raw_http(live_server.url, "DELETE", f"{ARTIFACTS}/x/../..")
    assert_refused(status, body, canary)
    assert live_server.artifacts.is_dir()


def test_whole_store_delete_is_refused(live_server: LiveServer, canary: Path) -> None:
    for target in (f"{ARTIFACTS}/", f"{ARTIFACTS}/.", f"{ARTIFACTS}/%2e"):
        status, body = raw_http(live_server.url, "DELETE", target)
        assert_refused(status, body, canary)
    assert live_server.artifacts.is_dir()


def test_ui_get_artifact_refuses_traversal(live_server: LiveServer, canary: Path) -> None:
    created = httpx.post(
        f"{live_server.url}/api/2.0/mlflow/runs/create", json={"experiment_id": "0"}
    )
    run_id = created.json()["run"]["info"]["run_id"]
    for path in [
        "../../../secret.txt",
        "..%2f..%2fsecret.txt",
        "/etc/passwd",
        "file:///etc/passwd",
    ]:
        r = httpx.get(f"{live_server.url}/get-artifact", params={"run_uuid": run_id, "path": path})
        assert_refused(r.status_code, r.content, canary)
        assert r.json()["error_code"] == "INVALID_PARAMETER_VALUE"


def test_multipart_refuses_traversal_in_file_name_and_upload_id(
    live_server: LiveServer, canary: Path
) -> None:
    base = f"{live_server.url}/api/2.0/mlflow-artifacts/mpu"
    for name in ["..", "/tmp/..", "C:\\x\\..", "a%2e%2e"]:
        r = httpx.post(f"{base}/create/0/x", json={"path": name, "num_parts": 1})
        assert_refused(r.status_code, r.content, canary)
    # An upload id names a staging folder locally: only the server's own ids are accepted.
    for upload_id in ["../../secret.txt", "..", "0" * 31 + "/", "A" * 32]:
        r = httpx.put(
            f"{base}/upload-part/0/x/f.bin",
            params={"upload_id": upload_id, "part_number": 1},
            content=b"pwned",
        )
        assert_refused(r.status_code, r.content, canary)
        assert r.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"


def test_download_headers_cannot_be_injected(live_server: LiveServer, canary: Path) -> None:
    r = httpx.put(f"{live_server.url}{ARTIFACTS}/0/hdr/a%0d%0aSet-Cookie:%20x=1", content=b"x")
    assert_refused(r.status_code, r.content, canary)
    assert "set-cookie" not in r.headers
