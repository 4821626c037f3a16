"""The bytes and headers of one delivery, in mlgate's or MLflow's format."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from gates.events import signing
from gates.events.event_types import mlflow_data, split_mlflow_type


def iso_timestamp(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat()


def mlgate_request(
    *,
    delivery_id: str,
    event_id: str,
    event_type: str,
    payload: dict[str, Any],
    created_at: int,
    secrets: Sequence[str],
    attempt: int,
    now_s: int,
) -> tuple[bytes, dict[str, str]]:
    """Standard Webhooks: ``{"id", "type", "timestamp", "data"}`` and ``webhook-*`` headers."""
    body = json.dumps(
        {
            "id": event_id,
            "type": event_type,
            "timestamp": iso_timestamp(created_at),
            "data": payload,
        },
        separators=(",", ":"),
    ).encode()
    headers = {
        signing.WEBHOOK_ID: delivery_id,
        signing.WEBHOOK_TIMESTAMP: str(now_s),
        "mlgate-event-id": event_id,
        "mlgate-event-type": event_type,
        "mlgate-delivery-attempt": str(attempt),
    }
    if secrets:
        headers[signing.WEBHOOK_SIGNATURE] = signing.standard_signature(
            secrets, delivery_id, now_s, body
        )
    return body, headers


def mlflow_request(
    *,
    delivery_id: str,
    event_type: str,
    payload: dict[str, Any],
    created_at: int,
    secret: str | None,
    now_s: int,
) -> tuple[bytes, dict[str, str]]:
    """MLflow 3: ``{"entity", "action", "timestamp", "data"}`` and ``X-MLflow-*`` headers."""
    entity, action = split_mlflow_type(event_type)
    body = json.dumps(
        {
            "entity": entity,
            "action": action,
            "timestamp": iso_timestamp(created_at),
            "data": mlflow_data(event_type, payload),
        }
    ).encode()
    headers = {
        signing.MLFLOW_DELIVERY_ID: delivery_id,
        signing.MLFLOW_TIMESTAMP: str(now_s),
    }
    if secret:
        headers[signing.MLFLOW_SIGNATURE] = signing.mlflow_signature(
            secret, delivery_id, now_s, body
        )
    return body, headers
