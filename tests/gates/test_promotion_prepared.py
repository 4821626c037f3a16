"""A promotion read before its transaction (``promotion.prepare``, what the webhook does) answers
exactly as one read inside it (the web UI's path): the same error bytes, the same decision; and
its transaction reads neither the gate, its secrets, nor the run."""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import msgspec
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from gates.policies import promotion, store
from gates.policies import service as policies
from gates.policies.api import decision_response
from gates.policies.ports import Actor
from gates.policies.schemas import PromoteRequest
from gates.policies.signatures import SignedRequest, parse_headers
from registry.artifacts.storage import LocalStorage
from tests.gates.factories import ADMIN, make_gate, make_run, signed
from tests.registry.test_query_counts import count_queries
from tracking.core.clock import now_ms
from tracking.core.db import dialect_name
from tracking.core.errors import MlflowError, error_response

CI = Actor("ci-admin", is_admin=True, authenticated=True)
NOBODY = Actor("no-grants", is_admin=False, authenticated=True)
WRONG_SECRET = "whsec_" + "A" * 43 + "="

pytestmark = pytest.mark.usefixtures("app_hooks")

Call = Callable[[bool], Awaitable[tuple[int, bytes]]]


def _signed(secret: str, raw: bytes, **kwargs: object) -> SignedRequest:
    found = parse_headers(signed(secret, raw, **kwargs))  # type: ignore[arg-type]
    assert found is not None
    return found


async def _answer(
    session: AsyncSession,
    storage: LocalStorage,
    req: PromoteRequest,
    *,
    prepared_first: bool,
    signed_by: SignedRequest | None = None,
    bearer: Actor | None = CI,
    raw: bytes = b"",
) -> tuple[int, bytes]:
    """What the endpoint would answer (status, body), by either path; nothing stays written."""
    bearer = None if signed_by is not None else bearer
    tx = await session.begin_nested()
    try:
        prepared = None
        if prepared_first:
            prepared = await promotion.prepare(
                session, req, raw_body=raw, signed=signed_by, bearer=bearer, storage=storage
            )
        done = await promotion.promote(
            session,
            req,
            raw_body=raw,
            signed=signed_by,
            bearer=bearer,
            storage=storage,
            approval_ttl_hours=1,
            prepared=prepared,
        )
    except MlflowError as exc:
        response = error_response(exc.error_code, exc.message, exc.status_code)
        return response.status_code, bytes(response.content)
    finally:
        await tx.rollback()
    response = decision_response(done.decision, replayed=done.replayed)
    # A new decision's id and time differ between the two calls; the rest must not.
    body = msgspec.json.decode(response.content)
    body.pop("created_at", None)
    encoded = msgspec.json.encode(body).replace(done.decision.decision_id.encode(), b"<id>")
    return response.status_code, encoded


async def test_refusals_and_decisions_are_the_same_read_before_or_inside_the_transaction(
    session: AsyncSession, tmp_path: Path, unique: str
) -> None:
    storage = LocalStorage(tmp_path / "artifacts")
    model, ungated = f"pp-{unique}", f"pu-{unique}"
    gate = await make_gate(session, model, "Staging", metrics=["auc >= 0.5"])
    secret = (await policies.add_secret(session, gate, actor=ADMIN)).secret
    assert secret is not None
    run_id = await make_run(session, metrics={"auc": 0.9}, storage=storage)
    failing = await make_run(session, metrics={"auc": 0.1}, storage=storage)
    await store.record_receipt(session, "msg_seen_before", now_ms())

    def req(**fields: object) -> PromoteRequest:
        base: dict[str, object] = {"model": model, "target": "Staging", "run_id": run_id}
        base["idempotency_key"] = uuid.uuid4().hex
        return msgspec.convert({**base, **fields}, PromoteRequest)

    dry = req(dry_run=True, idempotency_key=None)
    raw = msgspec.json.encode(dry)
    cases: dict[str, tuple[PromoteRequest, dict[str, object]]] = {
        "wrong secret": (dry, {"signed_by": _signed(WRONG_SECRET, raw), "raw": raw}),
        "ungated target, signed": (
            req(model=ungated, dry_run=True, idempotency_key=None),
            {"signed_by": _signed(secret, raw), "raw": raw},
        ),
        "stale signature": (
            dry,
            {"signed_by": _signed(secret, raw, at=int(time.time()) - 3600), "raw": raw},
        ),
        "replayed webhook-id": (
            dry,
            {"signed_by": _signed(secret, raw, webhook_id="msg_seen_before"), "raw": raw},
        ),
        "token without rights": (req(), {"bearer": NOBODY}),
        "ungated target, token": (req(model=ungated), {}),
        "unknown run": (req(run_id=uuid.uuid4().hex), {}),
        "bad model name": (req(model=""), {}),
        "run and version": (req(version="1"), {}),
        "unknown version": (req(run_id=None, version="99"), {}),
        "signed dry run passes": (dry, {"signed_by": _signed(secret, raw), "raw": raw}),
        "failing run": (req(run_id=failing), {}),
    }
    for name, (request, kwargs) in cases.items():
        inside = await _answer(session, storage, request, prepared_first=False, **kwargs)  # type: ignore[arg-type]
        before = await _answer(session, storage, request, prepared_first=True, **kwargs)  # type: ignore[arg-type]
        assert before == inside, name
        assert inside[0] != 500, name
    # A passing promotion of a new version answers the same too (its version number aside).
    first = await _answer(session, storage, req(), prepared_first=False)
    second = await _answer(session, storage, req(), prepared_first=True)
    assert first[0] == second[0] == 200
    assert msgspec.json.decode(first[1])["checks"] == msgspec.json.decode(second[1])["checks"]


