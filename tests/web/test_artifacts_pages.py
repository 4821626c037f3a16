"""The run artifact browser: listings, previews, downloads, and the path attacks it refuses."""

from __future__ import annotations

import base64
import html
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gates.server.web.pages.artifacts import (
    TEXT_PREVIEW_BYTES,
    preview_kind,
    summarise_mlmodel,
)
from registry.artifacts.paths import run_artifact_root
from tests.security.auth_world import World
from tests.web.support import Browser

# A 1x1 transparent PNG.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)
MLMODEL = b"""artifact_path: model
flavors:
  python_function:
    env:
      conda: conda.yaml
      virtualenv: python_env.yaml
    loader_module: mlflow.sklearn
    model_path: model.pkl
    predict_fn: predict
    python_version: 3.11.9
  sklearn:
    code: null
    pickled_model: model.pkl
    serialization_format: cloudpickle
    sklearn_version: 1.5.2
mlflow_version: 3.1.0
model_size_bytes: 1234
model_uuid: 5f1e0c3a9b
run_id: 0123456789abcdef
utc_time_created: '2026-01-02 03:04:05.000000'
"""
METRICS = b'{"auc": 0.93, "labels": ["a", "b"], "nested": {"k": [1, 2]}}'
SVG = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
HTML_FILE = b"<html><body><script>alert('x')</script></body></html>"


@dataclass
class ArtRun:
    experiment_id: str
    run_id: str
    other_run_id: str
    marker: str

    @property
    def page(self) -> str:
        return f"/runs/{self.run_id}/artifacts"

    @property
    def raw(self) -> str:
        return f"/runs/{self.run_id}/artifacts/raw"


