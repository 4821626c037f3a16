"""Registry pages: the models list (stages, aliases, gate badges, search, visibility), a model's
timeline and "as of" answer, and a version's provenance, files, decisions and comparison."""

from __future__ import annotations

import html as html_lib
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from gates.server.web.pages.registry_pages import models_page_data
from registry import service as registry
from registry.schemas import CreateRegisteredModel
from tests.conftest import LiveServer
from tests.registry.test_query_counts import count_queries
from tests.security.auth_world import API, MLGATE, World
from tests.web.support import Browser

# --- helpers shared with test_approvals_pages --------------------------------------------------


def element(page: str, testid: str) -> str:
    """The raw HTML of the element carrying ``data-testid=testid`` (nesting-aware)."""
    found = re.search(rf'<(\w+)\b[^>]*data-testid="{re.escape(testid)}"', page)
    assert found, f"no element with data-testid={testid!r}"
    tag = found.group(1)
    depth = 0
    for t in re.finditer(rf"<(/?){tag}\b[^>]*>", page[found.start() :]):
        depth += -1 if t.group(1) else 1
        if depth == 0:
            return page[found.start() : found.start() + t.end()]
    raise AssertionError(f"unclosed <{tag}> for {testid!r}")


def text(fragment: str) -> str:
    return " ".join(html_lib.unescape(re.sub(r"<[^>]+>", " ", fragment)).split())


def rows(fragment: str, attribute: str) -> dict[str, str]:
    """``<tr data-<attribute>="key">...</tr>`` rows of a table: key -> raw row HTML."""
    return {
        html_lib.unescape(m.group(1)): m.group(0)
        for m in re.finditer(rf'<tr [^>]*data-{attribute}="([^"]*)"[^>]*>.*?</tr>', fragment, re.S)
    }


def model_path(name: str) -> str:
    return f"/models/{quote(name, safe='')}"


def finished_run(
    world: World,
    *,
    metrics: dict[str, float] | None = None,
    params: dict[str, str] | None = None,
    tags: dict[str, str] | None = None,
    experiment_id: str | None = None,
    files: dict[str, bytes] | None = None,
) -> str:
    """A FINISHED run with metrics, params and tags, and files under its ``model/`` folder."""
    experiment = experiment_id or world.experiment_id
    run_id = world.new_run(experiment)
    world.admin_json(
        "POST",
        f"{API}/runs/log-batch",
        json={
            "run_id": run_id,
            "metrics": [
                {"key": k, "value": v, "timestamp": 1, "step": 0}
                for k, v in (metrics or {}).items()
            ],
            "params": [{"key": k, "value": v} for k, v in (params or {}).items()],
            "tags": [{"key": k, "value": v} for k, v in (tags or {}).items()],
        },
    )
    for name, data in (files or {"MLmodel": b"flavors: {}\n"}).items():
        world.put_artifact(f"{experiment}/{run_id}/artifacts/model/{name}", data)
    world.admin_json(
        "POST", f"{API}/runs/update", json={"run_id": run_id, "status": "FINISHED", "end_time": 2}
    )
    return run_id


def create_gate(world: World, model: str, target: str, **rules: Any) -> str:
    name = world.fresh("gate")
    world.admin_json(
        "POST",
        f"{MLGATE}/gates/create",
        json={"name": name, "model": model, "target": target, **rules},
    )
    return name


# --- the models list -------------------------------------------------------------------------


def test_models_list_shows_stages_aliases_and_gate_badge(
    web_world: World, browser_for: Callable[[str], Browser]
) -> None:
    gated = web_world.new_model("listed")
    plain = web_world.new_model("listed")
    v1 = web_world.new_version(gated)
    v2 = web_world.new_version(gated)
    web_world.transition(gated, v1, "Staging")
    web_world.transition(gated, v2, "Production")
    web_world.set_alias(gated, "champion", v1)
    create_gate(web_world, gated, "Production", metrics=["val_auc >= 0.9"])
    web_world.new_version(plain)

    page = browser_for("reader").get(f"/models?q={web_world.u}-listed")
    assert page.status_code == 200, page.text[:500]
    table = rows(element(page.text, "models-table"), "model")
    assert set(table) == {gated, plain}
    row = table[gated]
    assert re.search(r'data-stage="Staging">.*?v1<', row, re.S)
    assert re.search(r'data-stage="Production">.*?v2<', row, re.S)
    assert "@champion → v1" in text(row)
    assert 'data-testid="gate-badge"' in row and "gated: Production" in text(row)
    assert f'href="{model_path(gated)}"' in row
    assert 'data-testid="gate-badge"' not in table[plain]
    assert "Production" not in text(re.sub(r"<thead>.*?</thead>", "", table[plain]))


