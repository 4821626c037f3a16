"""Shared by the tracking operations: id and view parsing, run and experiment lookups, names."""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy.ext.asyncio import AsyncSession

from tracking import store
from tracking.core.errors import InvalidParameter
from tracking.errors import ExperimentNotFound, InactiveRun, RunNotFound
from tracking.schemas import Id
from tracking.store import RunHandle
from tracking.validation import require

RUN_NAME_TAG = "mlflow.runName"
RUN_STATUSES = {"RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED"}
VIEW_TYPES = {"ACTIVE_ONLY", "DELETED_ONLY", "ALL"}
LOGGED_MODEL_STATUSES = {
    "LOGGED_MODEL_PENDING",
    "LOGGED_MODEL_READY",
    "LOGGED_MODEL_UPLOAD_FAILED",
}


def parse_experiment_id(value: Id | None) -> int:
    require(value, "experiment_id")
    try:
        parsed = int(str(value))
    except ValueError:
        raise ExperimentNotFound(value) from None
    if not 0 <= parsed < 2**63:  # beyond 64 bits no row can have it (nor can drivers bind it)
        raise ExperimentNotFound(value)
    return parsed


def parse_view_type(value: str | None) -> str:
    view = (value or "ACTIVE_ONLY").upper()
    if view not in VIEW_TYPES:
        raise InvalidParameter(
            f"Invalid view type '{value}'. Expected one of ACTIVE_ONLY, DELETED_ONLY, ALL."
        )
    return view


def page_fingerprint(*parts: object) -> str:
    return hashlib.blake2s(repr(parts).encode(), digest_size=6).hexdigest()


async def existing_experiment(
    s: AsyncSession, experiment_id: Id | None, *, lock: bool = False
) -> tuple[int, str]:
    eid = parse_experiment_id(experiment_id)
    stage = await store.experiment_lifecycle(s, eid, lock=lock)
    if stage is None:
        raise ExperimentNotFound(experiment_id)
    return eid, stage


_ADJECTIVES = (
    "amber",
    "bold",
    "brisk",
    "calm",
    "clever",
    "crisp",
    "daring",
    "eager",
    "fair",
    "gentle",
    "glad",
    "keen",
    "lively",
    "lucid",
    "merry",
    "nimble",
    "polite",
    "quiet",
    "rapid",
    "sharp",
    "silent",
    "steady",
    "sunny",
    "swift",
    "tidy",
    "vivid",
    "warm",
    "wise",
    "witty",
    "zesty",
)
_NOUNS = (
    "badger",
    "bison",
    "crane",
    "dolphin",
    "falcon",
    "ferret",
    "gecko",
    "heron",
    "ibis",
    "jackal",
    "koala",
    "lark",
    "lemur",
    "lynx",
    "marten",
    "newt",
    "ocelot",
    "otter",
    "panda",
    "puffin",
    "quail",
    "raven",
    "robin",
    "salmon",
    "seal",
    "stork",
    "tapir",
    "toad",
    "wren",
    "yak",
)


def generate_run_name() -> str:
    return f"{secrets.choice(_ADJECTIVES)}-{secrets.choice(_NOUNS)}-{secrets.randbelow(1000)}"


USER_TAG = "mlflow.user"


async def run_handle(s: AsyncSession, run_id: str | None) -> RunHandle:
    require(run_id, "run_id")
    assert run_id is not None
    handle = await store.get_run_handle(s, run_id)
    if handle is None:
        raise RunNotFound(run_id)
    return handle


async def active_run(s: AsyncSession, run_id: str | None) -> RunHandle:
    handle = await run_handle(s, run_id)
    if handle.lifecycle_stage != "active":
        raise InactiveRun(handle.run_uuid)
    return handle
