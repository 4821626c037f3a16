"""Scale-out proof: three replicas behind haproxy on one database and S3; kill -9 one under load.

Every write the clients saw acknowledged (200) is readable afterwards, the registry invariants
hold, every event reaches the webhook receiver at least once (a repeat only with the same
delivery id), and the survivors keep serving. The figures are printed for README.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from gates.server import migrate
from tests.conftest import LiveServer, free_port, start_server, stop_server
from tests.gates.webhook_receiver import Received, Receiver, receiving, wait_until
from tests.registry import test_artifacts

pytestmark = pytest.mark.slow
BUCKET, S3_ENV = test_artifacts.BUCKET, test_artifacts.S3_ENV
moto_endpoint = test_artifacts.moto_endpoint

REPLICAS = 3
WRITERS = 6
LOAD_SECONDS = 12.0
KILL_AFTER = 4.0
API = "/api/2.0/mlflow"
ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts"
MLGATE = "/api/2.0/mlgate"
EVENTS = ["model_version.created", "stage.transitioned", "alias.moved"]
REPLICA_ENV = {
    "MLGATE_WEBHOOK_ALLOWLIST": "127.0.0.1/32",
    "MLGATE_WEBHOOK_POLL_INTERVAL": "0.1",
    "MLGATE_WEBHOOK_RETRY_SCHEDULE": "200ms,400ms,1s,2s",
    # A send cut short by the kill is retried when its lease ends: timeout x 4 + 30 s.
    "MLGATE_WEBHOOK_TIMEOUT": "1",
}
HAPROXY_CONFIG = """\
global
    maxconn 512
defaults
    mode http
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    # A request that could not be sent (connection refused by a dead replica) goes elsewhere;
    # nothing already sent is ever replayed (POSTs are not idempotent).
    retries 3
    option redispatch
frontend mlgate
    bind 127.0.0.1:{port}
    default_backend replicas
backend replicas
    balance roundrobin
    option httpchk
    http-check send meth GET uri /health ver HTTP/1.1 hdr Host 127.0.0.1
    default-server inter 300ms fall 2 rise 2
{servers}
"""


@dataclass
class Outcome:
    at: float
    op: str
    status: int | str  # HTTP status, or the exception name when no answer came
    latency: float


@dataclass
class Acked:
    """What each writer saw acknowledged, to be read back afterwards."""

    runs: dict[str, dict[str, Any]] = field(default_factory=dict)  # run_id -> metric, artifact
    versions: dict[tuple[str, str], str] = field(default_factory=dict)  # (model, v) -> digest
    stages: list[tuple[str, str, float]] = field(default_factory=list)  # (model, version, at)
    aliases: dict[str, list[tuple[str, bool]]] = field(default_factory=dict)


class HoldOneDelivery:
    """Once armed, holds the next webhook request unanswered until released.

    The test kills the replica that sent it while it waits for the answer: a send cut short
    after the receiver already has it, so at-least-once delivery must resend the same id.
    """

    def __init__(self) -> None:
        self.armed = threading.Event()
        self.held = threading.Event()
        self.release = threading.Event()
        self.request: Received | None = None

    def __call__(self, got: Received, _: int) -> tuple[int, dict[str, str]]:
        if self.armed.is_set() and not self.held.is_set():
            self.request = got
            self.held.set()
            self.release.wait(timeout=60)
        return 200, {}


def _socket_owner(local_port: int, remote_port: int, pids: list[int]) -> int:
    """The pid (among ``pids``) owning the loopback TCP socket local_port -> remote_port."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        cols = line.split()
        local, remote = cols[1].split(":"), cols[2].split(":")
        if int(local[1], 16) == local_port and int(remote[1], 16) == remote_port:
            inodes.add(f"socket:[{cols[9]}]")
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                if os.readlink(fd) in inodes:
                    return pid
            except OSError:
                continue
    raise AssertionError(f"no replica owns the socket from port {local_port}")


def _haproxy() -> str:
    found = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/sbin")
    if found is None:
        pytest.fail("haproxy is not installed: run `make haproxy` (Debian's package)")
    return found


@contextmanager
def load_balancer(replicas: list[LiveServer], workdir: Path) -> Iterator[str]:
    port = free_port()
    servers = "\n".join(
        f"    server r{i} {r.url.removeprefix('http://')} check" for i, r in enumerate(replicas)
    )
    config = workdir / "haproxy.cfg"
    config.write_text(HAPROXY_CONFIG.format(port=port, servers=servers))
    log = workdir / "haproxy.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [_haproxy(), "-db", "-f", str(config)], stdout=out, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _healthy(url), timeout=20, what=f"haproxy on {url}")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