def test_search_narrows_the_list_and_speaks_the_filter_grammar(
    web_world: World, browser_for: Callable[[str], Browser]
) -> None:
    first = web_world.new_model("needle")
    second = web_world.new_model("haystack")
    web_world.admin_json(
        "POST",
        f"{API}/registered-models/set-tag",
        json={"name": second, "key": "team", "value": "risk"},
    )
    browser = browser_for("reader")
    by_substring = rows(
        element(browser.get(f"/models?q={web_world.u}-needle").text, "models-table"), "model"
    )
    assert set(by_substring) == {first}
    by_tag = browser.get(
        "/models",
        params={"q": f"tags.team = 'risk' AND name LIKE '%{web_world.u}-haystack%'"},
    )
    listed = rows(element(by_tag.text, "models-table"), "model")
    assert set(listed) == {second}
    assert "team=risk" in text(listed[second])
    bad = browser.get("/models", params={"q": "name = "})
    assert bad.status_code == 400
    assert "Expected a value" in text(element(bad.text, "search-error"))


def test_models_list_pages_with_tokens(
    web_world: World, browser_for: Callable[[str], Browser]
) -> None:
    # 51 models: the first page holds 50 and links to the next, which holds the rest.
    label = f"paged{web_world.u}"
    for _ in range(51):
        web_world.new_model(label)
    browser = browser_for("reader")
    first = browser.get(f"/models?q={label}")
    listed = rows(element(first.text, "models-table"), "model")
    assert len(listed) == 50
    link = re.search(r'href="([^"]+)" data-testid="next-page"', first.text)
    assert link
    second = browser.get(html_lib.unescape(link.group(1)))
    more = rows(element(second.text, "models-table"), "model")
    assert len(more) == 1 and not set(more) & set(listed)
    forged = browser.get(f"/models?q={label}&page_token=not-a-token")
    assert forged.status_code == 400


def test_a_reader_of_another_team_neither_sees_nor_finds_the_model(
    web_world: World, browser_for: Callable[[str], Browser]
) -> None:
    model = web_world.new_model("private")
    web_world.new_version(model)
    outsider = browser_for("outsider")
    assert outsider.get(model_path(model)).status_code == 403
    assert outsider.get(f"{model_path(model)}/versions/1").status_code == 403
    found = outsider.get("/models", params={"q": model})
    assert found.status_code == 200 and model not in element(found.text, "models-table")
    assert 'data-testid="models-empty"' in found.text
    reader = browser_for("reader")
    assert reader.get(model_path(model)).status_code == 200
    # The model only the admin may read is hidden from the reader, in the list and by URL.
    hidden = web_world.hidden_model
    assert hidden not in element(reader.get("/models", params={"q": hidden}).text, "models-table")
    assert hidden in element(
        browser_for("admin").get("/models", params={"q": hidden}).text, "models-table"
    )
    assert reader.get(model_path(hidden)).status_code == 403
    assert browser_for("admin").get(model_path(hidden)).status_code == 200
    assert outsider.get("/models/no-such-model-anywhere").status_code == 403
    assert browser_for("admin").get("/models/no-such-model-anywhere").status_code == 404


# --- a model's page ---------------------------------------------------------------------------


def test_timeline_lists_moves_in_order_and_as_of_answers_between_two_moves(
    web_world: World, browser_for: Callable[[str], Browser]
) -> None:
    model = web_world.new_model("timeline")
    v1 = web_world.new_version(model)
    v2 = web_world.new_version(model)
    web_world.transition(model, v1, "Production")
    web_world.set_alias(model, "champion", v1)
    time.sleep(1.2)
    between = datetime.now(tz=UTC)
    time.sleep(1.2)
    web_world.admin_json(
        "POST",
        f"{API}/model-versions/transition-stage",
        json={
            "name": model,
            "version": v2,
            "stage": "Production",
            "archive_existing_versions": True,
            "comment": "v2 beats v1",
        },
    )
    browser = browser_for("reader")
    page = browser.get(model_path(model))
    assert page.status_code == 200
    items = re.findall(
        r'<li data-pointer="([^"]+)" data-action="([^"]+)" data-to="([^"]*)"',
        element(page.text, "timeline"),
    )
    # Newest first: v2 onto Production (archiving v1), then the alias, then v1 onto Production.
    assert items[0][0] in ("Production", "Archived") and items[1][0] in ("Production", "Archived")
    assert ("Production", "transition", v2) in items[:2]
    assert ("Archived", "archive", v1) in items[:2]
    assert items[2:] == [("@champion", "set_alias", v1), ("Production", "transition", v1)]
    assert "v2 beats v1" in text(element(page.text, "timeline"))
    assert "root" in text(element(page.text, "timeline"))

    versions = rows(element(page.text, "versions-table"), "version")
    assert set(versions) == {v1, v2}
    assert "Production" in text(versions[v2]) and "Archived" in text(versions[v1])
    assert "@champion" in text(versions[v1])

    at = between.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
    then = browser.get(model_path(model), params={"at": at})
    answer = element(then.text, "as-of-result")
    held = dict(re.findall(r'data-pointer="([^"]+)" data-version="([^"]*)"', answer))
    assert held == {"Staging": "", "Production": v1, "@champion": v1}
    now = browser.get(model_path(model), params={"at": "2999-01-01T00:00"})
    held_now = dict(
        re.findall(
            r'data-pointer="([^"]+)" data-version="([^"]*)"', element(now.text, "as-of-result")
        )
    )
    assert held_now["Production"] == v2
    early = browser.get(model_path(model), params={"at": "2001-01-01T00:00"})
    assert 'data-pointer="Production" data-version=""' in element(early.text, "as-of-result")
    bad = browser.get(model_path(model), params={"at": "yesterday"})
    assert bad.status_code == 200 and "Cannot read the time" in bad.text


