"""Deliveries through receiver outages: a hung receiver delays only itself, a subscription that
keeps failing is disabled (visibly, with an event) and loses nothing, and every dead delivery
of a subscription can be sent again at once."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from tests.conftest import REPO_ROOT, LiveServer, stop_server
from tests.gates.events_support import (
    assert_signed,
    deliveries,
    events_server,
    migrated_database,
    mlflow_client,
    mlgate,
    new_version,
    subscribe,
    wait_settled,
)
from tests.gates.webhook_receiver import Received, receiving, wait_until
from tracking.core.db import Database
from tracking.core.settings import Settings

pytestmark = [pytest.mark.compat, pytest.mark.slow]


def _model() -> str:
    return f"out-{uuid.uuid4().hex[:10]}"


def _tag_values(requests: list[Received]) -> list[str]:
    return [r.json["data"]["value"] for r in requests]


async def _execute(url: str, sql: str, **params: Any) -> None:
    db = Database(url, pool_size=1)
    try:
        async with db.write() as s:
            await s.execute(text(sql), params)
    finally:
        await db.dispose()


def test_default_schedule_keeps_retrying_through_a_day_long_outage(
    make_database: Any, tmp_path: Path
) -> None:
    """Before: 8 attempts from 2 s, doubling, so a receiver down for four minutes lost every
    delivery. Time is fast-forwarded by making each scheduled retry due at once."""
    url = migrated_database(make_database, "schedule")
    server = events_server(
        url, tmp_path, MLGATE_WEBHOOK_RETRY_SCHEDULE=Settings().webhook_retry_schedule
    )
    try:
        name = _model()
        client = mlflow_client(server)
        client.create_registered_model(name)
        version = new_version(client, name)
        with receiving(lambda _, __: (503, {})) as receiver:
            sub_id, _ = subscribe(server, receiver.url, ["model_version_tag.set"], model_name=name)
            client.set_model_version_tag(name, version, "k", "v")
            delays: list[int] = []
            for attempt in range(1, 9):
                receiver.wait_for(attempt)
                row = wait_until(
                    lambda n=attempt: (
                        (d := deliveries(server, sub_id)[0])["total_attempts"] == n
                        and d["status"] in ("failed", "dead")
                        and d
                    ),
                    what=f"attempt {attempt} to be recorded",
                )
                if row["status"] == "dead":
                    break
                delays.append(row["next_attempt_at"] - row["updated_at"])
                # Fast-forward: the scheduled retry is due now.
                asyncio.run(
                    _execute(
                        url,
                        "UPDATE webhook_deliveries SET next_attempt_at = :now "
                        "WHERE delivery_id = :id",
                        now=int(time.time() * 1000),
                        id=row["delivery_id"],
                    )
                )
        assert row["status"] == "dead" and row["total_attempts"] == 8
        minute, hour = 60_000, 3_600_000
        nominal = [5_000, 5 * minute, 30 * minute, 2 * hour, 5 * hour, 10 * hour, 10 * hour]
        assert len(delays) == len(nominal)
        for got, want in zip(delays, nominal, strict=True):
            assert 0.9 * want <= got <= 1.1 * want, (got, want)
        assert sum(delays) >= 24 * hour
    finally:
        stop_server(server)


@pytest.fixture
def hung_server(make_database: Any, tmp_path: Path) -> Iterator[LiveServer]:
    # Each send to a receiver that never answers takes the full 30 s timeout.
    url = migrated_database(make_database, "hung")
    live = events_server(url, tmp_path, MLGATE_WEBHOOK_TIMEOUT="30")
    yield live
    stop_server(live)


def test_a_hung_receiver_delays_only_its_own_deliveries(hung_server: LiveServer) -> None:
    name = _model()
    client = mlflow_client(hung_server)
    client.create_registered_model(name)
    version = new_version(client, name)
    release = threading.Event()

    def hang(_: Received, __: int) -> tuple[int, dict[str, str]]:
        release.wait(60)
        return 200, {}

    with receiving(hang) as hung, receiving() as healthy:
        subscribe(hung_server, hung.url, ["model_version_tag.set"], model_name=name, name="hung")
        _, secret = subscribe(
            hung_server, healthy.url, ["model_version_tag.set"], model_name=name, name="healthy"
        )
        try:
            count = 6
            started = time.monotonic()
            for i in range(count):
                client.set_model_version_tag(name, version, "step", str(i))
            # Before, every batch waited for the hung send's 30 s timeout: the healthy receiver
            # got one event per 30 s. Now all of them arrive within seconds.
            got = healthy.wait_for(count, timeout=12)
            elapsed = time.monotonic() - started
            assert elapsed < 12, elapsed
            assert _tag_values(got) == [str(i) for i in range(count)]
            for request in got:
                assert_signed(secret, request)
            # The hung subscription is still on its first event: order holds for it too.
            assert _tag_values(hung.requests) == ["0"]
        finally:
            release.set()


@pytest.fixture
def failing_server(make_database: Any, tmp_path: Path) -> Iterator[LiveServer]:
    # Disabled after about one second of nothing but failures (three attempts per delivery).
    url = migrated_database(make_database, "failing")
    live = events_server(url, tmp_path, MLGATE_WEBHOOK_DISABLE_AFTER_HOURS="0.0003")
    yield live
    stop_server(live)


def _subscription(server: LiveServer, sub_id: str) -> dict[str, Any]:
    found: dict[str, Any] = mlgate(server, "GET", f"subscriptions/{sub_id}")["subscription"]
    return found


def test_a_subscription_that_keeps_failing_is_disabled_visibly_and_loses_nothing(
    failing_server: LiveServer,
) -> None:
    server = failing_server
    name = _model()
    client = mlflow_client(server)
    client.create_registered_model(name)
    version = new_version(client, name)
    healthy = {"now": False}

    def outage(_: Received, __: int) -> tuple[int, dict[str, str]]:
        return (200, {}) if healthy["now"] else (503, {})

    with receiving(outage) as receiver, receiving() as watcher:
        sub_id, secret = subscribe(
            server, receiver.url, ["model_version_tag.set"], model_name=name, name="down"
        )
        subscribe(
            server,
            watcher.url,
            ["subscription.disabled", "subscription.enabled"],
            name="watcher",
        )
        for i in range(5):
            client.set_model_version_tag(name, version, "step", str(i))

        disabled = wait_until(
            lambda: (s := _subscription(server, sub_id))["status"] == "disabled" and s,
            what="the failing subscription to be disabled",
        )
        assert "failed" in disabled["disabled_reason"]
        assert disabled["auto_disabled_at"] >= disabled["failing_since"] > 0
        # Whoever watches subscriptions hears about it.
        event = watcher.wait_for(1)[0].json
        assert event["type"] == "subscription.disabled"
        assert event["data"]["subscription_id"] == sub_id
        assert event["data"]["reason"] == disabled["disabled_reason"]
        subject = f"subscription:{sub_id}"
        entries = mlgate(server, "GET", "audit", params={"subject": subject})["entries"]
        assert [(e["kind"], e["actor"]) for e in entries] == [("subscription.disabled", "system")]

        # Nothing is dropped: what has not died stays queued, and new events still queue.
        client.set_model_version_tag(name, version, "step", "5")
        log = {d["delivery_id"]: d for d in deliveries(server, sub_id)}
        assert len(log) == 6
        statuses = sorted(d["status"] for d in log.values())
        assert "succeeded" not in statuses and "pending" in statuses
        tried = len(receiver.requests)
        time.sleep(0.5)  # a disabled subscription gets no attempts (the worker polls at 50 ms)
        assert len(receiver.requests) == tried

        # The receiver is back; enabling resumes the queue in order, then the dead ones are
        # sent again, all at once, under their own delivery ids.
        healthy["now"] = True
        enabled = mlgate(server, "PATCH", f"subscriptions/{sub_id}", json={"status": "active"})
        assert enabled["subscription"]["status"] == "active"
        assert "disabled_reason" not in enabled["subscription"]
        dead_ids = [d for d, row in log.items() if row["status"] == "dead"]
        open_count = len(log) - len(dead_ids)
        resumed = _tag_values(receiver.wait_for(tried + open_count)[tried:])
        # The open ones only, oldest first.
        assert resumed == sorted(resumed, key=int) and len(set(resumed)) == open_count
        assert watcher.wait_for(2)[1].json["type"] == "subscription.enabled"

        answer = mlgate(server, "POST", f"subscriptions/{sub_id}/redeliver-dead")
        assert answer["requeued"] == len(dead_ids) >= 1
        final = wait_until(
            lambda: (
                (found := deliveries(server, sub_id))
                and all(d["status"] == "succeeded" for d in found)
                and found
            ),
            what="every delivery to succeed",
        )
        assert len(final) == 6
        again = receiver.requests[tried + open_count :]
        assert sorted(r.headers["webhook-id"] for r in again) == sorted(dead_ids)
        # Every event reached the receiver after all, each with its original delivery id.
        delivered = {r.headers["webhook-id"] for r in receiver.requests[tried:]}
        assert delivered == set(log)
        for request in receiver.requests:
            assert_signed(secret, request)
        entries = mlgate(server, "GET", "audit", params={"subject": subject})["entries"]
        # Newest first; the enabling and the redelivery are the administrator's (anonymous
        # here: this server runs without auth).
        assert [(e["kind"], e["actor"]) for e in entries] == [
            ("subscription.redelivered_dead", "anonymous"),
            ("subscription.enabled", "anonymous"),
            ("subscription.disabled", "system"),
        ]
        assert entries[0]["payload"]["count"] == len(dead_ids)


def test_redeliver_dead_of_an_unknown_subscription_is_a_404(failing_server: LiveServer) -> None:
    r = httpx.post(f"{failing_server.url}/api/2.0/mlgate/subscriptions/nope/redeliver-dead")
    assert r.status_code == 404 and r.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"


def _mlgate_cli(*args: str, database_url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gates.server", *args, "--database-url", database_url],
        cwd=REPO_ROOT,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_redelivers_every_dead_delivery_and_disables_and_enables(
    make_database: Any, tmp_path: Path
) -> None:
    url = migrated_database(make_database, "cli-dead")
    server = events_server(url, tmp_path)
    try:
        name = _model()
        client = mlflow_client(server)
        client.create_registered_model(name)
        version = new_version(client, name)
        healthy = {"now": False}

        def outage(_: Received, __: int) -> tuple[int, dict[str, str]]:
            return (200, {}) if healthy["now"] else (500, {})

        with receiving(outage) as receiver:
            sub_id, _ = subscribe(server, receiver.url, ["model_version_tag.set"], model_name=name)
            for i in range(3):
                client.set_model_version_tag(name, version, "step", str(i))
            dead = wait_settled(server, sub_id, 3)
            assert {d["status"] for d in dead} == {"dead"}
            tried = len(receiver.requests)

            healthy["now"] = True
            done = _mlgate_cli("subscriptions", "redeliver-dead", sub_id, database_url=url)
            assert done.returncode == 0, done.stderr
            assert "3 dead deliveries" in done.stdout
            again = receiver.wait_for(tried + 3)[tried:]
            # The oldest first, under the delivery ids they had.
            assert _tag_values(again) == ["0", "1", "2"]
            assert [r.headers["webhook-id"] for r in again] == [
                d["delivery_id"] for d in reversed(dead)
            ]
            wait_settled(server, sub_id, 3)

            off = _mlgate_cli("subscriptions", "disable", sub_id, database_url=url)
            assert off.returncode == 0, off.stderr
            listed = _mlgate_cli("subscriptions", "list", database_url=url)
            assert f"{sub_id}  disabled" in listed.stdout
            assert "disabled by cli" in listed.stdout
            on = _mlgate_cli("subscriptions", "enable", sub_id, database_url=url)
            assert on.returncode == 0, on.stderr
            assert mlgate(server, "GET", f"subscriptions/{sub_id}")["subscription"]["status"] == (
                "active"
            )
        entries = mlgate(server, "GET", "audit", params={"subject": f"subscription:{sub_id}"})
        assert [(e["kind"], e["actor"]) for e in entries["entries"]] == [
            ("subscription.enabled", "cli"),
            ("subscription.disabled", "cli"),
            ("subscription.redelivered_dead", "cli"),
        ]
        missing = _mlgate_cli("subscriptions", "enable", "nope", database_url=url)
        assert missing.returncode == 1 and "not found" in missing.stderr
    finally:
        stop_server(server)


def test_server_refuses_to_start_with_a_malformed_retry_schedule(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "gates.server", "server", "--no-db-upgrade"],
        cwd=REPO_ROOT,
        env={
            **os.environ,
            "MLGATE_DATABASE_URL": f"sqlite:///{tmp_path / 'unused.db'}",
            "MLGATE_WEBHOOK_RETRY_SCHEDULE": "5s,soon",
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "MLGATE_WEBHOOK_RETRY_SCHEDULE" in done.stderr and "'soon'" in done.stderr
