"""Events operations: emit into the outbox, manage subscriptions, read and replay deliveries.

Split by topic: ``outbox`` (``emit`` and the registry listener), ``subscriptions`` (mlgate's
API and MLflow 3's webhook API over one table) and ``deliveries`` (the delivery log).
"""

from __future__ import annotations

from gates.events.service.deliveries import (
    get_delivery,
    list_deliveries,
    redeliver,
    test_webhook,
)
from gates.events.service.outbox import (
    batched,
    drop_held_after,
    emit,
    held_count,
    record_registry_event,
    registry_event_payloads,
)
from gates.events.service.subscriptions import (
    MLFLOW,
    MLGATE,
    create_subscription,
    create_webhook,
    delete_subscription,
    delete_webhook,
    get_subscription,
    get_webhook,
    list_subscriptions,
    list_webhooks,
    record_subscription_health,
    redeliver_dead,
    rotate_secret,
    set_subscription_enabled,
    update_subscription,
    update_webhook,
)

__all__ = [
    "MLFLOW",
    "MLGATE",
    "batched",
    "create_subscription",
    "create_webhook",
    "delete_subscription",
    "delete_webhook",
    "drop_held_after",
    "emit",
    "get_delivery",
    "get_subscription",
    "get_webhook",
    "held_count",
    "list_deliveries",
    "list_subscriptions",
    "list_webhooks",
    "record_registry_event",
    "record_subscription_health",
    "redeliver",
    "redeliver_dead",
    "registry_event_payloads",
    "rotate_secret",
    "set_subscription_enabled",
    "test_webhook",
    "update_subscription",
    "update_webhook",
]
