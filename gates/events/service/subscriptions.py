"""Subscriptions: mlgate's own API and MLflow 3's webhook API, one table and one outbox."""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from gates.audit import service as audit
from gates.events import signing, store
from gates.events.config import EventsConfig
from gates.events.errors import SubscriptionNotFound, UnsafeSubscriberUrl
from gates.events.event_types import KNOWN_EVENT_TYPES, MLFLOW_EVENT_TYPES, example_payload
from gates.events.schemas import (
    CreateWebhook,
    RotateSecret,
    Subscription,
    SubscriptionCreate,
    SubscriptionUpdate,
    UpdateWebhook,
    Webhook,
    WebhookEventIn,
    WebhookEventOut,
    WebhookTestResult,
)
from gates.events.service.outbox import emit
from gates.events.ssrf import UnsafeUrl, check_mlflow_webhook_url, check_subscriber_url
from tracking.core.clock import now_ms
from tracking.core.errors import InvalidParameter
from tracking.core.wire import decode_page_token, encode_page_token

MLGATE = "mlgate"
MLFLOW = "mlflow"
STATUSES = ("active", "disabled")
DEFAULT_PAGE = 100
MAX_PAGE = 1000  # MLflow's limit for list_webhooks
MAX_EVENTS = 64
# ``"events": ["*"]``: every event type mlgate knows now (stored as that list).
ALL_EVENTS = "*"
MIN_SECRET_LEN = 16
DEFAULT_ROTATION_GRACE_S = 24 * 3600
MAX_ROTATION_GRACE_S = 30 * 24 * 3600
# The actor recorded for what the delivery worker decides on its own.
SYSTEM = "system"

# MLflow's webhook name rule (mlflow/utils/validation.py, _WEBHOOK_NAME_REGEX).
_NAME_RE = re.compile(r"^(?=.{1,63}$)[a-z0-9]([a-z0-9._-]*[a-z0-9])?$", re.IGNORECASE)

# Proto enum numbers (mlflow/protos/webhooks.proto), for clients that send numbers.
_ENTITIES = (
    "ENTITY_UNSPECIFIED",
    "REGISTERED_MODEL",
    "MODEL_VERSION",
    "MODEL_VERSION_TAG",
    "MODEL_VERSION_ALIAS",
    "PROMPT",
    "PROMPT_VERSION",
    "PROMPT_TAG",
    "PROMPT_VERSION_TAG",
    "PROMPT_ALIAS",
    "BUDGET_POLICY",
)
_ACTIONS = ("ACTION_UNSPECIFIED", "CREATED", "UPDATED", "DELETED", "SET", "EXCEEDED")
_WEBHOOK_STATUSES = ("STATUS_UNSPECIFIED", "ACTIVE", "DISABLED")


# --- validation ----------------------------------------------------------------------------------


def _required_name(name: str | None) -> str:
    """mlgate's subscriptions: a missing name says so (not "Webhook name None is invalid")."""
    if name is None or not name.strip():
        raise InvalidParameter(
            "Missing value for required parameter 'name': name the subscription."
        )
    return _name(name)


def _name(name: str | None) -> str:
    if not name or not _NAME_RE.fullmatch(name):
        raise InvalidParameter(
            f"Webhook name {name!r} is invalid. It must start and end with a letter or digit, "
            "be less than 63 characters long, and contain only letters, digits, dots (.), "
            "underscores (_), and hyphens (-)."
        )
    return name


async def _url(url: str | None, config: EventsConfig, *, mlflow: bool = False) -> str:
    check = check_mlflow_webhook_url if mlflow else check_subscriber_url
    try:
        return await check(url or "", config.allowlist)
    except UnsafeUrl as exc:
        if mlflow:  # already in mlflow server's words
            raise UnsafeSubscriberUrl(str(exc)) from None
        shown = url or ""
        shown = shown if len(shown) <= 200 else f"{shown[:200]}..."
        raise UnsafeSubscriberUrl(f"Invalid webhook URL {shown!r}: {exc}.") from None


def _status(value: str | int | None, *, default: str = "active") -> str:
    if value is None or value == "":
        return default
    if isinstance(value, int):
        value = _WEBHOOK_STATUSES[value] if 0 < value < len(_WEBHOOK_STATUSES) else str(value)
    lowered = value.lower()
    if lowered not in STATUSES:
        raise InvalidParameter(f"Invalid status {value!r}: use ACTIVE or DISABLED.")
    return lowered