class Writer(threading.Thread):
    """One client: a bounded loop of run, metric, artifact, version, stage move, alias."""

    def __init__(self, lb: str, model: str, experiment_id: str, stop_at: float) -> None:
        super().__init__(daemon=True)
        self.lb, self.model, self.experiment_id, self.stop_at = lb, model, experiment_id, stop_at
        self.outcomes: list[Outcome] = []
        self.acked = Acked()
        self.failure: BaseException | None = None

    def call(self, op: str, method: str, path: str, **kw: Any) -> httpx.Response | None:
        start = time.monotonic()
        try:
            response = self.http.request(method, path, **kw)
        except httpx.HTTPError as exc:
            self.outcomes.append(Outcome(start, op, type(exc).__name__, time.monotonic() - start))
            return None
        self.outcomes.append(Outcome(start, op, response.status_code, time.monotonic() - start))
        return response

    def run(self) -> None:
        try:
            with httpx.Client(base_url=self.lb, timeout=15) as self.http:
                step = 0
                while time.monotonic() < self.stop_at:
                    self.once(step)
                    step += 1
        except BaseException as exc:
            self.failure = exc

    def once(self, step: int) -> None:
        r = self.call(
            "create run", "POST", f"{API}/runs/create", json={"experiment_id": self.experiment_id}
        )
        if r is None or r.status_code != 200:
            return
        info = r.json()["run"]["info"]
        run_id, root = info["run_id"], info["artifact_uri"].removeprefix("mlflow-artifacts:/")
        self.acked.runs[run_id] = {}
        metric = {
            "run_id": run_id,
            "key": "loss",
            "value": 1.0 / (step + 1),
            "timestamp": 1,
            "step": step,
        }
        r = self.call("log metric", "POST", f"{API}/runs/log-metric", json=metric)
        if r is not None and r.status_code == 200:
            self.acked.runs[run_id]["loss"] = metric["value"]
        body = f"model {self.model} step {step} run {run_id}\n".encode()
        r = self.call("upload artifact", "PUT", f"{ARTIFACTS}/{root}/model/MLmodel", content=body)
        if r is None or r.status_code != 200:
            return
        self.acked.runs[run_id]["artifact"] = (root, body)
        r = self.call(
            "create version",
            "POST",
            f"{API}/model-versions/create",
            json={"name": self.model, "source": f"runs:/{run_id}/model", "run_id": run_id},
        )
        if r is None or r.status_code != 200:
            return
        version = r.json()["model_version"]["version"]
        self.acked.versions[(self.model, version)] = hashlib.sha256(body).hexdigest()
        r = self.call(
            "transition stage",
            "POST",
            f"{API}/model-versions/transition-stage",
            json={
                "name": self.model,
                "version": version,
                "stage": "Production",
                "archive_existing_versions": True,
            },
        )
        if r is not None and r.status_code == 200:
            self.acked.stages.append((self.model, version, time.monotonic()))
        r = self.call(
            "set alias",
            "POST",
            f"{API}/registered-models/alias",
            json={"name": self.model, "alias": "champion", "version": version},
        )
        acked = r is not None and r.status_code == 200
        self.acked.aliases.setdefault(self.model, []).append((version, acked))


