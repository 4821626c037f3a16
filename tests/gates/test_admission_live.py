"""The admission oracle against a live server: its answer follows every gated move, approval,
rollback, override and alias removal at once, by digest and by model name."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import LiveServer
from tests.gates.attest_support import (
    MLGATE,
    admission,
    independently_verified,
    logged_run,
    make_gate,
    promote,
    published_keys,
    version_digest,
)

pytestmark = pytest.mark.compat
OVERRIDE = {"X-Mlgate-Override": "incident 42"}


def _allowed(server: LiveServer, digest: str, target: str) -> bool:
    answer = admission(server, digest=digest, target=target)
    return bool(answer["allowed"])


def _holder(server: LiveServer, name: str, target: str) -> tuple[bool, str | None]:
    answer = admission(server, name=name, target=target)
    return bool(answer["allowed"]), answer.get("version")


def test_oracle_follows_moves_rollback_and_overrides_of_a_stage(
    mlflow_tracking: str, live_server: LiveServer, unique: str
) -> None:
    name = f"adm-{unique}"
    _, secret = make_gate(live_server, name, "Production", metrics=["val_auc >= 0.9"])
    one = promote(
        live_server,
        secret,
        model=name,
        run_id=logged_run(unique, {"val_auc": 0.92}),
        target="Production",
    )
    d1 = version_digest(live_server, name, one["version"])
    answer = admission(live_server, digest=d1, target="Production")
    assert answer["allowed"] is True and answer["version"] == one["version"]
    # The answer carries the attestation, verifiable on its own.
    statement = independently_verified(
        answer["attestation"]["envelope"], published_keys(live_server)
    )
    assert statement["predicate"]["model"]["manifest_digest"] == d1
    assert _holder(live_server, name, "Production") == (True, one["version"])
    assert not _allowed(live_server, d1, "Staging")  # approved for Production only

    two = promote(
        live_server,
        secret,
        model=name,
        run_id=logged_run(unique, {"val_auc": 0.95}),
        target="Production",
    )
    d2 = version_digest(live_server, name, two["version"])
    assert d2 != d1
    assert not _allowed(live_server, d1, "Production")  # archived by the move
    assert _allowed(live_server, d2, "Production")

    # Rollback: the gate moves version 1 back.
    promote(live_server, secret, model=name, version=one["version"], target="Production")
    assert _allowed(live_server, d1, "Production")
    assert not _allowed(live_server, d2, "Production")
    assert _holder(live_server, name, "Production") == (True, one["version"])

    # An administrator's override moves version 2 in: held, but not through the gate.
    moved = httpx.post(
        f"{live_server.api('model-versions/transition-stage')}",
        json={
            "name": name,
            "version": two["version"],
            "stage": "Production",
            "archive_existing_versions": True,
        },
        headers=OVERRIDE,
    )
    assert moved.status_code == 200, moved.text
    assert not _allowed(live_server, d2, "Production")
    assert not _allowed(live_server, d1, "Production")
    allowed, version = _holder(live_server, name, "Production")
    assert (allowed, version) == (False, two["version"])
    # Archiving the holder (an override leaving Production): nothing holds it.
    left = httpx.post(
        f"{live_server.api('model-versions/transition-stage')}",
        json={
            "name": name,
            "version": two["version"],
            "stage": "Archived",
            "archive_existing_versions": False,
        },
        headers=OVERRIDE,
    )
    assert left.status_code == 200, left.text
    answer = admission(live_server, name=name, target="Production")
    assert answer["allowed"] is False and answer["version"] is None


def test_oracle_follows_an_alias_through_approval_and_removal(
    mlflow_tracking: str, live_server: LiveServer, unique: str
) -> None:
    name = f"adm-alias-{unique}"
    _, secret = make_gate(live_server, name, "@champion", required_approvals=1)
    pending = promote(
        live_server,
        secret,
        model=name,
        run_id=logged_run(unique, {"val_auc": 0.9}),
        target="@champion",
    )
    assert pending["outcome"] == "pending_approval"
    digest = version_digest(live_server, name, pending["version"])
    assert not _allowed(live_server, digest, "@champion")  # pending is not approved
    approved = httpx.post(
        f"{live_server.url}{MLGATE}/approvals/approve",
        json={"request_id": pending["approval_request_id"]},
    )
    assert approved.status_code == 200, approved.text
    assert _allowed(live_server, digest, "@champion")
    assert admission(live_server, digest=digest, name=name, target="@champion")["allowed"]
    # Another model's name with the same digest query: no.
    assert not admission(live_server, digest=digest, name=f"{name}-other", target="@champion")[
        "allowed"
    ]

    removed = httpx.request(
        "DELETE",
        live_server.api("registered-models/alias"),
        json={"name": name, "alias": "champion"},
        headers=OVERRIDE,
    )
    assert removed.status_code == 200, removed.text
    assert not _allowed(live_server, digest, "@champion")
    assert _holder(live_server, name, "@champion") == (False, None)
    # Set back by the override: held, but not attested for this move.
    reset = httpx.post(
        live_server.api("registered-models/alias"),
        json={"name": name, "alias": "champion", "version": pending["version"]},
        headers=OVERRIDE,
    )
    assert reset.status_code == 200, reset.text
    assert not _allowed(live_server, digest, "@champion")


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"target": "Production"}, "digest"),
        ({"digest": "sha256:abc", "target": "Production"}, "digest"),
        ({"digest": "md5:" + "0" * 64, "target": "Production"}, "digest"),
        ({"digest": "sha256:" + "0" * 64}, "target"),
        ({"digest": "sha256:" + "0" * 64, "target": "Nowhere"}, "pointer"),
        ({"name": "a/b", "target": "Production"}, "name"),
    ],
)
def test_oracle_refuses_bad_input_with_an_mlflow_error(
    live_server: LiveServer, params: dict[str, Any], field: str
) -> None:
    answer = httpx.get(f"{live_server.url}{MLGATE}/admission", params=params)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error_code"] == "INVALID_PARAMETER_VALUE"


def test_oracle_says_no_for_unknown_bytes_and_models(live_server: LiveServer) -> None:
    unknown = admission(live_server, digest="sha256:" + "a" * 64, target="Production")
    assert unknown["allowed"] is False and unknown["attestation"] is None
    assert admission(live_server, name="no-such-model-adm", target="@champion")["allowed"] is False