def _event_types(events: Sequence[str], allowed: frozenset[str]) -> list[str]:
    if not events:
        raise InvalidParameter(
            f"Webhook events must be a non-empty list (or [{ALL_EVENTS!r}] for every event)."
        )
    if ALL_EVENTS in events:
        if len(events) > 1:
            raise InvalidParameter(f"{ALL_EVENTS!r} (every event) stands alone in 'events'.")
        return sorted(allowed)
    if len(events) > MAX_EVENTS:
        raise InvalidParameter(f"A subscription can list at most {MAX_EVENTS} events.")
    unknown = [e for e in events if e not in allowed]
    if unknown:
        raise InvalidParameter(
            f"Unknown event type(s) {', '.join(map(repr, unknown))}. "
            f"Known: {', '.join(sorted(allowed))}."
        )
    return sorted(set(events))


def _enum(value: str | int | None, names: tuple[str, ...], what: str) -> str:
    if isinstance(value, int) and 0 < value < len(names):
        return names[value].lower()
    if isinstance(value, str) and value.upper() in names[1:]:
        return value.lower()
    raise InvalidParameter(f"Invalid webhook event {what}: {value!r}.")


def _mlflow_event_types(events: Sequence[WebhookEventIn]) -> list[str]:
    types = [
        f"{_enum(e.entity, _ENTITIES, 'entity')}.{_enum(e.action, _ACTIONS, 'action')}"
        for e in events
    ]
    for t in types:
        if t not in MLFLOW_EVENT_TYPES:
            entity, _, action = t.partition(".")
            raise InvalidParameter(f"Invalid action '{action}' for entity '{entity}'.")
    if not types:
        raise InvalidParameter(
            f"Webhook events must be a non-empty list of WebhookEvent objects: {[]}."
        )
    return sorted(set(types))


def _mlgate_secret(secret: str | None) -> str:
    if secret is None or secret == "":
        return signing.generate_secret()
    if len(signing.signing_key(secret)) < MIN_SECRET_LEN:
        raise InvalidParameter(
            f"A subscription secret must carry at least {MIN_SECRET_LEN} bytes of key "
            "(use a whsec_<base64> secret, or omit it to have one generated)."
        )
    return secret


def _model_name(name: str | None) -> str | None:
    if name is None or name == "":
        return None
    if len(name) > 256:
        raise InvalidParameter("model_name is longer than 256 characters.")
    return name


def _page(page_token: str | None, max_results: int | None, kind: str) -> tuple[int, int]:
    limit = DEFAULT_PAGE if max_results is None else max_results
    if limit < 1 or limit > MAX_PAGE:
        raise InvalidParameter(f"max_results must be between 1 and {MAX_PAGE}.")
    return decode_page_token(page_token, kind), limit


# --- rendering -----------------------------------------------------------------------------------


def subscription_out(row: Any, events: list[str]) -> Subscription:
    return Subscription(
        id=row.id,
        name=row.name,
        url=row.url,
        events=events,
        status=row.status,
        flavor=row.flavor,
        created_by=row.created_by,
        created_at=row.created_at,
        updated_at=row.updated_at,
        description=row.description,
        model_name=row.model_name,
        previous_secret_expires_at=(
            row.previous_secret_expires_at
            if row.previous_secret and (row.previous_secret_expires_at or 0) > now_ms()
            else None
        ),
        failing_since=row.failing_since,
        auto_disabled_at=row.auto_disabled_at,
        disabled_reason=row.disabled_reason if row.status == "disabled" else None,
    )


def webhook_out(row: Any, events: list[str]) -> Webhook:
    return Webhook(
        webhook_id=row.id,
        name=row.name,
        url=row.url,
        events=[
            WebhookEventOut(entity=t.partition(".")[0].upper(), action=t.partition(".")[2].upper())
            for t in events
        ],
        status=row.status.upper(),
        creation_timestamp=row.created_at,
        last_updated_timestamp=row.updated_at,
        description=row.description or None,
    )