def _all_deliveries(lb: str, subscription_id: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    token = None
    while True:
        params: dict[str, Any] = {"subscription_id": subscription_id, "max_results": 1000}
        if token:
            params["page_token"] = token
        answer = httpx.get(f"{lb}{MLGATE}/deliveries", params=params, timeout=30)
        assert answer.status_code == 200, answer.text
        found += answer.json()["deliveries"]
        token = answer.json().get("next_page_token")
        if not token:
            return found


def test_killing_one_of_three_replicas_under_load_loses_no_acknowledged_write(
    make_database: Any, moto_endpoint: str, tmp_path: Path
) -> None:
    database_url = make_database("scale")
    migrate.upgrade(database_url)
    unique = uuid.uuid4().hex[:8]
    env = {
        **REPLICA_ENV,
        **S3_ENV,
        "MLGATE_ARTIFACTS_DESTINATION": f"s3://{BUCKET}/scale-{unique}",
        "MLGATE_S3_ENDPOINT_URL": moto_endpoint,
    }
    for i in range(REPLICAS):
        (tmp_path / f"r{i}").mkdir()
    # Started side by side (each waits for its own /health); they share one data folder, and
    # so one audit signing key (its creation is race-safe across processes).
    with ThreadPoolExecutor(REPLICAS) as pool:
        replicas = list(
            pool.map(
                lambda i: start_server(database_url, tmp_path / f"r{i}", extra_env=env),
                range(REPLICAS),
            )
        )
    try:
        hold = HoldOneDelivery()
        with receiving(hold) as receiver, load_balancer(replicas, tmp_path) as lb:
            try:
                figures = _drive(lb, replicas, receiver, hold, unique)
            finally:
                hold.release.set()
    finally:
        for replica in replicas:
            if replica.process.poll() is None:
                stop_server(replica)
    print("\nSCALE-OUT FIGURES " + json.dumps(figures, sort_keys=True))
    for replica in replicas:
        if replica.process.returncode == -signal.SIGKILL:
            continue  # the victim: its log ends where it was killed
        log = replica.log.read_text(errors="replace")
        assert "Traceback" not in log, log[-3000:]


def _drive(
    lb: str, replicas: list[LiveServer], receiver: Receiver, hold: HoldOneDelivery, unique: str
) -> dict[str, Any]:
    created = httpx.post(
        f"{lb}{MLGATE}/subscriptions",
        json={"name": f"scale-{unique}", "url": receiver.url, "events": EVENTS},
        timeout=30,
    )
    assert created.status_code == 200, created.text
    subscription_id = created.json()["subscription"]["id"]
    writers = []
    start = time.monotonic()
    for w in range(WRITERS):
        model = f"scale-{unique}-{w}"
        assert (
            httpx.post(f"{lb}{API}/registered-models/create", json={"name": model}).status_code
            == 200
        )
        exp = httpx.post(f"{lb}{API}/experiments/create", json={"name": model})
        assert exp.status_code == 200, exp.text
        writers.append(Writer(lb, model, exp.json()["experiment_id"], start + LOAD_SECONDS))
    for writer in writers:
        writer.start()

    # Under load, hold the next webhook send and kill -9 the replica that is making it.
    time.sleep(KILL_AFTER)
    hold.armed.set()
    assert hold.held.wait(timeout=30), "no webhook was sent during the load"
    assert hold.request is not None
    pid = _socket_owner(hold.request.peer[1], receiver.port, [r.process.pid for r in replicas])
    victim = next(r for r in replicas if r.process.pid == pid)
    killed_at = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    victim.process.wait(timeout=10)
    hold.release.set()
    for writer in writers:
        writer.join(timeout=LOAD_SECONDS + 60)
        assert not writer.is_alive() and writer.failure is None, writer.failure

    outcomes = [o for w in writers for o in w.outcomes]
    errors = [o for o in outcomes if o.status != 200]
    figures: dict[str, Any] = {
        "backend": os.environ.get("MLGATE_TEST_BACKEND", "sqlite"),
        "requests": len(outcomes),
        "load_seconds": LOAD_SECONDS,
        "errors": len(errors),
        "error_statuses": dict(Counter(str(o.status) for o in errors)),
        # When the failed requests started, in seconds relative to the kill.
        "error_window_s": [
            round(min((o.at - killed_at for o in errors), default=0.0), 2),
            round(max((o.at - killed_at for o in errors), default=0.0), 2),
        ],
        # Failed requests that had already ended when the kill came: not the kill's doing.
        "errors_before_kill": sum(1 for o in errors if o.at + o.latency < killed_at),
        "max_latency_s": round(max(o.latency for o in outcomes), 3),
        "p50_latency_ms": round(sorted(o.latency for o in outcomes)[len(outcomes) // 2] * 1000, 1),
    }
    # Before the kill, nothing failed: every error is a request in flight at or after the kill.
    assert figures["errors_before_kill"] == 0, errors
    # Survivors keep serving: the last seconds of load all succeeded.
    late = [o for o in outcomes if o.at > killed_at + 5]
    assert late and all(o.status == 200 for o in late), [o for o in late if o.status != 200]

    _check_acknowledged_writes(lb, writers)
    figures |= _check_events(lb, subscription_id, receiver, writers)
    figures["all_delivered_s_after_kill"] = round(time.monotonic() - killed_at, 1)
    # The send cut short by the kill came again, from a survivor, with the same delivery id.
    held_id = hold.request.headers["webhook-id"]
    resent = [r for r in receiver.requests if r.headers["webhook-id"] == held_id]
    assert len(resent) >= 2, "the delivery cut short by the kill was never resent"
    figures["killed_replica"] = replicas.index(victim)
    return figures


def _all_versions(http: httpx.Client, model: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    token = None
    while True:
        params: dict[str, Any] = {"filter": f"name='{model}'", "max_results": 200}
        if token:
            params["page_token"] = token
        listed = http.get(f"{API}/model-versions/search", params=params)
        assert listed.status_code == 200, listed.text
        found += listed.json().get("model_versions", [])
        token = listed.json().get("next_page_token")
        if not token:
            return found


def _check_acknowledged_writes(lb: str, writers: list[Writer]) -> None:
    with httpx.Client(base_url=lb, timeout=30) as http:
        for writer in writers:
            acked = writer.acked
            for run_id, seen in acked.runs.items():
                got = http.get(f"{API}/runs/get", params={"run_id": run_id})
                assert got.status_code == 200, got.text
                metrics = {
                    m["key"]: m["value"] for m in got.json()["run"]["data"].get("metrics", [])
                }
                if "loss" in seen:
                    assert metrics.get("loss") == seen["loss"], (run_id, metrics)
                if "artifact" in seen:
                    root, body = seen["artifact"]
                    read = http.get(f"{ARTIFACTS}/{root}/model/MLmodel")
                    assert read.status_code == 200 and read.content == body, run_id
            versions = _all_versions(http, writer.model)
            numbers = [v["version"] for v in versions]
            # Version numbers never repeat, and every acknowledged version is there.
            assert len(numbers) == len(set(numbers)), Counter(numbers)
            for (model, number), digest in acked.versions.items():
                assert number in numbers, (model, number)
                uri = http.get(
                    f"{API}/model-versions/get-download-uri",
                    params={"name": model, "version": number},
                )
                assert uri.status_code == 200, uri.text
                path = uri.json()["artifact_uri"].removeprefix("mlflow-artifacts:/")
                read = http.get(f"{ARTIFACTS}/{path}/MLmodel")
                assert read.status_code == 200, read.text
                assert hashlib.sha256(read.content).hexdigest() == digest
            # At most one Production version (archive_existing_versions), and it is the last
            # acknowledged move or a later one whose answer was lost in the kill.
            production = [v["version"] for v in versions if v["current_stage"] == "Production"]
            assert len(production) <= 1, production
            if acked.stages:
                last = acked.stages[-1][1]
                assert production and int(production[0]) >= int(last), (production, last)
            attempts = acked.aliases.get(writer.model, [])
            acked_at = [i for i, (_, ok) in enumerate(attempts) if ok]
            if acked_at:
                model = http.get(f"{API}/registered-models/get", params={"name": writer.model})
                aliases = {
                    a["alias"]: a["version"]
                    for a in model.json()["registered_model"].get("aliases", [])
                }
                allowed = {v for v, _ in attempts[acked_at[-1] :]}
                assert aliases.get("champion") in allowed, (aliases, allowed)


def _check_events(
    lb: str, subscription_id: str, receiver: Receiver, writers: list[Writer]
) -> dict[str, Any]:
    def settled() -> list[dict[str, Any]] | None:
        found = _all_deliveries(lb, subscription_id)
        return found if found and all(d["status"] == "succeeded" for d in found) else None

    # Polled gently: listing every delivery is itself load on the survivors.
    deadline = time.monotonic() + 75
    while (deliveries := settled()) is None:
        assert time.monotonic() < deadline, "not every delivery succeeded within 75 s"
        time.sleep(1.0)
    got = receiver.requests
    by_delivery: dict[str, set[str]] = defaultdict(set)
    for request in got:
        by_delivery[request.headers["webhook-id"]].add(request.json["id"])
    # A repeat only ever carries the same delivery id: one event per delivery id and back.
    assert all(len(events) == 1 for events in by_delivery.values()), by_delivery
    events_to_ids: dict[str, set[str]] = defaultdict(set)
    for delivery_id, events in by_delivery.items():
        events_to_ids[next(iter(events))].add(delivery_id)
    assert all(len(ids) == 1 for ids in events_to_ids.values())
    # Every outbox event of the subscription reached the receiver at least once.
    assert {d["delivery_id"] for d in deliveries} <= set(by_delivery)
    # Every acknowledged version's creation is among them.
    created = {
        (r.json["data"]["name"], r.json["data"]["version"])
        for r in got
        if r.json["type"] == "model_version.created"
    }
    moved = {
        (r.json["data"]["name"], r.json["data"]["version"])
        for r in got
        if r.json["type"] == "stage.transitioned" and r.json["data"]["to_stage"] == "Production"
    }
    aliased = {
        (r.json["data"]["name"], r.json["data"]["to_version"])
        for r in got
        if r.json["type"] == "alias.moved"
    }
    for writer in writers:
        assert set(writer.acked.versions) <= created
        assert {(model, version) for model, version, _ in writer.acked.stages} <= moved
        assert {
            (writer.model, version)
            for version, ok in writer.acked.aliases.get(writer.model, [])
            if ok
        } <= aliased
    repeats = len(got) - len(by_delivery)
    return {
        "events": len(deliveries),
        "webhook_requests": len(got),
        "duplicate_deliveries": repeats,
    }
