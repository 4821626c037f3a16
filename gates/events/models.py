"""Outbox, webhook subscriptions, deliveries and the delivery-attempt log."""

from __future__ import annotations

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from tracking.core.db import Base
from tracking.core.types import BigIntPK

EVENT_TYPE_LEN = 64
MODEL_NAME_LEN = 256


class OutboxEvent(Base):
    """One event, inserted in the transaction of the change it describes.

    ``id`` orders events (for one model, in commit order: the change holds the model's row
    lock); ``event_id`` is the stable identity subscribers see.
    """

    __tablename__ = "outbox_events"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(36), unique=True)
    type: Mapped[str] = mapped_column(String(EVENT_TYPE_LEN))
    model_name: Mapped[str | None] = mapped_column(String(MODEL_NAME_LEN), nullable=True)
    payload: Mapped[str] = mapped_column(Text)  # JSON object
    created_at: Mapped[int] = mapped_column(BigInteger)  # epoch ms

    __table_args__ = (Index("ix_outbox_events_created_at", "created_at"),)


class WebhookSubscription(Base):
    """A receiver of events: mlgate's own subscriptions and MLflow-API webhooks alike.

    ``flavor`` picks the wire format: 'mlgate' (Standard Webhooks headers and envelope) or
    'mlflow' (MLflow 3's ``X-MLflow-*`` headers and ``{entity, action, timestamp, data}``).
    Secrets are stored sealed and never returned after creation; ``previous_secret`` keeps
    signing until ``previous_secret_expires_at`` so receivers can rotate without a gap.
    """

    __tablename__ = "webhook_subscriptions"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    flavor: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(256))
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    url: Mapped[str] = mapped_column(String(2000))
    # Only events about this registered model when set (mlgate subscriptions).
    model_name: Mapped[str | None] = mapped_column(String(MODEL_NAME_LEN), nullable=True)
    status: Mapped[str] = mapped_column(String(16))  # 'active' | 'disabled'
    secret: Mapped[str | None] = mapped_column(Text, nullable=True)
    previous_secret: Mapped[str | None] = mapped_column(Text, nullable=True)
    previous_secret_expires_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    created_by: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[int] = mapped_column(BigInteger)
    # Soft delete, as MLflow does: deliveries keep pointing at the row.
    deleted_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # When the current run of failed attempts began (NULL once an attempt succeeds), and the
    # automatic disabling it leads to: when and why. An automatically disabled subscription
    # keeps queueing deliveries, so re-enabling it loses nothing.
    failing_since: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    auto_disabled_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    disabled_reason: Mapped[str | None] = mapped_column(Text, nullable=True)

    __table_args__ = (Index("ix_webhook_subscriptions_created_at", "created_at"),)


class WebhookSubscriptionEvent(Base):
    """An event type a subscription receives (indexed, so emitting is one selective query)."""

    __tablename__ = "webhook_subscription_events"

    subscription_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("webhook_subscriptions.id", ondelete="CASCADE"), primary_key=True
    )
    event_type: Mapped[str] = mapped_column(String(EVENT_TYPE_LEN), primary_key=True)

    __table_args__ = (
        Index("ix_webhook_subscription_events_type", "event_type", "subscription_id"),
    )


class WebhookDelivery(Base):
    """One event for one subscription: delivered at least once, in order per subscription.

    ``status``: 'pending' (not tried yet), 'failed' (a retry is scheduled), 'succeeded' or
    'dead' (out of attempts: the retry schedule ran out). A worker owns a delivery while
    ``claimed_until`` is in the future.
    """

    __tablename__ = "webhook_deliveries"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    delivery_id: Mapped[str] = mapped_column(String(36), unique=True)
    event_pk: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("outbox_events.id", ondelete="CASCADE")
    )
    subscription_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("webhook_subscriptions.id", ondelete="CASCADE")
    )
    status: Mapped[str] = mapped_column(String(16))
    # Attempts since the delivery was queued or last redelivered (compared with the maximum),
    # and over its whole life.
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    total_attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[int] = mapped_column(BigInteger)
    claimed_until: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    claimed_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    last_status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[int] = mapped_column(BigInteger)
    delivered_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)

    __table_args__ = (
        # The head of each subscription's queue, and the delivery log's filters.
        Index("ix_webhook_deliveries_subscription_status", "subscription_id", "status", "id"),
        # What the worker polls for.
        Index("ix_webhook_deliveries_status_next", "status", "next_attempt_at"),
        Index("ix_webhook_deliveries_event", "event_pk"),
    )


class WebhookDeliveryAttempt(Base):
    """One HTTP attempt of a delivery: the delivery log."""

    __tablename__ = "webhook_delivery_attempts"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    delivery_pk: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("webhook_deliveries.id", ondelete="CASCADE")
    )
    attempt: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[int] = mapped_column(BigInteger)
    duration_ms: Mapped[int] = mapped_column(Integer)
    url: Mapped[str] = mapped_column(String(2000))
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    response_body: Mapped[str | None] = mapped_column(Text, nullable=True)  # first 1 KiB

    __table_args__ = (Index("ix_webhook_delivery_attempts_delivery", "delivery_pk", "id"),)


__all__ = [
    "OutboxEvent",
    "WebhookDelivery",
    "WebhookDeliveryAttempt",
    "WebhookSubscription",
    "WebhookSubscriptionEvent",
]