async def _find(s: AsyncSession, subscription_id: str, flavor: str | None) -> Any:
    row = await store.get_subscription(s, subscription_id, flavor=flavor)
    if row is None:
        raise SubscriptionNotFound(subscription_id, mlflow=flavor == MLFLOW)
    return row


async def _insert(
    s: AsyncSession,
    *,
    flavor: str,
    name: str,
    url: str,
    events: list[str],
    description: str | None,
    model_name: str | None,
    status: str,
    secret: str | None,
    actor: str,
    config: EventsConfig,
) -> Any:
    now = now_ms()
    sub_id = str(uuid.uuid4())
    await store.insert_subscription(
        s,
        {
            "id": sub_id,
            "flavor": flavor,
            "name": name,
            "description": description,
            "url": url,
            "model_name": model_name,
            "status": status,
            "secret": config.secrets.seal(secret) if secret else None,
            "previous_secret": None,
            "previous_secret_expires_at": None,
            "created_by": actor,
            "created_at": now,
            "updated_at": now,
        },
    )
    await store.set_subscription_events(s, sub_id, events)
    return await _find(s, sub_id, flavor)


# --- mlgate's subscriptions ----------------------------------------------------------------------


async def create_subscription(
    s: AsyncSession, req: SubscriptionCreate, *, actor: str, config: EventsConfig
) -> tuple[Subscription, str]:
    """Create a subscription; returns it and its signing secret (shown this once only)."""
    events = _event_types(req.events, KNOWN_EVENT_TYPES)
    secret = _mlgate_secret(req.secret)
    row = await _insert(
        s,
        flavor=MLGATE,
        name=_required_name(req.name),
        url=await _url(req.url, config),
        events=events,
        description=req.description,
        model_name=_model_name(req.model_name),
        status=_status(req.status),
        secret=secret,
        actor=actor,
        config=config,
    )
    return subscription_out(row, events), secret


async def get_subscription(s: AsyncSession, subscription_id: str) -> Subscription:
    row = await _find(s, subscription_id, None)
    return subscription_out(row, (await store.events_of(s, [row.id]))[row.id])


async def list_subscriptions(
    s: AsyncSession, max_results: int | None, page_token: str | None
) -> tuple[list[Subscription], str | None]:
    offset, limit = _page(page_token, max_results, "subscriptions")
    rows = await store.list_subscriptions(s, flavor=None, offset=offset, limit=limit + 1)
    events = await store.events_of(s, [r.id for r in rows[:limit]])
    token = encode_page_token(offset + limit, "subscriptions") if len(rows) > limit else None
    return [subscription_out(r, events[r.id]) for r in rows[:limit]], token


async def _status_change(s: AsyncSession, row: Any, status: str, actor: str) -> dict[str, Any]:
    """Columns (and audit entry) for an explicit status change by ``actor``.

    Enabling starts afresh: the failing run and the automatic disabling are forgotten, and the
    deliveries queued meanwhile go out in order. Disabling by hand stops queueing (MLflow's
    meaning of DISABLED).
    """
    if status == row.status and row.auto_disabled_at is None:
        return {}
    if status == "active" and row.status != "active":
        await audit.append(
            s,
            "subscription.enabled",
            f"subscription:{row.id}",
            {"name": row.name, "was_disabled_because": row.disabled_reason},
            actor,
        )
        await emit(
            s,
            "subscription.enabled",
            {
                "subscription_id": row.id,
                "subscription_name": row.name,
                "actor": actor,
                "timestamp": now_ms(),
            },
            model_name=row.model_name,
        )
        return {"failing_since": None, "auto_disabled_at": None, "disabled_reason": None}
    if status == "disabled":
        reason = f"disabled by {actor}"
        if row.status != "disabled":
            await audit.append(
                s,
                "subscription.disabled",
                f"subscription:{row.id}",
                {"name": row.name, "reason": reason},
                actor,
            )
            await emit(
                s,
                "subscription.disabled",
                {
                    "subscription_id": row.id,
                    "subscription_name": row.name,
                    "url": row.url,
                    "reason": reason,
                    "actor": actor,
                    "timestamp": now_ms(),
                },
                model_name=row.model_name,
            )
        return {"auto_disabled_at": None, "disabled_reason": reason}
    return {}