@pytest.fixture(scope="module")
def art(web_world: World) -> ArtRun:
    """A run with nested files of every preview kind, and a sibling run holding a marker."""
    exp = web_world.new_experiment("art")
    run = web_world.new_run(exp)
    other = web_world.new_run(exp)
    marker = f"TOP-SECRET-{uuid.uuid4().hex}"

    def put(path: str, content: bytes, run_id: str = run) -> None:
        web_world.put_artifact(f"{exp}/{run_id}/artifacts/{path}", content)

    put("notes.txt", b"hello <b>artifacts</b>\n<script>alert(1)</script>\n")
    put("metrics.json", METRICS)
    put("broken.json", b'{"auc": 0.93,, nope')
    put("plots/roc.png", PNG)
    put("plots/deep/er/leaf.csv", b"a,b\n1,2\n")
    put("model/MLmodel", MLMODEL)
    put("model/requirements.txt", b"scikit-learn==1.5.2\n")
    put("model/model.pkl", b"\x80\x04\x95binary-pickle\x00\x01")
    put("drawing.svg", SVG)
    put("page.html", HTML_FILE)
    # Larger than the preview cap, with a tail that must not reach the page.
    put("big.log", b"line of log text\n" * (TEXT_PREVIEW_BYTES // 17 + 2000) + b"THE-TAIL-END")
    put("secret.txt", marker.encode(), run_id=other)
    return ArtRun(exp, run, other, marker)


@pytest.fixture
def reader(browser_for: Callable[[str], Browser]) -> Iterator[Browser]:
    yield browser_for("reader")


def _entries(page_html: str) -> list[tuple[str, str]]:
    """(path, kind) of each listed entry, in page order."""
    return re.findall(
        r'data-testid="artifact-entry" data-path="([^"]*)" data-kind="(\w+)"', page_html
    )


def _preview(page_html: str) -> str:
    found = re.search(r'data-testid="artifact-preview".*?</section>', page_html, re.S)
    assert found, "no preview on the page"
    return found.group(0)


# --- listings ------------------------------------------------------------------------------------


def test_root_listing_shows_files_and_folders_with_sizes_and_links(
    art: ArtRun, reader: Browser
) -> None:
    page = reader.get(art.page)
    assert page.status_code == 200, page.text[:500]
    assert 'data-testid="artifact-tree"' in page.text
    assert _entries(page.text) == [
        ("big.log", "file"),
        ("broken.json", "file"),
        ("drawing.svg", "file"),
        ("metrics.json", "file"),
        ("model", "dir"),
        ("notes.txt", "file"),
        ("page.html", "file"),
        ("plots", "dir"),
    ]
    # File rows carry their size and a download link; folders link to their own listing.
    size = len(METRICS)
    assert re.search(
        rf'data-path="metrics.json"[^>]*>.*?<td class="num">{size} B</td>', page.text, re.S
    )
    assert (
        f'href="{art.raw}?path=notes.txt&amp;download=1" data-testid="download-link"' in page.text
    )
    assert f'href="{art.page}?path=plots"' in page.text
    assert 'data-testid="artifact-preview"' not in page.text


def test_nested_folders_list_one_level_with_breadcrumbs(art: ArtRun, reader: Browser) -> None:
    page = reader.get(art.page, params={"path": "plots/deep"})
    assert page.status_code == 200
    assert _entries(page.text) == [("plots/deep/er", "dir")]
    crumbs = re.search(r'data-testid="artifact-breadcrumbs">(.*?)</nav>', page.text, re.S)
    assert crumbs
    assert f'<a href="{art.page}">artifacts</a>' in crumbs.group(1)
    assert f'<a href="{art.page}?path=plots">plots</a>' in crumbs.group(1)
    assert '<span aria-current="page">deep</span>' in crumbs.group(1)
    # The parent link goes one level up.
    assert f'<a href="{art.page}?path=plots">..</a>' in page.text

    leaf = reader.get(art.page, params={"path": "plots/deep/er"})
    assert _entries(leaf.text) == [("plots/deep/er/leaf.csv", "file")]


def test_a_missing_path_is_404(art: ArtRun, reader: Browser) -> None:
    page = reader.get(art.page, params={"path": "plots/nothing-here.txt"})
    assert page.status_code == 404
    assert 'data-testid="error-message"' in page.text


def test_a_bad_page_number_is_a_clear_400(art: ArtRun, reader: Browser) -> None:
    page = reader.get(art.page, params={"page": "two"})
    assert page.status_code == 400
    assert "Invalid page" in page.text


# --- previews ------------------------------------------------------------------------------------


def test_text_preview_is_escaped(art: ArtRun, reader: Browser) -> None:
    page = reader.get(art.page, params={"path": "notes.txt"})
    assert page.status_code == 200
    preview = _preview(page.text)
    assert 'data-kind="text"' in preview
    assert '<pre class="preview">hello &lt;b&gt;artifacts&lt;/b&gt;' in preview
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in preview
    assert "<script>alert(1)" not in page.text
    # The file's folder is listed beside it, with the file marked.
    assert ("notes.txt", "file") in _entries(page.text)
    assert re.search(r'data-path="notes.txt"[^>]*class="selected"', page.text)
    assert f'href="{art.raw}?path=notes.txt&amp;download=1" data-testid="download-link"' in preview


def test_json_preview_is_pretty_printed(art: ArtRun, reader: Browser) -> None:
    preview = _preview(reader.get(art.page, params={"path": "metrics.json"}).text)
    assert 'data-kind="json"' in preview
    text = html.unescape(re.search(r"<pre[^>]*>(.*?)</pre>", preview, re.S).group(1))  # type: ignore[union-attr]
    assert text.splitlines()[:3] == ["{", '  "auc": 0.93,', '  "labels": [']
    assert '    "k": [\n      1,\n      2\n    ]' in text


def test_invalid_json_falls_back_to_text(art: ArtRun, reader: Browser) -> None:
    preview = _preview(reader.get(art.page, params={"path": "broken.json"}).text)
    assert 'data-kind="text"' in preview
    assert "Not valid JSON" in preview
    assert "{&#34;auc&#34;: 0.93,, nope" in preview


def test_image_preview_points_at_the_raw_route_served_inline(art: ArtRun, reader: Browser) -> None:
    page = reader.get(art.page, params={"path": "plots/roc.png"})
    preview = _preview(page.text)
    assert 'data-kind="image"' in preview
    assert f'<img class="preview" src="{art.raw}?path=plots%2Froc.png"' in preview
    image = reader.get(art.raw, params={"path": "plots/roc.png"})
    assert image.status_code == 200
    assert image.content == PNG
    assert image.headers["content-type"] == "image/png"
    assert image.headers["content-disposition"].startswith("inline")
    assert image.headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in image.headers["content-security-policy"]
    assert "default-src 'none'" in image.headers["content-security-policy"]


def test_mlmodel_preview_summarises_flavors(art: ArtRun, reader: Browser) -> None:
    preview = _preview(reader.get(art.page, params={"path": "model/MLmodel"}).text)
    assert 'data-kind="mlmodel"' in preview
    summary = re.search(r'data-testid="mlmodel-summary".*?</div>\s*</div>', preview, re.S)
    assert summary
    flavors = re.findall(r'data-flavor="([^"]+)"', summary.group(0))
    assert flavors == ["python_function", "sklearn"]
    assert "<dt>loader_module</dt><dd>mlflow.sklearn</dd>" in summary.group(0)
    assert "<dt>python_version</dt><dd>3.11.9</dd>" in summary.group(0)
    assert "<dt>sklearn_version</dt><dd>1.5.2</dd>" in summary.group(0)
    assert "<dt>mlflow_version</dt><dd>3.1.0</dd>" in summary.group(0)
    # The file itself is shown as YAML text too.
    assert "serialization_format: cloudpickle" in preview


def test_binary_files_have_no_preview_only_a_download(art: ArtRun, reader: Browser) -> None:
    preview = _preview(reader.get(art.page, params={"path": "model/model.pkl"}).text)
    assert 'data-kind="none"' in preview
    assert 'data-testid="no-preview"' in preview
    assert "<pre" not in preview
    assert "binary-pickle" not in preview
    assert 'data-testid="download-link"' in preview


def test_large_text_is_truncated_and_says_so(art: ArtRun, reader: Browser) -> None:
    page = reader.get(art.page, params={"path": "big.log"})
    preview = _preview(page.text)
    assert 'data-testid="preview-truncated"' in preview
    assert "THE-TAIL-END" not in page.text
    shown = html.unescape(re.search(r"<pre[^>]*>(.*?)</pre>", preview, re.S).group(1))  # type: ignore[union-attr]
    assert len(shown.encode()) == TEXT_PREVIEW_BYTES
    # The download still has every byte.
    full = reader.get(art.raw, params={"path": "big.log", "download": "1"})
    assert full.status_code == 200
    assert full.content.endswith(b"THE-TAIL-END")
    assert int(full.headers["content-length"]) == len(full.content) > TEXT_PREVIEW_BYTES


# --- downloads -----------------------------------------------------------------------------------


def test_download_is_an_octet_stream_attachment(art: ArtRun, reader: Browser) -> None:
    response = reader.get(art.raw, params={"path": "model/requirements.txt", "download": "1"})
    assert response.status_code == 200
    assert response.content == b"scikit-learn==1.5.2\n"
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.headers["content-disposition"] == "attachment; filename=requirements.txt"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["content-length"] == str(len(b"scikit-learn==1.5.2\n"))


@pytest.mark.parametrize("name", ["drawing.svg", "page.html", "notes.txt"])
def test_only_raster_images_are_ever_served_inline(art: ArtRun, reader: Browser, name: str) -> None:
    # Even without download=1: SVG and HTML would run script on this origin if rendered.
    response = reader.get(art.raw, params={"path": name})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.headers["content-disposition"].startswith("attachment;")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in response.headers["content-security-policy"]


def test_an_image_downloaded_is_an_attachment(art: ArtRun, reader: Browser) -> None:
    response = reader.get(art.raw, params={"path": "plots/roc.png", "download": "1"})
    assert response.headers["content-disposition"] == "attachment; filename=roc.png"
    assert response.content == PNG


# --- attacks -------------------------------------------------------------------------------------

TRAVERSALS = [
    "..",
    "../{other}/artifacts/secret.txt",
    "../../{other}/artifacts/secret.txt",
    "plots/../../{other}/artifacts/secret.txt",
    "%2e%2e/%2e%2e/{other}/artifacts/secret.txt",
    "%252e%252e/%252e%252e/{other}/artifacts/secret.txt",
    "..%2f..%2f{other}%2fartifacts%2fsecret.txt",
    "/etc/passwd",
    "//etc/passwd",
    "file:///etc/passwd",
    "..\\..\\{other}\\artifacts\\secret.txt",
    "plots\\..\\..\\x",
    "notes.txt%00.png",
    "C:/windows/win.ini",
]


@pytest.mark.parametrize("raw", TRAVERSALS)
@pytest.mark.parametrize("route", ["page", "raw"])
def test_traversal_attempts_are_refused_with_400(
    art: ArtRun, reader: Browser, raw: str, route: str
) -> None:
    # The query string is sent exactly as written (percent-escapes included), as an attacker would.
    value = raw.format(other=art.other_run_id).replace("\\", "%5C")
    path = art.page if route == "page" else art.raw
    response = reader.get(f"{path}?path={value}")
    assert response.status_code == 400, (value, response.status_code)
    assert 'data-testid="error-message"' in response.text
    assert "Invalid artifact path" in response.text
    assert art.marker not in response.text
    assert "root:" not in response.text


def test_symlinks_out_of_the_store_are_refused(
    art: ArtRun, reader: Browser, web_world: World, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "loot.txt").write_text(art.marker)
    run_dir = web_world.server.artifacts / art.experiment_id / art.run_id / "artifacts"
    (run_dir / "escape").symlink_to(outside, target_is_directory=True)
    (run_dir / "loot-link.txt").symlink_to(outside / "loot.txt")
    try:
        for path in ("escape", "escape/loot.txt"):
            for route in (art.page, art.raw):
                response = reader.get(route, params={"path": path})
                assert response.status_code == 400, (route, path, response.status_code)
                assert art.marker not in response.text
        # A symlinked file is not listed, and cannot be read through its link.
        listing = reader.get(art.page)
        assert "loot-link.txt" not in listing.text
        assert "escape" not in [p for p, _ in _entries(listing.text)]
        for route in (art.page, art.raw):
            response = reader.get(route, params={"path": "loot-link.txt"})
            assert response.status_code in (400, 404)
            assert art.marker not in response.text
    finally:
        (run_dir / "escape").unlink()
        (run_dir / "loot-link.txt").unlink()


def test_a_user_without_read_access_to_the_experiment_is_refused(
    art: ArtRun, web_world: World, browser_for: Callable[[str], Browser]
) -> None:
    outsider = browser_for("outsider")
    for route in (art.page, f"{art.page}?path=notes.txt", f"{art.raw}?path=notes.txt"):
        response = outsider.get(route)
        assert response.status_code == 403, route
        assert "alert(1)" not in response.text
    # Nor may a reader of the team's experiments open the hidden one.
    reader = browser_for("reader")
    hidden = reader.get(
        f"/runs/{web_world.hidden_run_id}/artifacts/raw", params={"path": "s.txt", "download": "1"}
    )
    assert hidden.status_code == 403
    assert hidden.content != b"secret"
    # Signed out: the login page, not the files.
    anonymous = browser_for("anonymous")
    response = anonymous.get(art.page, follow=False)
    assert response.status_code == 303
    assert response.headers["location"].startswith("/login?next=")


def test_an_unknown_run_is_not_found_for_an_admin(browser_for: Callable[[str], Browser]) -> None:
    admin = browser_for("admin")
    response = admin.get(f"/runs/{uuid.uuid4().hex}/artifacts")
    assert response.status_code == 404


# --- the pieces, without a server ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("experiment_id", "uri", "expected"),
    [
        ("7", "mlflow-artifacts:/7/abc/artifacts", "7/abc/artifacts"),
        ("7", "mlflow-artifacts:///7/abc/artifacts", "7/abc/artifacts"),
        ("7", "mlflow-artifacts:/8/abc/artifacts", None),  # another experiment's folder
        ("7", "mlflow-artifacts:/7", None),  # the whole experiment
        ("7", "mlflow-artifacts:/", None),  # the whole store
        ("7", "mlflow-artifacts://other-host/7/abc/artifacts", None),
        ("7", "mlflow-artifacts:/7/../8/abc", None),
        ("7", "file:///etc", None),
        ("7", "s3://elsewhere/7/abc/artifacts", None),
        ("7", "/var/lib/mlgate/7/abc", None),
        ("7", "", None),
    ],
)
def test_only_runs_stored_in_mlgate_are_browsed(
    experiment_id: str, uri: str, expected: str | None
) -> None:
    root = run_artifact_root(experiment_id, uri)
    assert (root.posix if root is not None else None) == expected


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("MLmodel", "mlmodel"),
        ("conda.yaml", "text"),
        ("requirements.txt", "text"),
        ("train.py", "text"),
        ("data.CSV", "text"),
        ("x.json", "json"),
        ("a.jpeg", "image"),
        ("a.webp", "image"),
        ("a.svg", "text"),
        ("model.pkl", "none"),
        ("weights", "none"),
    ],
)
def test_preview_kinds(name: str, kind: str) -> None:
    assert preview_kind(name) == kind


def test_mlmodel_summary_never_expands_yaml_aliases() -> None:
    # A "billion laughs" document: summarising it must not build the expansion.
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n"
    for level in "bcdefghi":
        prev = chr(ord(level) - 1)
        bomb += f"{level}: &{level} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"
    bomb += "flavors:\n  python_function:\n    loader_module: m\n    payload: *i\n"
    flavors, _, note = summarise_mlmodel(bomb)
    assert note == ""
    assert flavors == [
        {"name": "python_function", "facts": [("loader_module", "m"), ("payload", "[6 items]")]}
    ]
    assert (
        summarise_mlmodel("flavors: [unclosed")[2] == "The file is not valid YAML; shown as text."
    )
