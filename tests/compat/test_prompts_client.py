"""MLflow 3's prompt registry (``mlflow.genai``) against a live mlgate, with the official client.

Prompts are registered models tagged ``mlflow.prompt.is_prompt``; their versions carry the
template in a tag and a placeholder source (``registry.prompts``). Gates guard a prompt's
aliases exactly as a model's: the last test moves a gated alias only through approvals.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from gates.server import migrate
from tests.conftest import LiveServer, stop_server
from tests.security.auth_world import ADMIN_PASSWORD, ADMIN_USER, PASSWORD, start_auth_server

pytestmark = pytest.mark.compat
API = "/api/2.0/mlflow"
MLGATE = "/api/2.0/mlgate"
IS_PROMPT = "mlflow.prompt.is_prompt"


def _prompt_version_body(name: str, source: str, **extra: Any) -> dict[str, Any]:
    tags = [{"key": IS_PROMPT, "value": "true"}, {"key": "mlflow.prompt.text", "value": "t"}]
    return {"name": name, "source": source, "tags": tags, **extra}


def _raise_code(call: Any, *args: Any, **kwargs: Any) -> MlflowException:
    with pytest.raises(MlflowException) as err:
        call(*args, **kwargs)
    return err.value


# --- the client's prompt API ---------------------------------------------------------------------


def test_register_version_alias_and_load_by_version_alias_and_latest(
    mlflow_tracking: str, unique: str
) -> None:
    name = f"greet-{unique}"
    first = mlflow.genai.register_prompt(
        name, "Hello {{name}}", commit_message="first", tags={"lang": "en"}
    )
    assert (first.name, first.version, first.template) == (name, 1, "Hello {{name}}")
    chat = [{"role": "user", "content": "Hi {{name}}"}]
    second = mlflow.genai.register_prompt(
        name, chat, commit_message="chat", response_format={"type": "object"}
    )
    assert second.version == 2

    v1 = mlflow.genai.load_prompt(f"prompts:/{name}/1")
    assert v1.template == "Hello {{name}}" and v1.commit_message == "first"
    assert v1.tags["lang"] == "en" and v1.format(name="Ada") == "Hello Ada"
    v2 = mlflow.genai.load_prompt(f"prompts:/{name}/2")
    assert v2.template == chat and v2.response_format == {"type": "object"}
    assert mlflow.genai.load_prompt(f"prompts:/{name}@latest").version == 2
    assert mlflow.genai.load_prompt(name).version == 2

    mlflow.genai.set_prompt_alias(name, "production", 1)
    aliased = mlflow.genai.load_prompt(f"prompts:/{name}@production")
    assert (aliased.version, aliased.template) == (1, "Hello {{name}}")
    assert "production" in aliased.aliases
    mlflow.genai.set_prompt_alias(name, "production", 2)
    assert mlflow.genai.load_prompt(f"prompts:/{name}@production").version == 2
    mlflow.genai.delete_prompt_alias(name, "production")
    gone = _raise_code(mlflow.genai.load_prompt, f"prompts:/{name}@production")
    assert gone.error_code == "INVALID_PARAMETER_VALUE"
    assert "alias production not found" in gone.message

    missing = _raise_code(mlflow.genai.load_prompt, f"prompts:/{name}/9")
    assert missing.error_code == "RESOURCE_DOES_NOT_EXIST"
    unknown = _raise_code(mlflow.genai.load_prompt, f"prompts:/nope-{unique}/1")
    assert unknown.error_code == "RESOURCE_DOES_NOT_EXIST"


def test_prompt_and_version_tags_and_the_link_to_the_run_that_loads_it(
    mlflow_tracking: str, unique: str
) -> None:
    client = MlflowClient()
    name = f"tags-{unique}"
    mlflow.genai.register_prompt(name, "Summarise {{text}}", tags={"team": "nlp"})
    mlflow.genai.set_prompt_version_tag(name, 1, "reviewed", "yes")
    assert mlflow.genai.load_prompt(f"prompts:/{name}/1").tags["reviewed"] == "yes"
    mlflow.genai.delete_prompt_version_tag(name, 1, "reviewed")
    assert "reviewed" not in mlflow.genai.load_prompt(f"prompts:/{name}/1").tags

    client.set_prompt_tag(name, "owner", "ana")
    client.delete_prompt_tag(name, "team")
    prompt = client.get_prompt(name)
    assert prompt is not None and prompt.tags["owner"] == "ana" and "team" not in prompt.tags

    mlflow.set_experiment(f"prompts-{unique}")
    with mlflow.start_run() as run:
        assert mlflow.genai.load_prompt(f"prompts:/{name}/1").format(text="x") == "Summarise x"
    linked = client.get_run(run.info.run_id).data.tags["mlflow.linkedPrompts"]
    assert f'"name": "{name}"' in linked and '"version": "1"' in linked


def test_search_prompts_and_the_model_searches_keep_prompts_and_models_apart(
    mlflow_tracking: str, unique: str
) -> None:
    client = MlflowClient()
    names = [f"s-{unique}-{i}" for i in range(3)]
    for i, name in enumerate(names):
        mlflow.genai.register_prompt(name, f"T{i}", tags={"team": "a" if i < 2 else "b"})
    model = f"s-{unique}-model"
    client.create_registered_model(model)

    team_a = mlflow.genai.search_prompts(f"name LIKE 's-{unique}-%' AND tags.team = 'a'")
    assert sorted(p.name for p in team_a) == names[:2]
    assert all(IS_PROMPT not in p.tags for p in team_a)
    ordered = mlflow.genai.search_prompts(f"name LIKE 's-{unique}-%'", order_by=["name DESC"])
    assert [p.name for p in ordered] == names[::-1]
    assert [v.version for v in client.search_prompt_versions(names[0])] == [1]

    # Model searches leave prompts out, as MLflow's server does, whatever the client appends.
    like = f"name LIKE 's-{unique}-%'"
    assert [m.name for m in client.search_registered_models(like)] == [model]
    assert client.search_model_versions(f"name = '{names[0]}'") == []

    def raw_models(extra: str) -> list[str]:
        r = httpx.get(
            f"{mlflow_tracking}{API}/registered-models/search",
            params={"filter": f"{like}{extra}"},
        )
        assert r.status_code == 200, r.text
        return [m["name"] for m in r.json().get("registered_models", [])]

    assert raw_models("") == [model]
    assert raw_models(f" AND tags.`{IS_PROMPT}` = 'false'") == [model]
    assert raw_models(f" AND tags.`{IS_PROMPT}` = 'true'") == names
    # "!= 'false'" asks for prompts too, and then needs the tag (MLflow's rule).
    assert raw_models(f" AND tags.`{IS_PROMPT}` != 'false'") == names
    versions = httpx.get(
        f"{mlflow_tracking}{API}/model-versions/search",
        params={"filter": f"name = '{names[0]}' AND tags.`{IS_PROMPT}` = 'true'"},
    ).json()["model_versions"]
    assert [(v["name"], v["version"]) for v in versions] == [(names[0], "1")]


def test_prompt_versions_have_no_files_and_take_only_placeholder_sources(
    mlflow_tracking: str, unique: str
) -> None:
    name = f"nofiles-{unique}"
    mlflow.genai.register_prompt(name, "Hello")
    base = f"{mlflow_tracking}{API}"
    # Like MLflow, the download URI of a prompt version is its placeholder source.
    uri = httpx.get(f"{base}/model-versions/get-download-uri", params={"name": name, "version": 1})
    assert uri.json() == {"artifact_uri": "dummy-source"}  # what the client sends
    made = httpx.post(
        f"{base}/model-versions/create", json=_prompt_version_body(name, "prompt-template")
    )
    assert made.status_code == 200 and made.json()["model_version"]["source"] == "prompt-template"
    # Nothing was frozen or hashed: no digest, no files; resolve still answers.
    resolved = httpx.get(
        f"{mlflow_tracking}{MLGATE}/models/resolve", params={"uri": f"models:/{name}/2"}
    )
    assert resolved.status_code == 200, resolved.text
    assert resolved.json().get("digest") is None and resolved.json().get("files", []) == []

    for bad in ("s3://bucket/p", "file:///etc/passwd", "runs:/" + "0" * 32 + "/m", ""):
        r = httpx.post(f"{base}/model-versions/create", json=_prompt_version_body(name, bad))
        assert r.status_code == 400 and r.json()["error_code"] == "INVALID_PARAMETER_VALUE"
        assert r.json()["message"] == (
            f"Invalid prompt source: '{bad}'. Prompt sources must use an MLflow placeholder."
        )
    # A placeholder is no source for an ordinary version, and a prompt version needs a prompt.
    model = f"model-{unique}"
    MlflowClient().create_registered_model(model)
    plain = httpx.post(
        f"{base}/model-versions/create", json={"name": model, "source": "dummy-source"}
    )
    assert plain.status_code == 400
    into_model = httpx.post(
        f"{base}/model-versions/create", json=_prompt_version_body(model, "prompt-template")
    )
    assert into_model.status_code == 400 and "is not a prompt" in into_model.json()["message"]
    versions = MlflowClient().search_model_versions(f"name = '{model}'")
    assert versions == []


def test_a_prompt_and_a_model_cannot_share_a_name(mlflow_tracking: str, unique: str) -> None:
    client = MlflowClient()
    client.create_registered_model(f"m-{unique}")
    mlflow.genai.register_prompt(f"p-{unique}", "x")
    refused = _raise_code(mlflow.genai.register_prompt, f"m-{unique}", "x")
    assert "exists with the same name" in refused.message

    def create(name: str, prompt: bool) -> httpx.Response:
        tags = [{"key": IS_PROMPT, "value": "true"}] if prompt else []
        return httpx.post(
            f"{mlflow_tracking}{API}/registered-models/create", json={"name": name, "tags": tags}
        )

    over_model = create(f"m-{unique}", True).json()
    assert over_model["error_code"] == "RESOURCE_ALREADY_EXISTS"
    assert over_model["message"] == (
        f"Tried to create a prompt with name 'm-{unique}', but the name is already taken by a "
        "registered model. MLflow does not allow creating a model and a prompt with the same name."
    )
    over_prompt = create(f"p-{unique}", False).json()
    assert "registered model with name" in over_prompt["message"]
    assert "taken by a prompt" in over_prompt["message"]
    assert (
        create(f"p-{unique}", True).json()["message"] == f"Prompt (name=p-{unique}) already exists."
    )


def test_deleting_prompt_versions_and_prompts(mlflow_tracking: str, unique: str) -> None:
    client = MlflowClient()
    name = f"del-{unique}"
    mlflow.genai.register_prompt(name, "one")
    mlflow.genai.register_prompt(name, "two")
    mlflow.genai.set_prompt_alias(name, "prod", 2)
    client.delete_prompt_version(name, 2)
    assert mlflow.genai.load_prompt(f"prompts:/{name}@latest").template == "one"
    assert (
        _raise_code(mlflow.genai.load_prompt, f"prompts:/{name}@prod").error_code
        == "INVALID_PARAMETER_VALUE"
    )
    client.delete_prompt_version(name, 1)
    client.delete_prompt(name)
    assert client.get_prompt(name) is None


# --- gates on prompts ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def auth_server(make_database, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:  # type: ignore[no-untyped-def]
    url = make_database("prompts_auth")
    migrate.upgrade(url)
    live = start_auth_server(url, tmp_path_factory.mktemp("prompts-auth"))
    yield live
    stop_server(live)
    text = live.log.read_text(errors="replace")
    if "Traceback" in text:
        print(text[-5000:], file=sys.stderr)


class _Team:
    """An admin and users with grants on one prompt name (exact), each with its own client."""

    def __init__(self, server: LiveServer, prompt: str) -> None:
        self.server, self.prompt = server, prompt
        self.u = uuid.uuid4().hex[:6]
        self.admin = httpx.Client(base_url=server.url, auth=(ADMIN_USER, ADMIN_PASSWORD))
        self.clients: dict[str, httpx.Client] = {}

    def ok(self, client: httpx.Client, method: str, path: str, **kw: Any) -> Any:
        r = client.request(method, path, **kw)
        assert r.status_code == 200, (path, r.status_code, r.text)
        return r.json()

    def user(self, label: str, role: str, targets: list[str] | None = None) -> str:
        name = f"{label}-{self.u}"
        self.ok(
            self.admin,
            "POST",
            f"{MLGATE}/users/create",
            json={"username": name, "password": PASSWORD},
        )
        for kind, pattern, grant_role in (
            ("experiment", "*", "editor"),
            ("registered_model", self.prompt, role),
        ):
            body: dict[str, Any] = {
                "username": name,
                "resource_type": kind,
                "pattern": pattern,
                "role": grant_role,
            }
            if targets is not None and kind == "registered_model":
                body["targets"] = targets
            self.ok(self.admin, "POST", f"{MLGATE}/grants/create", json=body)
        self.clients[label] = httpx.Client(base_url=self.server.url, auth=(name, PASSWORD))
        return name


def test_a_gated_prompt_alias_moves_only_through_the_gate_and_two_approvals(
    auth_server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    prompt = f"support-{uuid.uuid4().hex[:8]}"
    team = _Team(auth_server, prompt)
    # The author holds the approver role: only the gate stops them moving the alias, and
    # separation of duties stops them approving their own prompt.
    author = team.user("author", "approver")
    team.user("editor", "editor")
    team.user("ci", "approver", ["@production"])
    team.user("ap1", "approver")
    team.user("ap2", "approver")
    gate = f"gate-{team.u}"
    # A prompt has no run: the gate checks the version's own tags and asks for two approvals.
    team.ok(
        team.admin,
        "POST",
        f"{MLGATE}/gates/create",
        json={
            "name": gate,
            "model": prompt,
            "target": "@production",
            "required_version_tags": ["reviewed_by"],
            "version_tags": {"eval": "passed"},
            "require_finished": False,
            "require_digest": False,
            "required_approvals": 2,
        },
    )

    # The author works with the official client under their own credentials.
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", author)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)
    mlflow.set_tracking_uri(auth_server.url)
    mlflow.set_registry_uri(auth_server.url)
    mlflow.genai.register_prompt(prompt, "You are a support agent. {{question}}")
    mlflow.genai.set_prompt_alias(prompt, "staging", 1)  # not gated
    refused = _raise_code(mlflow.genai.set_prompt_alias, prompt, "production", 1)
    assert refused.error_code == "PERMISSION_DENIED" and gate in refused.message

    token = team.ok(team.clients["ci"], "POST", f"{MLGATE}/tokens/create", json={"name": "ci"})
    bearer = {"Authorization": f"Bearer {token['secret']}"}

    def promote(key: str) -> httpx.Response:
        body = {"model": prompt, "version": "1", "target": "@production", "idempotency_key": key}
        return httpx.post(f"{auth_server.url}{MLGATE}/gates/promote", json=body, headers=bearer)

    failed = promote("k1")
    assert failed.status_code == 422 and failed.json()["error_code"] == "GATE_FAILED"
    verdicts = {c["name"]: c["verdict"] for c in failed.json()["checks"]}
    assert verdicts == {
        "version_tag:reviewed_by": "fail",
        "version_tag:eval": "fail",
        "approvals": "pending",
    }

    mlflow.genai.set_prompt_version_tag(prompt, 1, "reviewed_by", "ana")
    mlflow.genai.set_prompt_version_tag(prompt, 1, "eval", "passed")
    pending = promote("k2")
    assert pending.status_code == 202, pending.text
    request_id = pending.json()["approval_request_id"]
    # Nothing moved yet: the alias is still unset.
    assert _raise_code(mlflow.genai.load_prompt, f"prompts:/{prompt}@production")

    def approve(who: str) -> httpx.Response:
        return team.clients[who].post(
            f"{MLGATE}/approvals/approve", json={"request_id": request_id}
        )

    assert approve("ci").status_code == 403  # the requester may not approve
    # Nor may the prompt's author (a prompt has no run: who registered the version counts).
    own = approve("author")
    assert own.status_code == 403 and "authored version 1" in own.json()["message"]
    assert approve("editor").status_code == 403  # an editor is no approver
    assert approve("ap1").status_code == 200
    final = approve("ap2")
    assert final.status_code == 200, final.text
    assert final.json()["decision"]["outcome"] == "passed"
    loaded = mlflow.genai.load_prompt(f"prompts:/{prompt}@production")
    assert (loaded.version, loaded.template) == (1, "You are a support agent. {{question}}")

    # Leaving the gated alias is gated too.
    left = _raise_code(mlflow.genai.delete_prompt_alias, prompt, "production")
    assert left.error_code == "PERMISSION_DENIED" and gate in left.message

    moves = team.ok(
        team.admin,
        "GET",
        f"{MLGATE}/audit",
        params={"kind": "alias.moved", "subject": f"model:{prompt}"},
    )["entries"]
    seen = [(e["payload"]["alias"], e["payload"]["to_version"], e["actor"]) for e in moves]
    assert ("staging", "1", author) in seen
    production = [m for m in moves if m["payload"]["alias"] == "production"]
    assert [(m["payload"]["to_version"], m["actor"]) for m in production] == [
        ("1", f"ap2-{team.u}")
    ]
