"""Experiment and run pages: the runs table (sort, filter, columns, pages), charts, comparison,
the run page, and who may see what."""

from __future__ import annotations

import html as htmllib
import json
import re
from collections.abc import Callable
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import httpx

from tests.conftest import LiveServer
from tests.security.auth_world import API, World
from tests.web.support import Browser

BrowserFor = Callable[[str], Browser]


# --- helpers -------------------------------------------------------------------------------------


class RunsTable(HTMLParser):
    """The runs table's rows: run id, then the cells tagged data-metric / data-param / data-tag."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict[str, Any]] = []
        self.headers: list[str] = []
        self.sorted: dict[str, str] = {}
        self._cell: tuple[str, str] | None = None
        self._header: str | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "tr" and a.get("data-testid") == "run-row":
            self.rows.append({"run_id": a["data-run-id"], "metric": {}, "param": {}, "tag": {}})
        elif tag == "td" and self.rows:
            for kind in ("metric", "param", "tag"):
                if f"data-{kind}" in a:
                    self._cell = (kind, str(a[f"data-{kind}"]))
                    self._text = []
        elif tag == "th" and a.get("data-column"):
            self._header = str(a["data-column"])
            self.headers.append(self._header)
            if a.get("data-sort"):
                self.sorted[self._header] = str(a["data-sort"])

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None:
            kind, key = self._cell
            self.rows[-1][kind][key] = "".join(self._text).strip()
            self._cell = None


def runs_table(html: str) -> RunsTable:
    parser = RunsTable()
    parser.feed(html)
    return parser


def text_of(html: str, testid: str) -> str:
    found = re.search(rf'data-testid="{testid}"[^>]*>(.*?)</', html, re.S)
    assert found, f"no element with data-testid={testid}"
    return re.sub(r"\s+", " ", found.group(1)).strip()


def chart_data(html: str) -> dict[str, Any]:
    found = re.search(
        r'<script type="application/json" id="trk-chart-data">(.*?)</script>', html, re.S
    )
    assert found, "the page embeds no chart data"
    return dict(json.loads(found.group(1)))


def links(html: str, testid: str) -> list[str]:
    return [
        m.replace("&amp;", "&")
        for m in re.findall(rf'<a href="([^"]+)"[^>]*data-testid="{testid}"', html)
    ]


def order_of(href: str) -> str:
    return parse_qs(urlsplit(href).query).get("order_by", [""])[0]


def log_runs(
    call: Callable[..., Any], experiment_id: str, specs: list[dict[str, Any]]
) -> list[str]:
    """Create one run per spec (name, metrics, params, tags) through the REST API."""
    ids = []
    for index, spec in enumerate(specs):
        run = call(
            "POST",
            f"{API}/runs/create",
            json={
                "experiment_id": experiment_id,
                "run_name": spec["name"],
                "start_time": 1_700_000_000_000 + index * 1000,
            },
        )
        run_id = run["run"]["info"]["run_id"]
        body = {
            "run_id": run_id,
            "metrics": [
                {"key": k, "value": v, "timestamp": 1, "step": 0}
                for k, v in spec.get("metrics", {}).items()
            ],
            "params": [{"key": k, "value": v} for k, v in spec.get("params", {}).items()],
            "tags": [{"key": k, "value": v} for k, v in spec.get("tags", {}).items()],
        }
        call("POST", f"{API}/runs/log-batch", json=body)
        ids.append(run_id)
    return ids


SIX_RUNS: list[dict[str, Any]] = [
    {
        "name": f"run-{i}",
        "metrics": {"acc": acc, "loss": 1 - acc},
        "params": {"lr": lr, "model": model},
        "tags": {"team": "risk" if i % 2 else "growth"},
    }
    for i, (acc, lr, model) in enumerate(
        [
            (0.71, "0.1", "rf"),
            (0.93, "0.01", "gbm"),
            (0.52, "0.3", "rf"),
            (0.88, "0.03", "gbm"),
            (0.64, "0.2", "rf"),
            (0.97, "0.001", "gbm"),
        ]
    )
]


def seeded_experiment(world: World, specs: list[dict[str, Any]]) -> tuple[str, list[str]]:
    experiment_id = world.new_experiment("runs")
    return experiment_id, log_runs(world.admin_json, experiment_id, specs)


# --- the runs table --------------------------------------------------------------------------------


def test_sorting_by_a_metric_orders_rows_both_ways_and_shows_the_direction(
    web_world: World, browser_for: BrowserFor
) -> None:
    experiment_id, _ = seeded_experiment(web_world, SIX_RUNS)
    browser = browser_for("reader")
    accuracies = sorted(s["metrics"]["acc"] for s in SIX_RUNS)

    down = browser.get(f"/experiments/{experiment_id}?order_by=" + quote("metrics.`acc` DESC"))
    assert down.status_code == 200, down.text[:500]
    table = runs_table(down.text)
    assert [float(r["metric"]["acc"]) for r in table.rows] == accuracies[::-1]
    assert table.sorted == {"metric:acc": "desc"}

    up = browser.get(f"/experiments/{experiment_id}?order_by=" + quote("metrics.`acc` ASC"))
    table = runs_table(up.text)
    assert [float(r["metric"]["acc"]) for r in table.rows] == accuracies
    assert table.sorted == {"metric:acc": "asc"}

    # The header link of the sorted column flips the direction; following it sorts descending.
    flip = next(h for h in links(up.text, "sort-link") if order_of(h).startswith("metrics.`acc`"))
    assert order_of(flip) == "metrics.`acc` DESC"
    again = runs_table(browser.get(flip).text)
    assert [float(r["metric"]["acc"]) for r in again.rows] == accuracies[::-1]

    by_param = runs_table(
        browser.get(f"/experiments/{experiment_id}?order_by=" + quote("params.`lr` ASC")).text
    )
    assert [r["param"]["lr"] for r in by_param.rows] == sorted(s["params"]["lr"] for s in SIX_RUNS)
    # Default order: newest first, and the page says so.
    default = runs_table(browser.get(f"/experiments/{experiment_id}").text)
    assert [r["param"]["lr"] for r in default.rows] == [s["params"]["lr"] for s in SIX_RUNS][::-1]
    assert default.sorted == {"attribute:start_time": "desc"}


def test_a_filter_narrows_the_runs_and_stays_in_the_form(
    web_world: World, browser_for: BrowserFor
) -> None:
    experiment_id, ids = seeded_experiment(web_world, SIX_RUNS)
    browser = browser_for("reader")
    text = "params.model = 'gbm' AND metrics.acc > 0.9"
    response = browser.get(f"/experiments/{experiment_id}", params={"filter": text})
    assert response.status_code == 200
    table = runs_table(response.text)
    assert sorted(r["run_id"] for r in table.rows) == sorted([ids[1], ids[5]])
    assert "params.model = &#39;gbm&#39; AND metrics.acc &gt; 0.9" in response.text
    assert 'data-testid="filter-error"' not in response.text
    # Sorting keeps the filter.
    flip = next(h for h in links(response.text, "sort-link") if "`acc`" in order_of(h))
    assert parse_qs(urlsplit(flip).query)["filter"] == [text]
    assert len(runs_table(browser.get(flip).text).rows) == 2


def test_a_bad_filter_shows_the_parsers_message_and_an_empty_table_not_a_500(
    web_world: World, browser_for: BrowserFor
) -> None:
    experiment_id, _ = seeded_experiment(web_world, SIX_RUNS[:2])
    browser = browser_for("reader")
    for bad in ("metrics.acc >", "params.lr = 'x' OR params.lr = 'y'", "nonsense.key = 1"):
        api = web_world.admin.get(
            f"{API}/runs/search", params={"experiment_ids": experiment_id, "filter": bad}
        )
        assert api.status_code == 400
        response = browser.get(f"/experiments/{experiment_id}", params={"filter": bad})
        assert response.status_code == 400, response.text[:300]
        shown = htmllib.unescape(text_of(response.text, "filter-error"))
        assert shown == re.sub(r"\s+", " ", api.json()["message"]).strip()
        assert runs_table(response.text).rows == []
    for query in ("max_results=lots", "page_token=garbage", "order_by=" + quote("metrics.`a` UP")):
        response = browser.get(f"/experiments/{experiment_id}?{query}")
        assert response.status_code == 400
        assert text_of(response.text, "filter-error")


def test_the_column_chooser_changes_the_columns_and_links_keep_the_choice(
    web_world: World, browser_for: BrowserFor
) -> None:
    experiment_id, _ = seeded_experiment(web_world, SIX_RUNS)
    browser = browser_for("reader")
    default = runs_table(browser.get(f"/experiments/{experiment_id}").text)
    assert {"metric:acc", "metric:loss", "param:lr", "param:model"} <= set(default.headers)
    assert not any(h.startswith("tag:") for h in default.headers)

    chosen = browser.get(
        f"/experiments/{experiment_id}",
        params={"cols": "1", "metrics": "loss", "params": "model", "tags": "team"},
    )
    table = runs_table(chosen.text)
    shown = [h for h in table.headers if not h.startswith("attribute:")]
    assert shown == ["metric:loss", "param:model", "tag:team"]
    assert set(table.rows[0]["tag"]) == {"team"} and set(table.rows[0]["metric"]) == {"loss"}
    assert re.search(r'name="tags" value="team" checked', chosen.text)
    assert re.search(r'name="metrics" value="acc" >', chosen.text)  # offered, unchecked
    for href in links(chosen.text, "sort-link"):
        assert "metrics=loss" in href and "params=model" in href and "tags=team" in href
    sorted_page = runs_table(browser.get(links(chosen.text, "sort-link")[-1]).text)
    assert [h for h in sorted_page.headers if not h.startswith("attribute:")] == shown


def test_paging_walks_a_large_experiment_with_page_tokens(
    web_world: World, browser_for: BrowserFor
) -> None:
    specs = [{"name": f"p-{i}", "metrics": {"acc": i / 10}} for i in range(7)]
    experiment_id, ids = seeded_experiment(web_world, specs)
    browser = browser_for("reader")
    seen: list[str] = []
    url: str | None = f"/experiments/{experiment_id}?max_results=3&order_by=" + quote(
        "metrics.`acc` ASC"
    )
    pages = 0
    while url:
        response = browser.get(url)
        assert response.status_code == 200
        rows = runs_table(response.text).rows
        assert len(rows) <= 3
        seen += [r["run_id"] for r in rows]
        following = links(response.text, "next-page")
        url = following[0] if following else None
        pages += 1
    assert pages == 3
    assert seen == ids  # ascending accuracy = creation order, no run twice, none missing


def test_page_size_is_capped_and_pages_report_their_server_time(
    web_world: World, browser_for: BrowserFor
) -> None:
    experiment_id, _ = seeded_experiment(web_world, SIX_RUNS[:1])
    browser = browser_for("reader")
    response = browser.get(f"/experiments/{experiment_id}?max_results=100000")
    assert response.status_code == 200
    timing = response.headers["server-timing"]
    assert re.fullmatch(r"app;dur=\d+(\.\d+)?", timing)


# --- experiments list ----------------------------------------------------------------------------


def test_the_experiments_list_shows_only_readable_experiments_and_searches_by_name(
    web_world: World, browser_for: BrowserFor
) -> None:
    experiment_id = web_world.new_experiment("listed")
    reader = browser_for("reader")
    response = reader.get("/experiments", params={"q": f"{web_world.u}-listed", "max_results": 500})
    assert response.status_code == 200
    assert 'data-testid="experiments-table"' in response.text
    assert f'href="/experiments/{experiment_id}"' in response.text
    everything = reader.get("/experiments", params={"max_results": 500}).text
    assert f'href="/experiments/{web_world.hidden_experiment_id}"' not in everything
    assert f"hidden-{web_world.u}" not in everything
    outsider = browser_for("outsider").get("/experiments", params={"q": web_world.u}).text
    assert f'href="/experiments/{experiment_id}"' not in outsider
    admin = browser_for("admin").get("/experiments", params={"q": f"hidden-{web_world.u}"}).text
    assert f'href="/experiments/{web_world.hidden_experiment_id}"' in admin


# --- permissions ----------------------------------------------------------------------------------


def test_a_reader_cannot_open_or_compare_or_chart_a_hidden_run(
    web_world: World, browser_for: BrowserFor
) -> None:
    reader = browser_for("reader")
    hidden = web_world.hidden_run_id
    mine = web_world.run_id
    assert reader.get(f"/runs/{mine}").status_code == 200
    assert reader.get(f"/runs/{hidden}").status_code in (403, 404)
    assert reader.get(f"/experiments/{web_world.hidden_experiment_id}").status_code in (403, 404)
    # The guard reads the first run_ids value only: the page checks every run itself.
    for first, second in ((mine, hidden), (hidden, mine)):
        response = reader.get("/runs/compare", params={"run_ids": [first, second]})
        assert response.status_code == 403, response.text[:300]
        assert 'data-testid="compare-params"' not in response.text
    charts = reader.get(
        f"/experiments/{web_world.experiment_id}/charts", params={"run_ids": [mine, hidden]}
    )
    assert charts.status_code == 403
    assert "trk-chart-data" not in charts.text
    # No runs at all: a clear 400 from the page, not a refusal.
    assert reader.get("/runs/compare").status_code == 400
    # The admin sees both.
    admin = browser_for("admin").get("/runs/compare", params={"run_ids": [mine, hidden]})
    assert admin.status_code == 200
    # Signed out: sent to the login page.
    anonymous = browser_for("anonymous").get(f"/runs/{mine}", follow=False)
    assert anonymous.status_code == 303 and anonymous.headers["location"].startswith("/login")


# --- comparison, charts and the run page ----------------------------------------------------------


def test_compare_puts_runs_side_by_side_and_highlights_what_differs(
    web_world: World, browser_for: BrowserFor
) -> None:
    specs = [
        {"name": "left", "metrics": {"acc": 0.9, "f1": 0.5}, "params": {"lr": "0.1", "k": "5"}},
        {"name": "right", "metrics": {"acc": 0.8, "f1": 0.5}, "params": {"lr": "0.2", "k": "5"}},
    ]
    _, ids = seeded_experiment(web_world, specs)
    for step in range(1, 50):
        web_world.admin_json(
            "POST",
            f"{API}/runs/log-metric",
            json={
                "run_id": ids[0],
                "key": "acc",
                "value": step / 100,
                "timestamp": 2,
                "step": step,
            },
        )
    browser = browser_for("reader")
    response = browser.get("/runs/compare", params={"run_ids": ids})
    assert response.status_code == 200
    html = response.text
    params = html[html.index('data-testid="compare-params"') :]
    params = params[: params.index("</table>")]
    assert re.search(r'<tr data-key="lr" class="changed">', params)
    assert re.search(r'<tr data-key="k">', params)
    metrics = html[html.index('data-testid="compare-metrics"') :]
    assert re.search(r'<tr data-key="acc" class="changed">', metrics)
    assert re.search(r'<tr data-key="f1">', metrics)
    assert 'data-testid="compare-tags"' in html
    data = chart_data(html)
    acc = next(c for c in data["metrics"] if c["key"] == "acc")
    assert [s["label"] for s in acc["series"]] == ["left", "right"]
    assert acc["series"][0]["total"] == 50
    # acc has histories: a chart; f1 has one point per run: shown as values, not as a chart.
    assert len(data["metrics"]) == 2
    assert re.findall(r'data-testid="metric-chart" data-key="([^"]+)"', html) == ["acc"]
    assert re.findall(r'data-testid="metric-value" data-key="([^"]+)"', html) == ["f1"]
    only = browser.get("/runs/compare", params={"run_ids": ids, "diff": "1"}).text
    assert '<tr data-key="k">' not in only and 'data-key="lr" class="changed"' in only
    assert browser.get("/runs/compare", params={"run_ids": ids[:1]}).status_code == 400


def test_the_charts_page_embeds_downsampled_series_scatter_and_parallel_data(
    web_world: World, browser_for: BrowserFor
) -> None:
    experiment_id, ids = seeded_experiment(web_world, SIX_RUNS[:3])
    long_run = ids[0]
    steps = 20_000
    for start in range(0, steps, 1000):
        web_world.admin_json(
            "POST",
            f"{API}/runs/log-batch",
            json={
                "run_id": long_run,
                "metrics": [
                    {
                        "key": "train_loss",
                        "value": 5.0 if s == 12_345 else 1 / (s + 1),
                        "timestamp": 3,
                        "step": s,
                    }
                    for s in range(start, start + 1000)
                ],
            },
        )
    browser = browser_for("reader")
    response = browser.get(f"/experiments/{experiment_id}/charts", params={"run_ids": ids})
    assert response.status_code == 200, response.text[:500]
    assert len(response.content) < 200_000
    data = chart_data(response.text)
    loss = next(c for c in data["metrics"] if c["key"] == "train_loss")
    series = next(s for s in loss["series"] if s["run_id"] == long_run)
    assert series["total"] == steps and series["downsampled"]
    assert len(series["x"]) == len(series["y"]) <= 1000
    assert max(series["y"]) == 5.0 and min(series["y"]) == float(f"{1 / steps:.7g}")
    charted = [c["key"] for c in data["metrics"] if not c["single"]]
    valued = [c["key"] for c in data["metrics"] if c["single"]]
    assert "train_loss" in charted
    assert response.text.count('data-testid="metric-chart"') == len(charted)
    assert response.text.count('data-testid="metric-value"') == len(valued)
    # Every point carries its wall-clock time for the page's time axes.
    assert len(series["t"]) == len(series["x"])
    assert series["t0"] == 3 and set(series["t"]) == {0}
    # Scatter: lr (a numeric param) against a metric; one point per run.
    assert 'data-testid="scatter-chart"' in response.text
    assert {p["run_id"] for p in data["scatter"]["points"]} == set(ids)
    chosen = chart_data(
        browser.get(
            f"/experiments/{experiment_id}/charts",
            params={"run_ids": ids, "x": "metric:loss", "y": "metric:acc"},
        ).text
    )
    assert chosen["scatter"]["x"] == {"kind": "metric", "key": "loss"}
    # Parallel coordinates: the numeric param, the text param (categorical), then metrics.
    axes = {a["name"]: a for a in data["parallel"]["axes"]}
    assert axes["lr"]["type"] == "numeric" and axes["model"]["type"] == "category"
    assert axes["acc"]["kind"] == "metric"
    assert 'data-testid="parallel-chart"' in response.text
    # Without run_ids: the first runs of the default order; more than 20 is refused.
    default = chart_data(browser.get(f"/experiments/{experiment_id}/charts").text)
    assert {s["run_id"] for c in default["metrics"] for s in c["series"]} == set(ids)
    too_many = browser.get(
        f"/experiments/{experiment_id}/charts", params={"run_ids": [f"{i:032x}" for i in range(21)]}
    )
    assert too_many.status_code == 400


def test_the_run_page_shows_info_params_metrics_tags_versions_and_charts(
    web_world: World, browser_for: BrowserFor
) -> None:
    experiment_id, [run_id] = seeded_experiment(web_world, SIX_RUNS[:1])
    commit = "0123abcd" * 5
    web_world.admin_json(
        "POST",
        f"{API}/runs/log-batch",
        json={
            "run_id": run_id,
            "metrics": [
                {"key": "acc", "value": 0.5 + s / 100, "timestamp": 5, "step": s}
                for s in range(1, 30)
            ],
            "params": [{"key": "depth", "value": "7"}],
            "tags": [
                {"key": "mlflow.source.git.commit", "value": commit},
                {"key": "owner", "value": "ana"},
            ],
        },
    )
    model = web_world.new_model("trk")
    version = web_world.new_version(model, run_id)
    browser = browser_for("reader")
    response = browser.get(f"/runs/{run_id}")
    assert response.status_code == 200
    html = response.text
    assert commit in text_of(html, "git-commit")
    assert text_of(html, "run-name").startswith("run-0")
    params = html[html.index('data-testid="run-params"') :]
    assert "depth" in params[: params.index("</table>")]
    assert ">ana<" in html
    assert f'href="/runs/{run_id}/artifacts"' in html and 'data-testid="artifacts-link"' in html
    assert f"{model} v{version}" in html
    assert f'href="/experiments/{experiment_id}"' in html
    metrics = html[html.index('data-testid="run-metrics"') :]
    assert re.search(r'<tr data-key="acc">.*?<td class="num">30</td>', metrics, re.S)
    data = chart_data(html)
    assert [c["key"] for c in data["metrics"]] == ["acc", "loss"]
    acc = data["metrics"][0]["series"][0]
    assert acc["x"] == list(range(30)) and acc["y"][-1] == 0.79
    assert "server-timing" in response.headers
    # A version of a model the reader cannot see is not listed.
    hidden_version = web_world.new_version(web_world.hidden_model, run_id)
    again = browser.get(f"/runs/{run_id}").text
    assert web_world.hidden_model not in again and f"{model} v{version}" in again
    assert hidden_version


# --- authentication off ---------------------------------------------------------------------------


def test_every_page_renders_with_authentication_off(live_server: LiveServer, unique: str) -> None:
    client = httpx.Client(base_url=live_server.url, timeout=60)

    def call(method: str, path: str, **kwargs: Any) -> Any:
        response = client.request(method, path, **kwargs)
        assert response.status_code == 200, response.text
        return response.json()

    experiment_id = call("POST", f"{API}/experiments/create", json={"name": f"ui-{unique}"})[
        "experiment_id"
    ]
    ids = log_runs(call, experiment_id, SIX_RUNS[:3])
    browser = Browser(live_server.url)
    pages = [
        "/experiments",
        f"/experiments/{experiment_id}",
        f"/experiments/{experiment_id}/charts",
        f"/runs/compare?run_ids={ids[0]}&run_ids={ids[1]}",
        f"/runs/{ids[0]}",
    ]
    for path in pages:
        response = browser.get(path)
        assert response.status_code == 200, (path, response.text[:500])
        assert "server-timing" in response.headers
        assert "Content-Security-Policy" in response.headers
    table = runs_table(browser.get(f"/experiments/{experiment_id}").text)
    assert [r["run_id"] for r in table.rows] == ids[::-1]
    assert browser.get("/runs/0123456789abcdef0123456789abcdef").status_code == 404
    assert browser.get("/experiments/999999999").status_code == 404
    assert browser.get("/experiments/not-a-number").status_code == 404
    browser.close()
    client.close()


def test_the_column_chooser_offers_keys_logged_by_runs_off_this_page(
    web_world: World, browser_for: BrowserFor
) -> None:
    specs = [{"name": f"k-{i}", "metrics": {"acc": i / 10}} for i in range(4)]
    # The oldest run alone logged these: with 2 rows per page it is not on the first page.
    specs[0] = {
        "name": "k-0",
        "metrics": {"acc": 0.0, "rare_metric": 1.0},
        "params": {"rare_param": "x"},
        "tags": {"rare_tag": "y"},
    }
    experiment_id, ids = seeded_experiment(web_world, specs)
    page = browser_for("reader").get(f"/experiments/{experiment_id}?max_results=2").text
    assert ids[0] not in [row["run_id"] for row in runs_table(page).rows]
    for kind, key in (("metrics", "rare_metric"), ("params", "rare_param"), ("tags", "rare_tag")):
        assert re.search(rf'name="{kind}" value="{key}"', page), (kind, key)
