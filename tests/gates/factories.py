"""Small async builders for gate tests: finished runs with model files, gates, signed calls."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from gates.policies import service as policies
from gates.policies.schemas import PolicySpec
from gates.policies.signatures import signed_headers
from registry.artifacts.paths import parse_artifact_uri
from registry.artifacts.storage import LocalStorage
from tracking import service as tracking
from tracking.schemas import CreateExperiment, CreateRun, KeyValue, LogBatch, MetricIn, UpdateRun

ADMIN = "admin-user"


async def make_run(
    session: AsyncSession,
    *,
    metrics: dict[str, float] | None = None,
    tags: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
    user: str = "alice",
    status: str = "FINISHED",
    storage: LocalStorage | None = None,
    files: dict[str, bytes] | None = None,
) -> str:
    """A run with metrics, tags and params, ended with ``status``; ``files`` (under the run's
    ``model/`` folder) are written to ``storage``. Returns the run id."""
    experiment_id = await tracking.create_experiment(
        session, CreateExperiment(name=f"gates-{uuid.uuid4().hex[:10]}")
    )
    run = await tracking.create_run(
        session, CreateRun(experiment_id=experiment_id, user_id=user, start_time=1)
    )
    run_id = run.info.run_id
    await tracking.log_batch(
        session,
        LogBatch(
            run_id=run_id,
            metrics=[MetricIn(k, v, 1, 0) for k, v in (metrics or {}).items()],
            params=[KeyValue(k, v) for k, v in (params or {}).items()],
            tags=[KeyValue(k, v) for k, v in (tags or {}).items()],
        ),
    )
    if storage is not None:
        root = parse_artifact_uri(run.info.artifact_uri)
        for name, data in (files or {"MLmodel": b"flavors: {}\n"}).items():
            await storage.put(root.joinpath("model", name), _chunks(data))
    await tracking.update_run(session, UpdateRun(run_id=run_id, status=status, end_time=2))
    return run_id


async def _chunks(data: bytes) -> Any:
    yield data


def model_file(storage: LocalStorage, artifact_uri: str, name: str) -> Path:
    root = parse_artifact_uri(artifact_uri)
    return Path(storage.root) / root.posix / "model" / name  # type: ignore[attr-defined]


async def make_gate(
    session: AsyncSession,
    model: str,
    target: str,
    *,
    name: str | None = None,
    **rules: Any,
) -> str:
    name = name or f"gate-{uuid.uuid4().hex[:10]}"
    await policies.create_policy(
        session, PolicySpec(name=name, model=model, target=target, **rules), actor=ADMIN
    )
    return name


def signed(secret: str, body: bytes, *, webhook_id: str | None = None, at: int | None = None):
    return signed_headers(
        secret,
        webhook_id or f"msg_{uuid.uuid4().hex}",
        int(time.time()) if at is None else at,
        body,
    )
