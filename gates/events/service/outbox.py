"""Writing events: ``emit`` puts an event and its deliveries in the caller's transaction."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec
from sqlalchemy.ext.asyncio import AsyncSession

from gates.events import store
from gates.events.event_types import is_well_formed
from registry import events as registry_events
from registry.events import RegistryEvent
from tracking.core.clock import now_ms
from tracking.core.db import dialect_name
from tracking.core.driver import session_rows

# The session.info key of the events held by :func:`batched` (absent: emit writes at once).
_HELD = "gates.events.held"


@contextlib.asynccontextmanager
async def batched(session: AsyncSession) -> AsyncIterator[None]:
    """Hold the events emitted in the block, and write them at its end in one statement.

    For a request that emits several events in one transaction (a gate promotion: the version
    registered, the stage moved, the decision): on PostgreSQL they are one INSERT (with their
    subscribers) instead of one each; elsewhere they are written one by one at the block's
    end. Either way they are written in the order emitted, in the caller's transaction,
    before it commits, so they still commit or roll back with the change. An error in the block
    drops them (the caller's transaction rolls back). Nothing may read the outbox inside the
    block; a nested block joins the outer one. See :func:`held_count` for savepoints.
    """
    if _HELD in session.info:
        yield
        return
    held: list[dict[str, Any]] = []
    session.info[_HELD] = held
    try:
        yield
    finally:
        del session.info[_HELD]
    await _write_held(session, held)


def held_count(session: AsyncSession) -> int:
    """How many events :func:`batched` holds (0 outside it); a savepoint notes it when it
    begins and hands it to :func:`drop_held_after` when it rolls back."""
    return len(session.info.get(_HELD, ()))


def drop_held_after(session: AsyncSession, count: int) -> None:
    """Drop the held events emitted after the first ``count`` (their savepoint rolled back)."""
    held = session.info.get(_HELD)
    if held is not None:
        del held[count:]


async def _write_held(session: AsyncSession, held: list[dict[str, Any]]) -> None:
    if not held:
        return
    if dialect_name(session) != "postgresql":
        for e in held:
            await _write(session, e, prebuilt=e.pop("prebuilt"))
        return
    written = await store.insert_events_on_driver(await session_rows(session), held)
    deliveries = []
    for e in held:
        pk, subscribers = written[e["event_id"]]
        deliveries += _deliveries(pk, subscribers, e["created_at"])
    await store.insert_deliveries(session, deliveries)


async def emit(
    session: AsyncSession,
    event_type: str,
    payload: dict[str, Any],
    *,
    model_name: str | None = None,
    prebuilt: bool = False,
) -> str:
    """Record ``event_type`` in the outbox, in ``session``'s transaction; returns its event id.

    The event commits or rolls back with the change it describes, and every active
    subscription to ``event_type`` gets a delivery row in the same statement batch, so a
    subscriber never misses an event that happened nor gets one that did not. ``model_name``
    (default: ``payload["name"]``) is the registered model the event is about, used by
    subscriptions filtered to one model. ``payload`` must be JSON-serialisable. ``prebuilt``:
    write the event with prebuilt statements on the transaction's own connection (the caller
    has nothing unflushed the event must follow). Inside :func:`batched`, the event is held
    and written at the block's end.
    """
    if not is_well_formed(event_type):
        raise ValueError(f"malformed event type {event_type!r} (expected 'entity.action')")
    if model_name is None and isinstance(payload.get("name"), str):
        model_name = payload["name"]
    event = {
        "event_id": str(uuid.uuid4()),
        "type": event_type,
        "model_name": model_name,
        "payload": msgspec.json.encode(payload).decode(),
        "created_at": now_ms(),
    }
    held = session.info.get(_HELD)
    if held is not None:
        held.append({**event, "prebuilt": prebuilt})
    else:
        await _write(session, event, prebuilt=prebuilt)
    return str(event["event_id"])


async def _write(session: AsyncSession, e: dict[str, Any], *, prebuilt: bool) -> None:
    """One event and its deliveries."""
    if prebuilt and e["model_name"] is not None:
        pk, subscribers = await store.insert_model_event_on_driver(
            await session_rows(session),
            event_id=e["event_id"],
            type_=e["type"],
            model_name=e["model_name"],
            payload=e["payload"],
            created_at=e["created_at"],
        )
    else:
        pk, subscribers = await store.insert_event_for_subscribers(
            session,
            event_id=e["event_id"],
            type_=e["type"],
            model_name=e["model_name"],
            payload=e["payload"],
            created_at=e["created_at"],
        )
    await store.insert_deliveries(session, _deliveries(pk, subscribers, e["created_at"]))


def _deliveries(pk: int, subscribers: list[str], now: int) -> list[dict[str, Any]]:
    return [
        {
            "delivery_id": str(uuid.uuid4()),
            "event_pk": pk,
            "subscription_id": sub_id,
            "status": "pending",
            "attempts": 0,
            "total_attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
            "updated_at": now,
        }
        for sub_id in subscribers
    ]


def _version(v: int | None) -> str | None:
    return None if v is None else str(v)


# Tags MLflow keeps out of its prompt webhooks' ``tags`` (they mark the prompt, its type and, for
# a version, carry the template sent as ``template``).
_PROMPT_INTERNAL_TAGS = ("mlflow.prompt.is_prompt", "_mlflow_prompt_type")
_PROMPT_TEXT_TAG = "mlflow.prompt.text"

# A change to a prompt is announced only as MLflow's ``prompt*`` events (MLflow sends no model
# event for it), so each builder below answers for both families, on the event's ``is_prompt``.
Payloads = list[tuple[str, dict[str, Any]]]


def _prompt_tags(tags: tuple[tuple[str, str], ...]) -> dict[str, str]:
    return {k: v for k, v in tags if k not in _PROMPT_INTERNAL_TAGS}


def _model_created(e: registry_events.RegisteredModelCreated) -> Payloads:
    if e.is_prompt:
        prompt = {"name": e.name, "tags": _prompt_tags(e.tags), "description": e.description}
        return [("prompt.created", prompt)]
    data: dict[str, Any] = {
        "name": e.name,
        "tags": dict(e.tags),
        "description": e.description,
        "actor": e.actor,
        "timestamp": e.timestamp,
    }
    return [("registered_model.created", data)]


def _version_created(e: registry_events.ModelVersionCreated) -> Payloads:
    if e.is_prompt:
        tags = _prompt_tags(e.tags)
        template = tags.pop(_PROMPT_TEXT_TAG, None)
        prompt: dict[str, Any] = {
            "name": e.name,
            "version": str(e.version),
            "template": template,
            "tags": tags,
            "description": e.description or None,
            "actor": e.actor,
            "timestamp": e.timestamp,
        }
        return [("prompt_version.created", prompt)]
    data = {
        "name": e.name,
        "version": str(e.version),
        "source": e.source,
        "run_id": e.run_id,
        "tags": dict(e.tags),
        "description": e.description,
        "model_id": e.model_id,
        "storage_location": e.storage_location,
        "manifest_digest": e.manifest_digest,
        "actor": e.actor,
        "timestamp": e.timestamp,
    }
    return [("model_version.created", data)]


def _stage_transitioned(e: registry_events.StageTransitioned) -> Payloads:
    data = {
        "name": e.name,
        "version": str(e.version),
        "from_stage": e.from_stage,
        "to_stage": e.to_stage,
        "archived_versions": [str(v) for v in e.archived_versions],
        "actor": e.actor,
        "comment": e.comment,
        "timestamp": e.timestamp,
    }
    return [("stage.transitioned", data)]


def _alias_moved(e: registry_events.AliasMoved) -> Payloads:
    """mlgate's ``alias.moved`` for models and prompts alike, then MLflow's own event."""
    moved = {
        "name": e.name,
        "alias": e.alias,
        "from_version": _version(e.from_version),
        "to_version": _version(e.to_version),
        "actor": e.actor,
        "comment": e.comment,
        "timestamp": e.timestamp,
    }
    entity = "prompt_alias" if e.is_prompt else "model_version_alias"
    if e.to_version is None:
        mlflow = (f"{entity}.deleted", {"name": e.name, "alias": e.alias})
    else:
        data = {"name": e.name, "alias": e.alias, "version": str(e.to_version)}
        mlflow = (f"{entity}.created", data)
    return [("alias.moved", moved), mlflow]


def _version_deleted(e: registry_events.ModelVersionDeleted) -> Payloads:
    data = {
        "name": e.name,
        "version": str(e.version),
        "stage": e.stage,
        "aliases": list(e.aliases),
        "actor": e.actor,
        "timestamp": e.timestamp,
    }
    return [("model_version.deleted", data)]


def _model_deleted(e: registry_events.RegisteredModelDeleted) -> Payloads:
    pointers = [
        {"kind": kind, "pointer": pointer, "version": str(version)}
        for kind, pointer, version in e.pointers
    ]
    data = {"name": e.name, "pointers": pointers, "actor": e.actor, "timestamp": e.timestamp}
    return [("registered_model.deleted", data)]


def _version_tag_set(e: registry_events.ModelVersionTagSet) -> Payloads:
    version = str(e.version)
    data: dict[str, Any] = {"name": e.name, "version": version, "key": e.key, "value": e.value}
    if e.is_prompt:
        return [("prompt_version_tag.set", data)]
    return [("model_version_tag.set", {**data, "timestamp": e.timestamp})]


def _version_tag_deleted(e: registry_events.ModelVersionTagDeleted) -> Payloads:
    data: dict[str, Any] = {"name": e.name, "version": str(e.version), "key": e.key}
    if e.is_prompt:
        return [("prompt_version_tag.deleted", data)]
    return [("model_version_tag.deleted", {**data, "timestamp": e.timestamp})]


def _model_tag_changed(e: registry_events.RegisteredModelTagSet) -> Payloads:
    if not e.is_prompt:
        return []  # a model's own tags announce nothing (neither does MLflow)
    if e.value is None:
        return [("prompt_tag.deleted", {"name": e.name, "key": e.key})]
    return [("prompt_tag.set", {"name": e.name, "key": e.key, "value": e.value})]


_BUILDERS: dict[type, Callable[[Any], Payloads]] = {
    registry_events.RegisteredModelCreated: _model_created,
    registry_events.ModelVersionCreated: _version_created,
    registry_events.StageTransitioned: _stage_transitioned,
    registry_events.AliasMoved: _alias_moved,
    registry_events.ModelVersionDeleted: _version_deleted,
    registry_events.RegisteredModelDeleted: _model_deleted,
    registry_events.ModelVersionTagSet: _version_tag_set,
    registry_events.ModelVersionTagDeleted: _version_tag_deleted,
    registry_events.RegisteredModelTagSet: _model_tag_changed,
}


def registry_event_payloads(event: RegistryEvent) -> Payloads:
    """The outbox events a registry change produces: mlgate's names and MLflow's (for a
    prompt, MLflow's ``prompt*`` events only)."""
    build = _BUILDERS.get(type(event))
    return build(event) if build is not None else []


async def record_registry_event(session: AsyncSession, event: RegistryEvent) -> None:
    """A registry listener (the app's first, gates.server.hooks): changes into the outbox."""
    # A stage move writes through prebuilt statements (registry.service.moves): its event
    # follows them the same way.
    prebuilt = isinstance(event, registry_events.StageTransitioned)
    for event_type, payload in registry_event_payloads(event):
        await emit(session, event_type, payload, model_name=event.name, prebuilt=prebuilt)
