"""Signed checkpoints make the audit trail truncation-evident: deleting the newest rows, altering
or re-hashing rows, or forging a checkpoint all make `mlgate audit verify --checkpoint` fail,
naming the problem; checkpoints land in the local store, S3 and a directory, survive a key
rotation, and two replicas checkpointing at once corrupt nothing."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from gates.audit import service as audit
from gates.audit.checkpoints import PURPOSE, Checkpoint, verify_against
from tests.conftest import REPO_ROOT, LiveServer, start_server, stop_server
from tests.gates.events_support import migrated_database
from tests.registry.test_artifacts import BUCKET, S3_ENV, moto_endpoint, s3_client
from tracking.core import signing
from tracking.core.db import Database

__all__ = ["moto_endpoint"]  # the session fixture, shared with the artifact tests

API = "/api/2.0/mlgate"


# --- helpers -----------------------------------------------------------------------------------


def _mlgate(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gates.server", *args],
        cwd=REPO_ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


async def _seed_async(url: str, count: int, label: str = "seed") -> None:
    db = Database(url, pool_size=1)
    try:
        for i in range(count):
            async with db.write() as s:
                await audit.append(s, label, f"item:{i}", {"i": i}, "seeder")
    finally:
        await db.dispose()


def _seed(url: str, count: int, label: str = "seed") -> None:
    asyncio.run(_seed_async(url, count, label))


def _sql(url: str, sql: str, **params: Any) -> None:
    async def run() -> None:
        db = Database(url, pool_size=1)
        try:
            async with db.write() as s:
                await s.execute(text(sql), params)
        finally:
            await db.dispose()

    asyncio.run(run())


def _rehash_from(url: str, first_seq: int) -> None:
    """What an attacker with database access does after editing a row: re-hash the rest."""

    async def run() -> None:
        db = Database(url, pool_size=1)
        try:
            async with db.write() as s:
                rows = (await s.execute(text("SELECT * FROM audit_log ORDER BY seq"))).all()
                prev = audit.GENESIS_HASH
                for row in rows:
                    if row.seq >= first_seq:
                        digest = audit.entry_hash(
                            prev,
                            seq=row.seq,
                            at=row.at,
                            actor=row.actor,
                            kind=row.kind,
                            subject=row.subject,
                            payload=json.loads(row.payload),
                        )
                        await s.execute(
                            text("UPDATE audit_log SET prev_hash = :p, hash = :h WHERE seq = :s"),
                            {"p": "tmp-" + str(row.seq), "h": digest, "s": row.seq},
                        )
                        # prev_hash is unique: set the real value once the old one is gone.
                        await s.execute(
                            text("UPDATE audit_log SET prev_hash = :p WHERE seq = :s"),
                            {"p": prev, "s": row.seq},
                        )
                        prev = digest
                    else:
                        prev = row.hash
        finally:
            await db.dispose()

    asyncio.run(run())


def _server(url: str, workdir: Path, key: Path, **env: str) -> LiveServer:
    workdir.mkdir(parents=True, exist_ok=True)
    return start_server(
        url,
        workdir,
        extra_env={
            "MLGATE_SIGNING_KEY_FILE": str(key),
            "MLGATE_AUDIT_CHECKPOINT_INTERVAL": "0",
            "MLGATE_WEBHOOK_WORKER": "false",
            **env,
        },
    )


@pytest.fixture
def servers() -> Iterator[list[LiveServer]]:
    started: list[LiveServer] = []
    yield started
    for server in started:
        stop_server(server)
    for server in started:
        assert "Traceback" not in server.log.read_text(errors="replace"), server.log.read_text()


def _write_key(path: Path) -> signing.SigningKey:
    key = signing.generate()
    path.write_bytes(key.private_pem())
    path.chmod(0o600)
    return key


def _checkpoint_now(server: LiveServer) -> dict[str, Any]:
    r = httpx.post(f"{server.url}{API}/audit/checkpoint", timeout=30)
    assert r.status_code == 200, r.text
    cp: dict[str, Any] = r.json()["checkpoint"]
    return cp


def _verify(url: str, server: LiveServer, key: Path, *extra: str, **env: str) -> Any:
    return _mlgate(
        "audit",
        "verify",
        "--database-url",
        url,
        *extra,
        env={
            "MLGATE_ARTIFACTS_DESTINATION": str(server.artifacts),
            "MLGATE_SIGNING_KEY_FILE": str(key),
            **env,
        },
    )


# --- the attacks -------------------------------------------------------------------------------


def test_deleting_the_newest_rows_fails_verify_against_every_checkpoint_source(
    make_database: Any, tmp_path: Path, servers: list[LiveServer]
) -> None:
    url = migrated_database(make_database, "cp_cut")
    key = tmp_path / "key.pem"
    _write_key(key)
    cp_dir = tmp_path / "checkpoints"
    server = _server(url, tmp_path / "srv", key, MLGATE_AUDIT_CHECKPOINT_DIR=str(cp_dir))
    servers.append(server)
    _seed(url, 8)
    cp = _checkpoint_now(server)
    assert cp["seq"] == 8

    # Untouched: every source verifies.
    for source in ("store", server.url, str(cp_dir / "latest.json")):
        ok = _verify(url, server, key, "--checkpoint", source)
        assert ok.returncode == 0, (source, ok.stdout, ok.stderr)
        assert "OK against checkpoint seq 8" in ok.stdout

    # A database-only attacker deletes the three newest entries.
    _sql(url, "DELETE FROM audit_log WHERE seq > 5")
    plain = _verify(url, server, key)
    assert plain.returncode == 0  # the chain alone cannot tell: this is the hole
    for source in ("store", server.url, str(cp_dir / "latest.json")):
        cut = _verify(url, server, key, "--checkpoint", source)
        assert cut.returncode == 1, (source, cut.stdout, cut.stderr)
        assert "TRUNCATED" in cut.stdout and "ends at seq 5" in cut.stdout, cut.stdout
        assert "signed seq 8" in cut.stdout and "newest 3 entries were removed" in cut.stdout

    # Appending rows past the signed seq does not hide the cut: the server refuses to sign a
    # chain that no longer passes through its newest checkpoint, so the evidence stays.
    _seed(url, 4, label="padding")
    refused = httpx.post(f"{server.url}{API}/audit/checkpoint", timeout=30)
    assert refused.status_code == 400, refused.text
    assert refused.json()["error_code"] == "INVALID_STATE"
    assert "no longer passes through the newest checkpoint (seq 8" in refused.json()["message"]
    for source in ("store", server.url, str(cp_dir / "latest.json")):
        padded = _verify(url, server, key, "--checkpoint", source)
        assert padded.returncode == 1 and "REWRITTEN" in padded.stdout, padded.stdout


def test_altered_or_rehashed_rows_fail_verify_against_the_checkpoint(
    make_database: Any, tmp_path: Path, servers: list[LiveServer]
) -> None:
    url = migrated_database(make_database, "cp_alter")
    key = tmp_path / "key.pem"
    _write_key(key)
    server = _server(url, tmp_path / "srv", key)
    servers.append(server)
    _seed(url, 6)
    _checkpoint_now(server)

    _sql(url, "UPDATE audit_log SET actor = 'mallory' WHERE seq = 3")
    altered = _verify(url, server, key, "--checkpoint", "store")
    assert altered.returncode == 1
    assert "BROKEN at seq 3" in altered.stdout and "hash does not match" in altered.stdout

    # The attacker re-hashes the chain from the altered row on: it verifies on its own ...
    _rehash_from(url, 3)
    assert _verify(url, server, key).returncode == 0
    # ... but no longer reaches the signed head.
    rewritten = _verify(url, server, key, "--checkpoint", "store")
    assert rewritten.returncode == 1
    assert "REWRITTEN" in rewritten.stdout and "entry 6" in rewritten.stdout, rewritten.stdout


def test_a_forged_or_modified_checkpoint_fails_verify(
    make_database: Any, tmp_path: Path, servers: list[LiveServer]
) -> None:
    url = migrated_database(make_database, "cp_forge")
    key = tmp_path / "key.pem"
    _write_key(key)
    server = _server(url, tmp_path / "srv", key)
    servers.append(server)
    _seed(url, 5)
    genuine = _checkpoint_now(server)

    # Modified: a checkpoint moved back to seq 3 to cover a cut of entries 4 and 5.
    modified = tmp_path / "modified.json"
    modified.write_text(json.dumps({**genuine, "seq": 3}))
    _sql(url, "DELETE FROM audit_log WHERE seq > 3")
    bad = _verify(url, server, key, "--checkpoint", str(modified))
    assert bad.returncode == 1
    assert "signature does not verify" in bad.stdout and "forged or modified" in bad.stdout

    # Forged: signed by the attacker's own key. Untrusted key id -> refused.
    mallory = signing.generate()
    statement = {"seq": 3, "head_hash": genuine["head_hash"], "time": 1, "key_id": mallory.key_id}
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps({**statement, "signature": mallory.sign(PURPOSE, statement)}))
    refused = _verify(url, server, key, "--checkpoint", str(forged))
    assert refused.returncode == 1 and f"unknown key id {mallory.key_id}" in refused.stdout

    # Forged with the genuine key id but a signature made by another key.
    spoofed = tmp_path / "spoofed.json"
    statement["key_id"] = genuine["key_id"]
    spoofed.write_text(json.dumps({**statement, "signature": mallory.sign(PURPOSE, statement)}))
    spoof = _verify(url, server, key, "--checkpoint", str(spoofed))
    assert spoof.returncode == 1 and "signature does not verify" in spoof.stdout

    # A genuine signature over another purpose cannot pass as a checkpoint.
    own = signing.load_private_key(key)
    other = tmp_path / "other-purpose.json"
    statement = {**statement, "key_id": own.key_id}
    other.write_text(json.dumps({**statement, "signature": own.sign("mlgate.other.v1", statement)}))
    wrong = _verify(url, server, key, "--checkpoint", str(other))
    assert wrong.returncode == 1 and "signature does not verify" in wrong.stdout

    # Garbage in the checkpoint file is named, not a traceback.
    junk = tmp_path / "junk.json"
    junk.write_text('{"seq": "x"}')
    named = _verify(url, server, key, "--checkpoint", str(junk))
    assert named.returncode == 1 and "'seq' must be" in named.stderr, named.stderr


def test_the_proxy_refuses_writes_and_deletes_under_the_reserved_prefix(
    make_database: Any, tmp_path: Path, servers: list[LiveServer]
) -> None:
    url = migrated_database(make_database, "cp_reserved")
    key = tmp_path / "key.pem"
    _write_key(key)
    server = _server(url, tmp_path / "srv", key)
    servers.append(server)
    _seed(url, 2)
    _checkpoint_now(server)
    base = f"{server.url}/api/2.0/mlflow-artifacts"
    target = "_mlgate/audit/checkpoints/latest.json"
    put = httpx.put(f"{base}/artifacts/{target}", content=b'{"seq":0}')
    assert put.status_code == 403 and put.json()["error_code"] == "PERMISSION_DENIED"
    gone = httpx.delete(f"{base}/artifacts/_mlgate")
    assert gone.status_code == 403 and gone.json()["error_code"] == "PERMISSION_DENIED"
    mpu = httpx.post(f"{base}/mpu/create/_mlgate/keys", json={"path": "evil.pem", "num_parts": 1})
    assert mpu.status_code in (403, 501), mpu.text
    assert _verify(url, server, key, "--checkpoint", "store").returncode == 0


def test_checkpoints_are_written_to_the_s3_store_and_verify_from_there(
    make_database: Any, tmp_path: Path, servers: list[LiveServer], moto_endpoint: str
) -> None:
    url = migrated_database(make_database, "cp_s3")
    key = tmp_path / "key.pem"
    _write_key(key)
    prefix = f"cp-{tmp_path.name}"
    s3_env = {
        "MLGATE_ARTIFACTS_DESTINATION": f"s3://{BUCKET}/{prefix}",
        "MLGATE_S3_ENDPOINT_URL": moto_endpoint,
        **S3_ENV,
    }
    _seed(url, 4)
    server = _server(
        url, tmp_path / "srv", key, **{**s3_env, "MLGATE_AUDIT_CHECKPOINT_INTERVAL": "0.2"}
    )
    servers.append(server)
    client = s3_client(moto_endpoint)
    latest_key = f"{prefix}/_mlgate/audit/checkpoints/latest.json"
    deadline = time.monotonic() + 30
    while True:  # the background loop writes it without being asked
        try:
            body = client.get_object(Bucket=BUCKET, Key=latest_key)["Body"].read()
            if Checkpoint.parse(body).seq == 4:
                break
        except client.exceptions.NoSuchKey:
            pass
        assert time.monotonic() < deadline, "no checkpoint reached S3"
        time.sleep(0.2)
    keys = client.list_objects_v2(Bucket=BUCKET, Prefix=f"{prefix}/_mlgate/keys/")
    assert [o["Key"].rsplit("/", 1)[1] for o in keys["Contents"]] == [
        f"{signing.load_private_key(key).key_id}.pem"
    ]
    env = {"MLGATE_SIGNING_KEY_FILE": str(key), **s3_env}
    ok = _mlgate("audit", "verify", "--database-url", url, "--checkpoint", "store", env=env)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    _sql(url, "DELETE FROM audit_log WHERE seq = 4")
    cut = _mlgate("audit", "verify", "--database-url", url, "--checkpoint", "store", env=env)
    assert cut.returncode == 1 and "TRUNCATED" in cut.stdout, cut.stdout + cut.stderr
    # The loop never signs over the evidence: not the shorter chain, nor one grown past it.
    _seed(url, 3, label="padding")
    deadline = time.monotonic() + 30
    while "no longer passes through the newest checkpoint" not in server.log.read_text():
        assert time.monotonic() < deadline, server.log.read_text()
        time.sleep(0.2)
    body = client.get_object(Bucket=BUCKET, Key=latest_key)["Body"].read()
    assert Checkpoint.parse(body).seq == 4
    still = _mlgate("audit", "verify", "--database-url", url, "--checkpoint", "store", env=env)
    assert still.returncode == 1 and "REWRITTEN" in still.stdout, still.stdout


def test_a_rotated_key_keeps_old_checkpoints_verifiable(
    make_database: Any, tmp_path: Path, servers: list[LiveServer]
) -> None:
    url = migrated_database(make_database, "cp_rotate")
    old_key, new_key = tmp_path / "old.pem", tmp_path / "new.pem"
    old, new = _write_key(old_key), _write_key(new_key)
    workdir = tmp_path / "srv"
    first = _server(url, workdir, old_key)
    servers.append(first)
    _seed(url, 3)
    old_cp = tmp_path / "old-checkpoint.json"
    old_cp.write_text(json.dumps(_checkpoint_now(first)))
    stop_server(first)

    second = _server(url, workdir, new_key)  # same artifact store, new key
    servers.append(second)
    _seed(url, 2)
    new_cp = _checkpoint_now(second)
    assert new_cp["key_id"] == new.key_id and new_cp["seq"] == 5
    keys = httpx.get(f"{second.url}{API}/keys").json()["keys"]
    assert {k["key_id"]: k["current"] for k in keys} == {old.key_id: False, new.key_id: True}

    # The old checkpoint still verifies: by the keys kept in the store, and via the server.
    by_store = _verify(url, second, new_key, "--checkpoint", str(old_cp))
    assert by_store.returncode == 0, by_store.stdout + by_store.stderr
    assert f"key {old.key_id}" in by_store.stdout
    pinned_dir = tmp_path / "pinned"
    pinned_dir.mkdir()
    (pinned_dir / "old.pem").write_text(old.public.pem)
    (pinned_dir / "new.pem").write_text(new.public.pem)
    pinned = _verify(
        url, second, new_key, "--checkpoint", str(old_cp), "--public-key", str(pinned_dir)
    )
    assert pinned.returncode == 0, pinned.stdout
    # Pinning only the new key refuses the old checkpoint by name.
    only_new = tmp_path / "only-new.pem"
    only_new.write_text(new.public.pem)
    refused = _verify(
        url, second, new_key, "--checkpoint", str(old_cp), "--public-key", str(only_new)
    )
    assert refused.returncode == 1 and f"unknown key id {old.key_id}" in refused.stdout
    # The server's latest, fetched by URL, is signed by the new key and verifies too.
    by_url = _verify(url, second, new_key, "--checkpoint", second.url)
    assert by_url.returncode == 0 and f"key {new.key_id}" in by_url.stdout, by_url.stdout


def test_a_server_without_a_configured_key_creates_one_private_to_its_owner(
    make_database: Any, tmp_path: Path, servers: list[LiveServer]
) -> None:
    url = migrated_database(make_database, "cp_genkey")
    data_dir = tmp_path / "data"
    workdir = tmp_path / "srv"
    workdir.mkdir()
    server = start_server(
        url,
        workdir,
        extra_env={
            "MLGATE_DATA_DIR": str(data_dir),
            "MLGATE_AUDIT_CHECKPOINT_INTERVAL": "0",
            "MLGATE_WEBHOOK_WORKER": "false",
        },
    )
    servers.append(server)
    key_file = data_dir / "signing-key.pem"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = signing.load_private_key(key_file)
    assert f"audit signing key {key.key_id} created" in server.log.read_text()
    listed = httpx.get(f"{server.url}{API}/keys").json()["keys"]
    assert [k["key_id"] for k in listed] == [key.key_id]
    none_yet = httpx.get(f"{server.url}{API}/audit/checkpoint")
    assert none_yet.status_code == 404
    assert none_yet.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    written = _checkpoint_now(server)
    cp = httpx.get(f"{server.url}{API}/audit/checkpoint").json()["checkpoint"]
    assert cp == written and cp["key_id"] == key.key_id
    assert key.public.verify(PURPOSE, Checkpoint.parse(cp).statement(), cp["signature"])


def test_two_replicas_checkpointing_at_once_keep_chain_and_checkpoints_valid(
    make_database: Any, tmp_path: Path, servers: list[LiveServer]
) -> None:
    url = migrated_database(make_database, "cp_replicas")
    key = tmp_path / "key.pem"
    _write_key(key)
    store = tmp_path / "shared-store"
    cp_dir = tmp_path / "checkpoints"
    env = {
        "MLGATE_ARTIFACTS_DESTINATION": str(store),
        "MLGATE_AUDIT_CHECKPOINT_DIR": str(cp_dir),
        "MLGATE_AUDIT_CHECKPOINT_INTERVAL": "0.05",
    }
    for name in ("a", "b"):
        servers.append(_server(url, tmp_path / name, key, **env))

    async def writers() -> None:
        await asyncio.gather(*(_seed_async(url, 15, label=f"w{i}") for i in range(3)))

    asyncio.run(writers())
    # On-demand checkpoints from both replicas race with their loops.
    for _ in range(3):
        for server in servers:
            _checkpoint_now(server)
    time.sleep(1)

    shared = servers[0]
    verify_env = {"MLGATE_ARTIFACTS_DESTINATION": str(store)}
    plain = _verify(url, shared, key, **verify_env)
    assert plain.returncode == 0 and "OK: 45 entries" in plain.stdout, plain.stdout
    latest = _verify(url, shared, key, "--checkpoint", "store", **verify_env)
    assert latest.returncode == 0 and "checkpoint seq 45" in latest.stdout, latest.stdout
    # Every checkpoint either replica wrote, in the store and the directory, is genuine and
    # agrees with the chain.
    history = sorted((store / "_mlgate" / "audit" / "checkpoints").glob("0*.json"))
    lines = (cp_dir / "checkpoints.jsonl").read_text().splitlines()
    assert len(history) >= 2 and len(lines) >= 2
    documents = [p.read_text() for p in history] + lines
    public = signing.load_private_key(key).public

    async def check_all() -> list[str]:
        db = Database(url, pool_size=1)
        try:
            failures = []
            for document in documents:
                result = await verify_against(
                    db, Checkpoint.parse(document), {public.key_id: public}
                )
                if not result.ok:
                    failures.append(f"{document}: {result.message}")
            return failures
        finally:
            await db.dispose()

    assert asyncio.run(check_all()) == []
    assert Checkpoint.parse((cp_dir / "latest.json").read_text()).seq == 45


def test_with_auth_on_keys_and_checkpoint_are_public_writing_one_is_admin_only(
    make_database: Any, tmp_path: Path, servers: list[LiveServer]
) -> None:
    from tests.security.auth_world import ADMIN_PASSWORD, ADMIN_USER, auth_env

    url = migrated_database(make_database, "cp_auth")
    key = tmp_path / "key.pem"
    _write_key(key)
    server = _server(url, tmp_path / "srv", key, **auth_env())
    servers.append(server)
    admin = (ADMIN_USER, ADMIN_PASSWORD)
    anonymous_write = httpx.post(f"{server.url}{API}/audit/checkpoint")
    assert anonymous_write.status_code == 401, anonymous_write.text
    written = httpx.post(f"{server.url}{API}/audit/checkpoint", auth=admin)
    assert written.status_code == 200, written.text
    # A monitor polls without credentials.
    polled = httpx.get(f"{server.url}{API}/audit/checkpoint")
    assert polled.status_code == 200 and polled.json() == written.json()
    keys = httpx.get(f"{server.url}{API}/keys")
    assert keys.status_code == 200
    assert [k["key_id"] for k in keys.json()["keys"]] == [signing.load_private_key(key).key_id]
    # Not even an administrator replaces a checkpoint through the artifact proxy.
    target = (
        f"{server.url}/api/2.0/mlflow-artifacts/artifacts/_mlgate/audit/checkpoints/latest.json"
    )
    assert httpx.put(target, content=b"{}", auth=admin).status_code == 403
    assert httpx.delete(target, auth=admin).status_code == 403
    assert httpx.get(f"{server.url}{API}/audit/checkpoint").json() == written.json()


def test_a_server_refuses_to_start_with_a_key_it_cannot_use(
    make_database: Any, tmp_path: Path
) -> None:
    url = migrated_database(make_database, "cp_badkey")
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    rsa_pem = tmp_path / "rsa.pem"
    rsa_pem.write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    for key_file, why in (
        (not_a_dir / "key.pem", "cannot create the signing key"),
        (rsa_pem, "is not an unencrypted PEM private key"),
    ):
        done = _mlgate(
            "server",
            env={
                "MLGATE_DATABASE_URL": url,
                "MLGATE_ARTIFACTS_DESTINATION": str(tmp_path / "artifacts"),
                "MLGATE_SIGNING_KEY_FILE": str(key_file),
                "MLGATE_PORT": "1",
            },
        )
        assert done.returncode == 2, done.stderr
        assert "refusing to start" in done.stderr and why in done.stderr, done.stderr


def test_processes_starting_together_end_up_with_one_key(tmp_path: Path) -> None:
    import concurrent.futures

    path = tmp_path / "data" / "signing-key.pem"
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: signing.load_or_create(path), range(16)))
    assert len({key.key_id for key, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["signing-key.pem"]  # no temp files left


def test_audit_verify_api_walks_the_chain_in_bounded_windows_and_names_the_first_bad_entry(
    make_database: Any, tmp_path: Path, servers: list[LiveServer]
) -> None:
    url = migrated_database(make_database, "verify_api")
    _seed(url, 7)
    server = _server(url, tmp_path / "s", tmp_path / "key.pem")
    servers.append(server)
    whole = httpx.get(f"{server.url}{API}/audit/verify", timeout=30).json()
    assert whole["ok"] is True and whole["checked"] == 7 and whole["last_seq"] == 7
    assert "next_after_seq" not in whole
    # Windows of 3: 1-3, 4-6, 7; each names where the next starts.
    seen, after = [], 0
    while True:
        page = httpx.get(
            f"{server.url}{API}/audit/verify",
            params={"after_seq": after, "max_entries": 3},
            timeout=30,
        ).json()
        assert page["ok"] is True, page
        seen.append(page["checked"])
        if "next_after_seq" not in page:
            break
        after = page["next_after_seq"]
    assert seen == [3, 3, 1]
    for bad in ({"max_entries": 0}, {"max_entries": 50_001}, {"after_seq": -1}):
        refused = httpx.get(f"{server.url}{API}/audit/verify", params=bad, timeout=30)
        assert refused.status_code == 400, refused.text
        assert refused.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    _sql(url, "UPDATE audit_log SET actor = 'mallory' WHERE seq = 5")
    broken = httpx.get(f"{server.url}{API}/audit/verify", timeout=30).json()
    assert broken["ok"] is False and broken["first_bad_seq"] == 5 and broken["checked"] == 4
    assert "hash" in broken["reason"]
    # The CLI, database-direct, agrees with the API.
    cli = _verify(url, server, tmp_path / "key.pem")
    assert cli.returncode == 1 and "BROKEN at seq 5" in cli.stdout