async def test_a_signed_promotion_reads_the_gate_its_secrets_and_the_run_before_its_transaction(
    session: AsyncSession, tmp_path: Path, unique: str
) -> None:
    """The transaction records the webhook's receipt (a replay is refused there) but reads
    neither the gate, its secrets, the run, nor the model with the run's versions; before it,
    the gate and its active secrets are read together."""
    storage = LocalStorage(tmp_path / "artifacts")
    model = f"ps-{unique}"
    gate = await make_gate(session, model, "Staging", metrics=["auc >= 0.5"])
    secret = (await policies.add_secret(session, gate, actor=ADMIN)).secret
    assert secret is not None
    for attempt in range(2):  # the first creates the model
        run_id = await make_run(session, metrics={"auc": 0.9}, storage=storage)
        req = PromoteRequest(
            model=model, target="Staging", run_id=run_id, idempotency_key=uuid.uuid4().hex
        )
        raw = msgspec.json.encode(req)
        signed_by = _signed(secret, raw)
        with count_queries(session) as before:
            prepared = await promotion.prepare(
                session, req, raw_body=raw, signed=signed_by, bearer=None, storage=storage
            )
        assert prepared.fingerprint is not None or attempt == 0
        # The gate and its active secrets are one read.
        gate_reads = [s for s in before if "gate_policies" in s or "gate_secrets" in s]
        assert len(gate_reads) == 1 and "gate_secrets" in gate_reads[0], before
        with count_queries(session) as statements:
            done = await promotion.promote(
                session,
                req,
                raw_body=raw,
                signed=signed_by,
                bearer=None,
                storage=storage,
                approval_ttl_hours=1,
                prepared=prepared,
            )
    assert done.decision.outcome == "passed" and done.decision.version == "2"
    flat = [" ".join(s.split()).lower() for s in statements]
    reads = [s for s in flat if s.startswith(("select", "with"))]
    for table in ("gate_secrets", "gate_policies", "runs", "params"):
        assert not [s for s in reads if f"from {table} " in s], (table, reads)
    assert not [s for s in reads if "join model_versions" in s], reads
    receipts = [s for s in flat if "insert into gate_webhook_receipts" in s]
    assert len(receipts) == 1, flat
    # On PostgreSQL the receipt and the claim of the decision are one statement.
    folded = "insert into gate_decisions" in receipts[0]
    assert folded == (dialect_name(session) == "postgresql"), receipts
    assert not [s for s in flat if "savepoint" in s], flat


async def test_a_replayed_webhook_id_claims_no_decision_and_a_new_one_claims_its_key(
    session: AsyncSession, tmp_path: Path, unique: str
) -> None:
    """The receipt is recorded before the claim (in one statement on PostgreSQL): a replayed
    webhook-id is refused and leaves no decision row; a new id records its receipt and claims."""
    storage = LocalStorage(tmp_path / "artifacts")
    model = f"pr-{unique}"
    gate = await make_gate(session, model, "Staging", metrics=["auc >= 0.5"])
    secret = (await policies.add_secret(session, gate, actor=ADMIN)).secret
    assert secret is not None
    run_id = await make_run(session, metrics={"auc": 0.9}, storage=storage)
    await store.record_receipt(session, f"msg_{unique}", now_ms())

    async def promote(webhook_id: str, key: str) -> str:
        req = PromoteRequest(model=model, target="Staging", run_id=run_id, idempotency_key=key)
        raw = msgspec.json.encode(req)
        signed_by = _signed(secret, raw, webhook_id=webhook_id)
        prepared = await promotion.prepare(
            session, req, raw_body=raw, signed=signed_by, bearer=None, storage=storage
        )
        done = await promotion.promote(
            session,
            req,
            raw_body=raw,
            signed=signed_by,
            bearer=None,
            storage=storage,
            approval_ttl_hours=1,
            prepared=prepared,
        )
        return done.decision.outcome

    with pytest.raises(MlflowError, match="already received"):
        await promote(f"msg_{unique}", "replayed")
    assert await store.decision_by_key(session, model, "Staging", "replayed") is None
    assert await promote(f"msg_new_{unique}", "fresh") == "passed"
    assert await store.decision_by_key(session, model, "Staging", "fresh") is not None
    assert not await store.record_receipt(session, f"msg_new_{unique}", now_ms())
