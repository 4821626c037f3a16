"""The outbox: events commit with their change, fan out to matching subscriptions, and each
subscription's oldest open delivery is the only one a worker can claim."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from gates.events import service, store
from gates.events.config import EventsConfig, parse_retry_schedule
from gates.events.models import OutboxEvent, WebhookDelivery
from gates.events.schemas import SubscriptionCreate
from registry import events as registry_events
from registry import service as registry
from tests.gates.events_support import migrated_database
from tests.registry.factories import ACTOR, make_model, make_version
from tracking.core.db import Database
from tracking.core.settings import Settings

CONFIG = EventsConfig.from_settings(Settings(webhook_allowlist="127.0.0.1/32"))


async def _subscribe(s: AsyncSession, events: list[str], model: str | None = None) -> str:
    sub, _ = await service.create_subscription(
        s,
        SubscriptionCreate(name="t", url="http://127.0.0.1:9/h", events=events, model_name=model),
        actor=ACTOR,
        config=CONFIG,
    )
    return sub.id


async def _count(s: AsyncSession, model: Any, **where: Any) -> int:
    stmt = select(func.count()).select_from(model).filter_by(**where)
    return int((await s.execute(stmt)).scalar_one())


async def test_an_event_rolls_back_with_the_change_that_emitted_it(session: AsyncSession) -> None:
    sub = await _subscribe(session, ["gate.decided"])
    before = await _count(session, OutboxEvent, type="gate.decided")
    with pytest.raises(RuntimeError):
        async with session.begin_nested():
            await service.emit(session, "gate.decided", {"name": "m", "outcome": "passed"})
            raise RuntimeError("the decision failed after the event was written")
    assert await _count(session, OutboxEvent, type="gate.decided") == before
    assert await _count(session, WebhookDelivery, subscription_id=sub) == 0

    event_id = await service.emit(session, "gate.decided", {"name": "m", "outcome": "passed"})
    assert await _count(session, OutboxEvent, event_id=event_id) == 1
    assert await _count(session, WebhookDelivery, subscription_id=sub) == 1


@pytest.mark.usefixtures("app_hooks")
async def test_events_fan_out_by_type_and_model_filter(session: AsyncSession) -> None:
    name = await make_model(session)
    everything = await _subscribe(session, ["stage.transitioned", "alias.moved"])
    only_this = await _subscribe(session, ["stage.transitioned"], model=name)
    other_model = await _subscribe(session, ["stage.transitioned"], model="someone-else")
    await make_version(session, name, stage="Staging")
    await registry.set_alias(session, name, "champion", "1", actor=ACTOR)
    assert await _count(session, WebhookDelivery, subscription_id=everything) == 2
    assert await _count(session, WebhookDelivery, subscription_id=only_this) == 1
    assert await _count(session, WebhookDelivery, subscription_id=other_model) == 0


def test_registry_events_map_to_mlgate_and_mlflow_names() -> None:
    moved = registry_events.AliasMoved("m", "champion", None, 3, "alice", None, 1)
    assert [t for t, _ in service.registry_event_payloads(moved)] == [
        "alias.moved",
        "model_version_alias.created",
    ]
    gone = registry_events.AliasMoved("m", "champion", 3, None, "alice", None, 1)
    assert service.registry_event_payloads(gone)[1] == (
        "model_version_alias.deleted",
        {"name": "m", "alias": "champion"},
    )


async def test_emit_refuses_malformed_event_types(session: AsyncSession) -> None:
    for bad in ("", "decided", "Gate.Decided", "gate decided", "x" * 70 + ".y"):
        with pytest.raises(ValueError, match="event type"):
            await service.emit(session, bad, {})


async def test_only_each_subscriptions_oldest_open_delivery_is_claimable(
    session: AsyncSession,
) -> None:
    a = await _subscribe(session, ["gate.decided"], model="claim-a")
    b = await _subscribe(session, ["gate.decided"], model="claim-b")
    for i in range(3):
        await service.emit(session, "gate.decided", {"name": "claim-a", "i": i})
        await service.emit(session, "gate.decided", {"name": "claim-b", "i": i})
    heads: dict[str, list[int]] = {a: [], b: []}
    rows = (
        await session.execute(
            select(WebhookDelivery.id, WebhookDelivery.subscription_id)
            .where(WebhookDelivery.subscription_id.in_([a, b]))
            .order_by(WebhookDelivery.id)
        )
    ).all()
    for pk, sub in rows:
        heads[sub].append(pk)

    now = 10**13  # far in the future: every delivery is due
    claimed = await store.claim(session, now=now, lease_until=now + 60_000, worker="w1", limit=50)
    assert set(claimed) == {heads[a][0], heads[b][0]}
    # Leased: nobody else gets them, and nothing behind them moves.
    assert (
        await store.claim(session, now=now, lease_until=now + 60_000, worker="w2", limit=50) == []
    )
    # A's head succeeds: A's next becomes claimable; B's head fails and waits for its retry.
    await store.finish_attempt(session, heads[a][0], "w1", {"status": "succeeded"})
    await store.finish_attempt(
        session, heads[b][0], "w1", {"status": "failed", "next_attempt_at": now + 5_000}
    )
    assert await store.claim(session, now=now, lease_until=now + 60_000, worker="w2", limit=50) == [
        heads[a][1]
    ]
    # After the lease runs out an unfinished claim is claimable again (at least once).
    later = now + 61_000
    again = await store.claim(session, now=later, lease_until=later + 1, worker="w3", limit=50)
    assert set(again) == {heads[a][1], heads[b][0]}


async def test_concurrent_claimers_never_share_a_delivery_or_a_subscription(
    make_database: Any,
) -> None:
    # Alembic runs its own event loop: on a thread, off this test's loop.
    url = await asyncio.to_thread(migrated_database, make_database, "claims")
    setup = Database(url, pool_size=2)
    async with setup.write() as s:
        subs = [await _subscribe(s, ["gate.decided"], model=f"m{i}") for i in range(4)]
        for round_ in range(5):
            for i in range(4):
                await service.emit(s, "gate.decided", {"name": f"m{i}", "round": round_})
    await setup.dispose()

    # Separate engines, as separate replicas would have.
    workers = [Database(url, pool_size=2) for _ in range(3)]
    try:
        now = 10**13
        delivered: list[int] = []
        for _ in range(40):

            async def claim(db: Database, name: str) -> list[int]:
                async with db.write() as s:
                    return await store.claim(
                        s, now=now, lease_until=now + 60_000, worker=name, limit=10
                    )

            batches = await asyncio.gather(*(claim(db, f"w{i}") for i, db in enumerate(workers)))
            claimed = [pk for batch in batches for pk in batch]
            assert len(claimed) == len(set(claimed)), "a delivery was claimed twice"
            async with workers[0].read() as s:
                owners = (
                    await s.execute(
                        select(WebhookDelivery.subscription_id).where(
                            WebhookDelivery.id.in_(claimed)
                        )
                    )
                ).scalars()
                per_sub = list(owners)
            assert len(per_sub) == len(set(per_sub)), "two heads of one subscription at once"
            if not claimed:
                break
            async with workers[0].write() as s:
                for pk, batch_worker in [
                    (pk, f"w{i}") for i, batch in enumerate(batches) for pk in batch
                ]:
                    await store.finish_attempt(s, pk, batch_worker, {"status": "succeeded"})
            delivered += claimed
        assert len(delivered) == 20 and len(set(delivered)) == 20
        async with workers[0].read() as s:
            for sub in subs:
                assert await store.count_deliveries(s, sub, "succeeded") == 5
    finally:
        for db in workers:
            await db.dispose()


def test_default_retry_schedule_outlasts_a_day_long_outage() -> None:
    hour = 3_600_000
    # Standard Webhooks' schedule: at once, then 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
    assert CONFIG.retry_delays == (
        5_000,
        300_000,
        1_800_000,
        2 * hour,
        5 * hour,
        10 * hour,
        10 * hour,
    )
    assert CONFIG.max_attempts == 8
    for _ in range(20):
        # Even with every delay jittered to its shortest, the last attempt is a day later.
        waited = 0
        failed = 1
        while (delay := CONFIG.retry_delay_ms(failed)) is not None:
            waited += delay
            failed += 1
        assert failed == 8
        assert waited >= 24 * hour


def test_retry_delays_are_jittered_within_ten_percent_and_end_the_schedule() -> None:
    for attempt, nominal in enumerate(CONFIG.retry_delays, start=1):
        delays = {CONFIG.retry_delay_ms(attempt) for _ in range(50)}
        assert all(d is not None and 0.9 * nominal <= d <= 1.1 * nominal for d in delays)
        assert len(delays) > 1  # jittered
    assert CONFIG.retry_delay_ms(8) is None  # the 8th failure is final: dead


@pytest.mark.parametrize(
    ("text", "delays"),
    [
        ("", ()),
        ("250ms, 2s,1.5m,1h,1d", (250, 2_000, 90_000, 3_600_000, 86_400_000)),
    ],
)
def test_retry_schedule_setting_is_parsed(text: str, delays: tuple[int, ...]) -> None:
    assert parse_retry_schedule(text) == delays


@pytest.mark.parametrize("text", ["5", "5x", "-1s", "8d", "soon"])
def test_bad_retry_schedule_is_refused_with_the_setting_named(text: str) -> None:
    with pytest.raises(ValueError, match="MLGATE_WEBHOOK_RETRY_SCHEDULE"):
        parse_retry_schedule(text)


async def test_a_failing_run_disables_a_subscription_once_and_a_success_ends_the_run(
    session: AsyncSession,
) -> None:
    config = dataclasses.replace(CONFIG, disable_after_ms=1_000)
    sub = await _subscribe(session, ["gate.decided"], model="watched")
    health = service.record_subscription_health

    assert not await health(session, sub, ok=False, now=10_000, config=config)
    assert (await service.get_subscription(session, sub)).failing_since == 10_000
    # A success ends the run: an hour of failures before it no longer counts.
    assert not await health(session, sub, ok=True, now=10_500, config=config)
    assert (await service.get_subscription(session, sub)).failing_since is None

    assert not await health(session, sub, ok=False, now=20_000, config=config)
    assert not await health(session, sub, ok=False, now=20_900, config=config)
    assert await health(session, sub, ok=False, now=21_000, config=config)
    # Another replica recording a later failure of the same run disables nothing twice.
    assert not await health(session, sub, ok=False, now=22_000, config=config)
    shown = await service.get_subscription(session, sub)
    assert shown.status == "disabled" and shown.auto_disabled_at == 21_000
    assert shown.disabled_reason and "failed" in shown.disabled_reason
    disabled_events = (
        await session.execute(
            select(OutboxEvent.payload).where(OutboxEvent.type == "subscription.disabled")
        )
    ).scalars()
    assert [json.loads(p)["subscription_id"] for p in disabled_events] == [sub]

    # Automatically disabled, it keeps queueing; disabled by hand, it does not.
    await service.emit(session, "gate.decided", {"name": "watched"})
    assert await _count(session, WebhookDelivery, subscription_id=sub) == 1
    await service.set_subscription_enabled(session, sub, False, actor="ops")
    await service.emit(session, "gate.decided", {"name": "watched"})
    assert await _count(session, WebhookDelivery, subscription_id=sub) == 1
    assert (await service.get_subscription(session, sub)).disabled_reason == "disabled by ops"

    enabled = await service.set_subscription_enabled(session, sub, True, actor="ops")
    assert enabled.status == "active"
    assert (enabled.failing_since, enabled.auto_disabled_at, enabled.disabled_reason) == (
        None,
        None,
        None,
    )


async def test_a_disabling_threshold_of_zero_never_disables(session: AsyncSession) -> None:
    config = dataclasses.replace(CONFIG, disable_after_ms=0)
    sub = await _subscribe(session, ["gate.decided"])
    for now in (1, 10**9, 10**12):
        assert not await service.record_subscription_health(
            session, sub, ok=False, now=now, config=config
        )
    assert (await service.get_subscription(session, sub)).status == "active"


async def _events_of(s: AsyncSession, event_ids: list[str]) -> list[str]:
    """The event ids among ``event_ids`` in the outbox, in outbox (id) order."""
    stmt = (
        select(OutboxEvent.event_id)
        .where(OutboxEvent.event_id.in_(event_ids))
        .order_by(OutboxEvent.id)
    )
    return [str(e) for e in (await s.execute(stmt)).scalars()]


async def _fan_out(s: AsyncSession, event_ids: list[str]) -> list[tuple[str, str]]:
    stmt = (
        select(OutboxEvent.event_id, WebhookDelivery.subscription_id)
        .join(WebhookDelivery, WebhookDelivery.event_pk == OutboxEvent.id)
        .where(OutboxEvent.event_id.in_(event_ids))
    )
    return sorted((str(e), str(sub)) for e, sub in (await s.execute(stmt)).all())


async def test_batched_events_are_written_at_the_end_in_order_with_the_same_fan_out(
    session: AsyncSession,
) -> None:
    """A batch holds its events until its end, then writes them in the order emitted, each to
    the subscriptions one event written alone reaches (type, model filter, none)."""
    everything = await _subscribe(session, ["model_version.created", "gate.decided"])
    only_m = await _subscribe(session, ["gate.decided"], model="m")
    await _subscribe(session, ["gate.decided"], model="other")
    emitted = [
        ("model_version.created", {"name": "m", "version": "1"}),
        ("gate.decided", {"model": "m"}),  # no name: no model, so model-filtered ones skip it
        ("gate.decided", {"name": "m", "outcome": "passed"}),
        ("stage.transitioned", {"name": "m"}),  # nobody subscribes to it
    ]
    async with service.batched(session):
        held = [await service.emit(session, t, p) for t, p in emitted]
        assert await _events_of(session, held) == []  # held, not written yet
        assert service.held_count(session) == len(emitted)
    assert await _events_of(session, held) == held
    expected = sorted(
        [(held[0], everything), (held[1], everything), (held[2], everything), (held[2], only_m)]
    )
    assert await _fan_out(session, held) == expected
    # One event written alone reaches the same subscriptions.
    alone = await service.emit(session, "gate.decided", {"name": "m", "outcome": "passed"})
    assert sorted(sub for _, sub in await _fan_out(session, [alone])) == sorted(
        sub for e, sub in expected if e == held[2]
    )


async def test_a_failed_batch_writes_nothing_and_a_rolled_back_savepoint_drops_its_events(
    session: AsyncSession,
) -> None:
    sub = await _subscribe(session, ["gate.decided"])
    with pytest.raises(RuntimeError):
        async with service.batched(session):
            failed = await service.emit(session, "gate.decided", {"name": "m"})
            raise RuntimeError("the promotion failed after emitting")
    assert await _events_of(session, [failed]) == []
    assert service.held_count(session) == 0  # nothing left held for the next emit
    async with service.batched(session):
        kept = await service.emit(session, "gate.decided", {"name": "m", "n": 1})
        mark = service.held_count(session)
        savepoint = await session.begin_nested()
        dropped = await service.emit(session, "gate.decided", {"name": "m", "n": 2})
        await savepoint.rollback()
        service.drop_held_after(session, mark)
        after = await service.emit(session, "gate.decided", {"name": "m", "n": 3})
    assert await _events_of(session, [kept, dropped, after]) == [kept, after]
    assert await _count(session, WebhookDelivery, subscription_id=sub) == 2
