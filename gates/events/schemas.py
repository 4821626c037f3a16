"""Wire structs: mlgate's subscriptions and delivery log, and MLflow 3's webhook API."""

from __future__ import annotations

import msgspec

# --- mlgate subscriptions ----------------------------------------------------------------------


class SubscriptionCreate(msgspec.Struct):
    name: str | None = None
    url: str | None = None
    events: list[str] = []
    model_name: str | None = None
    description: str | None = None
    # A ``whsec_<base64>`` secret (or any string of 16+ characters); generated when absent.
    secret: str | None = None
    status: str | None = None


class SubscriptionUpdate(msgspec.Struct):
    name: str | None = None
    url: str | None = None
    events: list[str] | None = None
    model_name: str | None = None
    description: str | None = None
    status: str | None = None


class RotateSecret(msgspec.Struct):
    secret: str | None = None
    # How long the previous secret keeps signing next to the new one (default one day).
    previous_valid_for_seconds: int | None = None


class Subscription(msgspec.Struct, omit_defaults=True):
    id: str
    name: str
    url: str
    events: list[str]
    status: str
    flavor: str
    created_by: str
    created_at: int
    updated_at: int
    description: str | None = None
    model_name: str | None = None
    # Whether a previous secret still signs (during a rotation), and until when.
    previous_secret_expires_at: int | None = None
    # Since when every attempt has failed (absent once one succeeds).
    failing_since: int | None = None
    # Set when mlgate disabled it because it kept failing; it keeps queueing deliveries.
    auto_disabled_at: int | None = None
    # Why it is disabled (when it is).
    disabled_reason: str | None = None


class ListQuery(msgspec.Struct):
    max_results: int | None = None
    page_token: str | None = None


class DeliveryQuery(msgspec.Struct):
    subscription_id: str | None = None
    status: str | None = None
    max_results: int | None = None
    page_token: str | None = None


class Delivery(msgspec.Struct, omit_defaults=True):
    delivery_id: str
    event_id: str
    event_type: str
    subscription_id: str
    status: str
    attempts: int
    total_attempts: int
    created_at: int
    updated_at: int
    next_attempt_at: int | None = None
    last_status_code: int | None = None
    last_error: str | None = None
    delivered_at: int | None = None


class DeliveryAttempt(msgspec.Struct, omit_defaults=True):
    attempt: int
    started_at: int
    duration_ms: int
    url: str
    status_code: int | None = None
    error: str | None = None
    response_body: str | None = None


# --- MLflow 3 webhooks (mlflow/protos/webhooks.proto, JSON with enum names) --------------------

EnumValue = str | int


class WebhookEventIn(msgspec.Struct):
    entity: EnumValue | None = None
    action: EnumValue | None = None


class CreateWebhook(msgspec.Struct):
    name: str | None = None
    url: str | None = None
    events: list[WebhookEventIn] = []
    description: str | None = None
    secret: str | None = None
    status: EnumValue | None = None


class UpdateWebhook(msgspec.Struct):
    name: str | None = None
    description: str | None = None
    url: str | None = None
    events: list[WebhookEventIn] = []
    secret: str | None = None
    status: EnumValue | None = None


class TestWebhookRequest(msgspec.Struct):
    event: WebhookEventIn | None = None


class WebhookEventOut(msgspec.Struct):
    entity: str
    action: str


class Webhook(msgspec.Struct, omit_defaults=True):
    webhook_id: str
    name: str
    url: str
    events: list[WebhookEventOut]
    status: str
    creation_timestamp: int
    last_updated_timestamp: int
    description: str | None = None


class WebhookTestResult(msgspec.Struct, omit_defaults=True):
    success: bool
    response_status: int | None = None
    response_body: str | None = None
    error_message: str | None = None