# --- a version's page --------------------------------------------------------------------------


def test_version_page_shows_provenance_files_and_digests(
    web_world: World, browser_for: Callable[[str], Browser]
) -> None:
    run_id = finished_run(
        web_world,
        metrics={"val_auc": 0.931, "loss": 0.25},
        params={"max_depth": "7", "model": "rf"},
        tags={"mlflow.source.git.commit": "1a2b3c4d", "mlflow.source.name": "train.py"},
        files={"MLmodel": b"flavors: {}\n", "model.pkl": b"\x00pickle-bytes"},
    )
    web_world.admin_json(
        "POST",
        f"{API}/runs/log-inputs",
        json={
            "run_id": run_id,
            "datasets": [
                {
                    "tags": [{"key": "mlflow.data.context", "value": "training"}],
                    "dataset": {
                        "name": "transactions",
                        "digest": "d1g35t",
                        "source_type": "s3",
                        "source": "s3://bucket/transactions.parquet",
                    },
                }
            ],
        },
    )
    model = web_world.new_model("provenance")
    version = web_world.new_version(model, run_id)
    page = browser_for("reader").get(f"{model_path(model)}/versions/{version}")
    assert page.status_code == 200, page.text[:500]
    provenance = element(page.text, "provenance")
    params = rows(provenance, "param")
    assert text(params["max_depth"]).endswith("7") and text(params["model"]).endswith("rf")
    metrics = rows(provenance, "metric")
    assert "0.931" in text(metrics["val_auc"]) and "0.25" in text(metrics["loss"])
    assert "train.py" in text(element(page.text, "source-code"))
    assert "1a2b3c4d" in text(element(page.text, "source-code"))
    assert "transactions" in text(rows(provenance, "dataset")["transactions"])
    assert "d1g35t" in provenance and "mlflow.data.context=training" in text(provenance)
    assert f'href="/runs/{run_id}"' in provenance

    resolved = web_world.admin_json(
        "GET", f"{MLGATE}/models/resolve", params={"uri": f"models:/{model}/{version}"}
    )
    artifacts = rows(element(page.text, "artifacts"), "path")
    assert set(artifacts) == {f["path"] for f in resolved["files"]} == {"MLmodel", "model.pkl"}
    for f in resolved["files"]:
        assert f["sha256"] in artifacts[f["path"]]
    assert resolved["digest"] and resolved["digest"] in page.text
    model_page = browser_for("reader").get(model_path(model))
    assert resolved["digest"][:19] in text(
        rows(element(model_page.text, "versions-table"), "version")[version]
    )


def test_version_page_says_so_when_the_run_is_not_readable(
    web_world: World, browser_for: Callable[[str], Browser]
) -> None:
    # The reader may read model-<u>-* but not the experiment the run was logged in.
    run_id = finished_run(
        web_world, metrics={"secret_metric": 0.5}, experiment_id=web_world.hidden_experiment_id
    )
    model = web_world.new_model("hidden-run")
    version = web_world.new_version(model, run_id)
    page = browser_for("reader").get(f"{model_path(model)}/versions/{version}")
    assert page.status_code == 200
    assert "You cannot read experiment" in text(element(page.text, "provenance-hidden"))
    assert "secret_metric" not in page.text
    # The files are the model's, readable by its readers.
    assert "MLmodel" in element(page.text, "artifacts")
    admin_page = browser_for("admin").get(f"{model_path(model)}/versions/{version}")
    assert "secret_metric" in element(admin_page.text, "provenance")
    bad = browser_for("reader").get(f"{model_path(model)}/versions/not-a-number")
    assert bad.status_code == 400
    assert browser_for("reader").get(f"{model_path(model)}/versions/99").status_code == 404