async def update_subscription(
    s: AsyncSession,
    subscription_id: str,
    req: SubscriptionUpdate,
    *,
    config: EventsConfig,
    actor: str,
) -> Subscription:
    row = await _find(s, subscription_id, None)
    allowed = frozenset(MLFLOW_EVENT_TYPES) if row.flavor == MLFLOW else KNOWN_EVENT_TYPES
    values: dict[str, Any] = {"updated_at": now_ms()}
    if req.name is not None:
        values["name"] = _required_name(req.name)
    if req.url is not None:
        values["url"] = await _url(req.url, config)
    if req.description is not None:
        values["description"] = req.description
    if req.model_name is not None:
        values["model_name"] = _model_name(req.model_name)
    if req.status is not None:
        values["status"] = _status(req.status)
        values.update(await _status_change(s, row, values["status"], actor))
    if req.events is not None:
        await store.set_subscription_events(s, row.id, _event_types(req.events, allowed))
    await store.update_subscription(s, row.id, **values)
    return await get_subscription(s, row.id)


async def rotate_secret(
    s: AsyncSession, subscription_id: str, req: RotateSecret, *, config: EventsConfig
) -> tuple[Subscription, str]:
    """A new signing secret; the old one keeps signing beside it for a grace period."""
    row = await _find(s, subscription_id, MLGATE)
    grace = DEFAULT_ROTATION_GRACE_S
    if req.previous_valid_for_seconds is not None:
        grace = req.previous_valid_for_seconds
    if grace < 0 or grace > MAX_ROTATION_GRACE_S:
        raise InvalidParameter(
            f"previous_valid_for_seconds must be between 0 and {MAX_ROTATION_GRACE_S}."
        )
    secret = _mlgate_secret(req.secret)
    now = now_ms()
    await store.update_subscription(
        s,
        row.id,
        secret=config.secrets.seal(secret),
        previous_secret=row.secret if grace else None,
        previous_secret_expires_at=now + grace * 1000 if grace else None,
        updated_at=now,
    )
    return await get_subscription(s, row.id), secret


async def set_subscription_enabled(
    s: AsyncSession, subscription_id: str, enabled: bool, *, actor: str
) -> Subscription:
    """Enable (resuming its queued deliveries in order) or disable a subscription; audited."""
    row = await _find(s, subscription_id, None)
    status = "active" if enabled else "disabled"
    values = await _status_change(s, row, status, actor)
    await store.update_subscription(s, row.id, status=status, updated_at=now_ms(), **values)
    return await get_subscription(s, row.id)


async def redeliver_dead(
    s: AsyncSession, subscription_id: str, *, actor: str
) -> tuple[Subscription, int]:
    """Queue every dead delivery of a subscription again (same ids, fresh attempt budgets).

    They go out in their original order, before newer deliveries still open, once the
    subscription is active. Returns the subscription and how many were queued; audited.
    """
    row = await _find(s, subscription_id, None)
    count = await store.requeue_dead(s, row.id, now_ms())
    await audit.append(
        s,
        "subscription.redelivered_dead",
        f"subscription:{row.id}",
        {"name": row.name, "count": count},
        actor,
    )
    return await get_subscription(s, row.id), count


async def record_subscription_health(
    s: AsyncSession, subscription_id: str, *, ok: bool, now: int, config: EventsConfig
) -> bool:
    """Track a subscription's failing run after an attempt; disable it when it ran too long.

    Returns whether this attempt disabled it. Disabling emits ``subscription.disabled`` and
    leaves an audit entry (actor ``system``), both in the attempt's transaction.
    """
    if ok:
        await store.note_success(s, subscription_id)
        return False
    await store.note_failure(s, subscription_id, now)
    if config.disable_after_ms <= 0:
        return False
    hours = config.disable_after_ms / 3_600_000
    reason = f"every delivery attempt failed for {hours:g} hours"
    if not await store.auto_disable(
        s,
        subscription_id,
        now=now,
        failing_before=now - config.disable_after_ms,
        reason=reason,
    ):
        return False
    row = await store.get_subscription(s, subscription_id)
    payload = {
        "subscription_id": subscription_id,
        "subscription_name": row.name,
        "url": row.url,
        "reason": reason,
        "failing_since": row.failing_since,
        "timestamp": now,
    }
    await audit.append(
        s, "subscription.disabled", f"subscription:{subscription_id}", payload, SYSTEM
    )
    await emit(s, "subscription.disabled", payload, model_name=row.model_name)
    return True


