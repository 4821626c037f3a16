"""Gate list endpoints run a fixed number of queries however long the page (no N+1), and a
promotion and a transition a fixed small number of statements."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.ext.asyncio import AsyncSession

from gates.approvals import service as approvals
from gates.attestations import store as attestation_store
from gates.attestations.dsse import Signer
from gates.attestations.keys import AttestationKeyring
from gates.audit import service as audit
from gates.audit import store as audit_store
from gates.policies import promotion
from gates.policies import service as policies
from gates.policies.ports import Actor
from gates.policies.schemas import PromoteRequest
from registry import service as registry
from registry.artifacts.storage import LocalStorage
from tests.gates.factories import make_gate, make_run
from tests.registry.factories import ACTOR, make_model, make_version
from tests.registry.factories import make_run as make_registry_run
from tests.registry.test_query_counts import count_queries
from tracking.core.auth import ResourceScope
from tracking.core.db import dialect_name

CI = Actor("ci", is_admin=True, authenticated=True)


pytestmark = pytest.mark.usefixtures("app_hooks")


async def _populate(session: AsyncSession, storage: LocalStorage, model: str, n: int) -> None:
    await make_gate(session, model, "Production", required_approvals=1)
    for _ in range(n):
        run_id = await make_run(session, storage=storage)
        await promotion.promote(
            session,
            PromoteRequest(
                model=model, target="Production", run_id=run_id, idempotency_key=uuid.uuid4().hex
            ),
            raw_body=b"",
            signed=None,
            bearer=CI,
            storage=storage,
            approval_ttl_hours=1,
        )


async def _counts(session: AsyncSession, model: str) -> tuple[int, int, int]:
    with count_queries(session) as gates_q:
        found, _ = await policies.list_policies(session, 1000)
    assert found
    with count_queries(session) as decisions_q:
        decisions, _ = await policies.list_decisions(session, model)
    with count_queries(session) as approvals_q:
        requests, _ = await approvals.list_requests(session, "pending", model)
    assert decisions and requests
    return len(gates_q), len(decisions_q), len(approvals_q)


async def test_list_endpoints_do_not_grow_with_the_page(
    session: AsyncSession, tmp_path: Path, unique: str
) -> None:
    storage = LocalStorage(tmp_path / "artifacts")
    await _populate(session, storage, f"one-{unique}", 1)
    small = await _counts(session, f"one-{unique}")
    await _populate(session, storage, f"many-{unique}", 6)
    large = await _counts(session, f"many-{unique}")
    assert small == large, (small, large)


async def test_scoped_list_endpoints_do_not_grow_with_the_page_or_the_glob_gates(
    session: AsyncSession, tmp_path: Path, unique: str
) -> None:
    """A non-admin's lists (filtered by their grants' scope) stay a fixed number of queries
    however many glob gates must be checked against the models they may read."""
    storage = LocalStorage(tmp_path / "artifacts")
    scope = ResourceScope(patterns=(f"*-{unique}",))

    async def counts(model: str) -> tuple[int, int, int]:
        with count_queries(session) as gates_q:
            found, _ = await policies.list_policies(session, 1000, scope=scope)
        with count_queries(session) as decisions_q:
            decisions, _ = await policies.list_decisions(session, model, scope=scope)
        with count_queries(session) as approvals_q:
            requests, _ = await approvals.list_requests(session, "pending", model, scope=scope)
        assert found and decisions and requests
        return len(gates_q), len(decisions_q), len(approvals_q)

    await _populate(session, storage, f"one-{unique}", 1)
    await make_gate(session, f"one-{unique[:4]}*", "Staging")
    small = await counts(f"one-{unique}")
    await _populate(session, storage, f"many-{unique}", 6)
    for index in range(5):
        # Overlapping globs on one target are refused, so each guards its own alias.
        await make_gate(session, f"many-{unique[:4]}*-{index}*", f"@slot{index}")
    large = await counts(f"many-{unique}")
    assert small == large, (small, large)


# Statements of one promotion (a passing run registered as a new version of an existing model,
# moved to Staging, attested, decided and announced) and of one archiving transition of an
# ungated model, audit chain included. Before the folds they were 56 and 15 on PostgreSQL (55
# and 14 on SQLite): the new and the moved version rendered though nobody read them, ten reads
# for the attestation, the decision re-read after its update, an outbox insert and a
# subscription read per event, the chain's lock, head read and insert as three statements.
# SQLite keeps two statements per event and the chain's head read and insert. Then 38 and 42:
# the run read three times (7 + 4 reads, 4 again for the source check), the model read
# twice, the gate and its version in two reads, the decision key read before its claim, a
# savepoint around a registration nothing could undo, the attestation's key a statement of
# its own (PostgreSQL).
# With the prebuilt move merged in: 22 and 27. Then 18 and 23: the gate, the run (two reads)
# and the model with the run's versions are read before the transaction (promotion.prepare).
# Then 12 and 22 (session 9): on PostgreSQL the promotion's three outbox events are one INSERT
# at its end (gates.events: batched), the new version's number, row and files one statement,
# and the attestation's version and files one read; 11 with the move's fold (below).
PROMOTION_STATEMENTS = {"postgresql": 11, "sqlite": 22}
# The transition then went to 10 and 12: its statements prebuilt on the transaction's own
# connection (tests/registry/test_transition_hot_path.py), one holders read instead of two, one
# read for the gates of the stages it enters and leaves, the answer rendered from the move's
# RETURNING row (its tags and aliases only are read).
# Then 9 on PostgreSQL (session 9): the move sets the model's timestamp in its own statement.
TRANSITION_STATEMENTS = {"postgresql": 9, "sqlite": 12}


async def _promote_counted(
    session: AsyncSession, storage: LocalStorage, model: str, keyring: AttestationKeyring
) -> tuple[str, int]:
    outcome, _, statements = await _promote_statements(session, storage, model, keyring)
    return outcome, len(statements)


async def _promote_statements(
    session: AsyncSession, storage: LocalStorage, model: str, keyring: AttestationKeyring
) -> tuple[str, list[str], list[str]]:
    """A promotion as the API runs it: (outcome, statements read before the transaction,
    statements of the transaction, COMMIT's audit append included)."""
    run_id = await make_run(session, metrics={"auc": 0.9}, storage=storage)
    req = PromoteRequest(
        model=model, target="Staging", run_id=run_id, idempotency_key=uuid.uuid4().hex
    )
    with count_queries(session) as before:
        prepared = await promotion.prepare(
            session, req, raw_body=b"", signed=None, bearer=CI, storage=storage
        )
    await session.run_sync(audit_store.can_append_in_one_call)  # probed once per connection
    with count_queries(session) as statements:
        done = await promotion.promote(
            session,
            req,
            raw_body=b"",
            signed=None,
            bearer=CI,
            storage=storage,
            approval_ttl_hours=1,
            attestations=keyring,
            prepared=prepared,
        )
        await session.run_sync(audit.write_pending)  # what COMMIT adds
    return done.decision.outcome, before, statements


def _flat(statements: list[str]) -> list[str]:
    return [" ".join(s.split()).lower() for s in statements]


def _reads(flat: list[str], table: str) -> list[str]:
    return [s for s in flat if s.startswith(("select", "with")) and f"from {table} " in s]


async def test_a_promotion_runs_a_fixed_small_number_of_statements(
    session: AsyncSession, tmp_path: Path, unique: str
) -> None:
    storage = LocalStorage(tmp_path / "artifacts")
    keyring = AttestationKeyring(Signer.from_private(Ed25519PrivateKey.generate()))
    model = f"qp-{unique}"
    await make_gate(session, model, "Staging", metrics=["auc >= 0.5"])
    await _promote_counted(session, storage, model, keyring)  # creates the model
    outcome, count = await _promote_counted(session, storage, model, keyring)
    assert outcome == "passed"
    assert count <= PROMOTION_STATEMENTS[dialect_name(session)], count
    # The attestation's folded reads name what the live tables say.
    live = await registry.live_pointer(session, model, "Staging")
    assert live.version is not None and live.event_id is not None
    (attested, *_) = await attestation_store.attestations_of(session, model, live.version)
    assert attested.pointer_event_id == live.event_id
    assert attested.manifest_digest == live.digest is not None


async def test_a_promotion_reads_the_run_the_gate_and_the_model_once_each(
    session: AsyncSession, tmp_path: Path, unique: str
) -> None:
    """The run is read once (its row, then params, tags, metrics and model links together,
    no dataset inputs), for the checks and the registration's source check alike; the gate
    with its version, and the model with the run's versions, are one read each; the decision
    is claimed without a read first; a registration that nothing can undo (fingerprinted
    before the transaction, with a digest) takes no savepoint. All of these reads run before
    the transaction, which reads none of them again; a retried key is not looked for before
    it (the claim finds it)."""
    storage = LocalStorage(tmp_path / "artifacts")
    keyring = AttestationKeyring(Signer.from_private(Ed25519PrivateKey.generate()))
    model = f"qr-{unique}"
    await make_gate(session, model, "Staging", metrics=["auc >= 0.5"])
    await _promote_statements(session, storage, model, keyring)  # creates the model
    outcome, before, statements = await _promote_statements(session, storage, model, keyring)
    assert outcome == "passed"
    flat, pre = _flat(statements), _flat(before)
    both = pre + flat
    for table in ("runs", "params", "gate_policies"):
        assert len(_reads(both, table)) == 1, (table, both)
        assert not _reads(flat, table), (table, flat)
    assert not _reads(both, "dataset_inputs"), both
    assert not _reads(both, "gate_policy_versions"), both  # joined to the policy's read
    assert not _reads(both, "gate_decisions"), both  # no retry read; claimed by its insert
    assert not [s for s in flat if "savepoint" in s], flat
    # The model is read once with the run's versions, before; the transaction's one read is
    # the move's own, locking it (FOR NO KEY UPDATE on PostgreSQL).
    joined = [s for s in _reads(both, "registered_models") if "join model_versions" in s]
    assert len(joined) == 1 and joined[0] in pre, both
    assert len([s for s in _reads(flat, "registered_models") if "join" not in s]) == 1, flat


async def test_an_archiving_transition_runs_a_fixed_small_number_of_statements(
    session: AsyncSession, unique: str
) -> None:
    name = await make_model(session, f"qt-{unique}")
    run_id = await make_registry_run(session)
    for _ in range(2):
        await make_version(session, name, run_id=run_id, stage="Production")
    await session.run_sync(audit_store.can_append_in_one_call)  # probed once per connection
    with count_queries(session) as statements:
        moved = await registry.transition_stage(session, name, "1", "Production", True, actor=ACTOR)
        await session.run_sync(audit.write_pending)
    assert moved.current_stage == "Production"
    assert len(statements) <= TRANSITION_STATEMENTS[dialect_name(session)], len(statements)