def test_decision_checks_show_observed_threshold_operator_and_verdict(
    web_world: World, browser_for: Callable[[str], Browser]
) -> None:
    model = web_world.new_model("decided")
    run_id = finished_run(web_world, metrics={"val_auc": 0.95})
    version = web_world.new_version(model, run_id)
    create_gate(web_world, model, "Staging", metrics=["val_auc >= 0.99"])
    refused = web_world.admin.post(
        f"{MLGATE}/gates/promote",
        json={"model": model, "version": version, "target": "Staging", "idempotency_key": "k1"},
    )
    assert refused.status_code == 422, refused.text
    page = browser_for("reader").get(f"{model_path(model)}/versions/{version}")
    decisions = element(page.text, "decisions")
    assert 'data-outcome="failed"' in decisions
    check = rows(decisions, "check")["metric:val_auc"]
    assert re.search(r'data-field="observed">0\.95<', check)
    assert re.search(r'data-field="threshold">0\.99<', check)
    assert re.search(r'data-field="operator">&gt;=<', check)
    assert 'data-verdict="fail"' in check
    assert 'data-verdict="pass"' in rows(decisions, "check")["run_status"]


def test_comparison_marks_better_worse_and_changed_against_the_holder(
    web_world: World, browser_for: Callable[[str], Browser]
) -> None:
    model = web_world.new_model("compare")
    champion_run = finished_run(
        web_world, metrics={"val_auc": 0.90, "loss": 0.20, "speed": 5}, params={"depth": "5"}
    )
    candidate_run = finished_run(
        web_world, metrics={"val_auc": 0.95, "loss": 0.30, "speed": 6}, params={"depth": "7"}
    )
    champion = web_world.new_version(model, champion_run)
    candidate = web_world.new_version(model, candidate_run)
    web_world.transition(model, champion, "Production")
    web_world.set_alias(model, "old", champion)
    create_gate(web_world, model, "Production", metrics=["val_auc >= 0.5", "loss <= 1"])
    browser = browser_for("reader")
    page = browser.get(f"{model_path(model)}/versions/{candidate}")
    compared = element(page.text, "comparison")
    assert f'data-holder="{champion}"' in compared
    metrics = rows(compared, "metric")
    assert 'data-diff="better"' in metrics["val_auc"]
    assert 'data-diff="worse"' in metrics["loss"]
    assert 'data-diff="changed"' in metrics["speed"]  # no gate rule: no direction
    assert 'data-diff="changed"' in rows(compared, "param")["depth"]
    by_alias = browser.get(f"{model_path(model)}/versions/{candidate}", params={"target": "@old"})
    assert f'data-holder="{champion}"' in element(by_alias.text, "comparison")
    staging = browser.get(f"{model_path(model)}/versions/{candidate}", params={"target": "staging"})
    assert 'data-holder=""' in element(staging.text, "comparison")
    bad = browser.get(f"{model_path(model)}/versions/{candidate}", params={"target": "Nowhere"})
    assert bad.status_code == 200 and "Nowhere" in text(element(bad.text, "target-error"))


# --- auth off ----------------------------------------------------------------------------------


def test_registry_pages_render_with_authentication_off(live_server: LiveServer) -> None:
    name = f"ui-smoke-{time.time_ns()}"
    api = httpx.Client(base_url=live_server.url, timeout=60)
    assert api.post(f"{API}/registered-models/create", json={"name": name}).status_code == 200
    experiment = api.post(f"{API}/experiments/create", json={"name": name}).json()
    run = api.post(
        f"{API}/runs/create", json={"experiment_id": experiment["experiment_id"]}
    ).json()["run"]["info"]
    created = api.post(
        f"{API}/model-versions/create",
        json={"name": name, "source": f"runs:/{run['run_id']}/model", "run_id": run["run_id"]},
    )
    assert created.status_code == 200, created.text
    api.close()
    browser = Browser(live_server.url)
    listed = browser.get("/models", params={"q": name})
    assert listed.status_code == 200 and name in element(listed.text, "models-table")
    assert "authentication off" in listed.text
    assert browser.get(model_path(name)).status_code == 200
    assert browser.get(f"{model_path(name)}/versions/1").status_code == 200
    browser.close()


# --- query counts ----------------------------------------------------------------------------


async def test_models_list_issues_a_fixed_number_of_queries(
    session: AsyncSession, unique: str
) -> None:
    async def populate(label: str, n: int) -> None:
        for i in range(n):
            name = f"qc-{unique}-{label}-{i}"
            await registry.create_registered_model(
                session, CreateRegisteredModel(name=name), actor="t"
            )
            await registry.set_registered_model_tag(session, name, "k", "v")

    async def measured(label: str) -> int:
        with count_queries(session) as queries:
            found, _ = await models_page_data(
                session, f"name LIKE 'qc-{unique}-{label}-%'", None, None
            )
        assert found
        return len(queries)

    await populate("one", 1)
    await populate("many", 8)
    assert await measured("one") == await measured("many")