async def delete_subscription(
    s: AsyncSession, subscription_id: str, *, flavor: str | None = None
) -> None:
    row = await _find(s, subscription_id, flavor)
    now = now_ms()
    await store.update_subscription(s, row.id, deleted_at=now, updated_at=now)
    await store.close_open_deliveries(s, row.id, now=now, reason="subscription deleted")


# --- MLflow 3's webhook API ----------------------------------------------------------------------


async def create_webhook(
    s: AsyncSession, req: CreateWebhook, *, actor: str, config: EventsConfig
) -> Webhook:
    # mlflow server checks the three required fields first, in this order, in its own words.
    for field in ("name", "url", "events"):
        if not getattr(req, field):
            raise InvalidParameter(f"Missing value for required parameter '{field}'.")
    name = _name(req.name)
    url = await _url(req.url, config, mlflow=True)
    events = _mlflow_event_types(req.events)
    row = await _insert(
        s,
        flavor=MLFLOW,
        name=name,
        url=url,
        events=events,
        description=req.description or None,
        model_name=None,
        status=_status(req.status),
        secret=req.secret or None,
        actor=actor,
        config=config,
    )
    return webhook_out(row, events)


async def get_webhook(s: AsyncSession, webhook_id: str) -> Webhook:
    row = await _find(s, webhook_id, MLFLOW)
    return webhook_out(row, (await store.events_of(s, [row.id]))[row.id])


async def list_webhooks(
    s: AsyncSession, max_results: int | None, page_token: str | None
) -> tuple[list[Webhook], str | None]:
    offset, limit = _page(page_token, max_results, "webhooks")
    rows = await store.list_subscriptions(s, flavor=MLFLOW, offset=offset, limit=limit + 1)
    events = await store.events_of(s, [r.id for r in rows[:limit]])
    token = encode_page_token(offset + limit, "webhooks") if len(rows) > limit else None
    return [webhook_out(r, events[r.id]) for r in rows[:limit]], token


async def update_webhook(
    s: AsyncSession,
    webhook_id: str,
    req: UpdateWebhook,
    *,
    config: EventsConfig,
    actor: str,
) -> Webhook:
    """MLflow's update: absent fields stay; ``events`` replaces the list when non-empty."""
    row = await _find(s, webhook_id, MLFLOW)
    values: dict[str, Any] = {"updated_at": now_ms()}
    if req.name:
        values["name"] = _name(req.name)
    if req.url:
        values["url"] = await _url(req.url, config, mlflow=True)
    if req.description is not None:
        values["description"] = req.description
    if req.secret is not None:
        values["secret"] = config.secrets.seal(req.secret) if req.secret else None
    if req.status is not None and req.status not in ("", 0):
        values["status"] = _status(req.status)
        values.update(await _status_change(s, row, values["status"], actor))
    if req.events:
        await store.set_subscription_events(s, row.id, _mlflow_event_types(req.events))
    await store.update_subscription(s, row.id, **values)
    return await get_webhook(s, row.id)


async def delete_webhook(s: AsyncSession, webhook_id: str) -> None:
    await delete_subscription(s, webhook_id, flavor=MLFLOW)


async def webhook_test_target(
    s: AsyncSession, webhook_id: str, event: WebhookEventIn | None
) -> tuple[str, str, dict[str, Any], str | None]:
    """What ``test_webhook`` sends: URL, event type, MLflow's example payload, sealed secret."""
    row = await _find(s, webhook_id, MLFLOW)
    if event is not None and (event.entity or event.action):
        event_type = _mlflow_event_types([event])[0]
    else:
        event_type = (await store.events_of(s, [row.id]))[row.id][0]
    return row.url, event_type, example_payload(event_type), row.secret


def test_result(status_code: int | None, body: str | None, error: str | None) -> WebhookTestResult:
    if error is not None:
        return WebhookTestResult(success=False, error_message=f"Failed to test webhook: {error}")
    return WebhookTestResult(
        success=status_code is not None and status_code < 400,
        response_status=status_code,
        response_body=body,
    )
