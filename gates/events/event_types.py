"""The event types subscribers can receive, and MLflow 3's webhook names and payload shapes."""

from __future__ import annotations

import re
from typing import Any

# mlgate's own events (the deployment-gate story) ...
MLGATE_EVENT_TYPES = (
    "model_version.created",
    "model_version.deleted",
    "registered_model.deleted",
    "stage.transitioned",
    "alias.moved",
    "gate.decided",
    "gate.overridden",
    "approval.requested",
    "approval.approved",
    "approval.rejected",
    "approval.cancelled",
    "approval.expired",
    "approval.commented",
    "approval.break_glass",
    # A subscription disabled because its receiver kept failing, or enabled again.
    "subscription.disabled",
    "subscription.enabled",
    # A deployment's replicas differed from its pointer for MLGATE_DRIFT_AFTER_SECONDS, or
    # match it again (gates/deployments).
    "deployment.drift",
    "deployment.converged",
)

# ... and MLflow 3's, as ``entity.action`` (mlflow/entities/webhook.py, VALID_ENTITY_ACTIONS).
# mlgate emits the registry and prompt ones; budget events are accepted on subscriptions for
# compatibility but never occur.
MLFLOW_EVENT_TYPES = (
    "registered_model.created",
    "model_version.created",
    "model_version_tag.set",
    "model_version_tag.deleted",
    "model_version_alias.created",
    "model_version_alias.deleted",
    "prompt.created",
    "prompt_version.created",
    "prompt_tag.set",
    "prompt_tag.deleted",
    "prompt_version_tag.set",
    "prompt_version_tag.deleted",
    "prompt_alias.created",
    "prompt_alias.deleted",
    "budget_policy.exceeded",
)

KNOWN_EVENT_TYPES = frozenset(MLGATE_EVENT_TYPES) | frozenset(MLFLOW_EVENT_TYPES)

_EVENT_TYPE_RE = re.compile(r"^[a-z][a-z_]*(\.[a-z][a-z_]*)+$")


def is_well_formed(event_type: str) -> bool:
    return len(event_type) <= 64 and _EVENT_TYPE_RE.match(event_type) is not None


# The ``data`` keys MLflow sends for each of its events (mlflow/webhooks/types.py). mlgate stores
# a superset (actor, timestamp ...) and trims it to these for MLflow-flavoured webhooks.
MLFLOW_PAYLOAD_KEYS: dict[str, tuple[str, ...]] = {
    "registered_model.created": ("name", "tags", "description"),
    "model_version.created": ("name", "version", "source", "run_id", "tags", "description"),
    "model_version_tag.set": ("name", "version", "key", "value"),
    "model_version_tag.deleted": ("name", "version", "key"),
    "model_version_alias.created": ("name", "alias", "version"),
    "model_version_alias.deleted": ("name", "alias"),
    "prompt_version.created": ("name", "version", "template", "tags", "description"),
}


def mlflow_data(event_type: str, payload: dict[str, Any]) -> dict[str, Any]:
    keys = MLFLOW_PAYLOAD_KEYS.get(event_type)
    if keys is None:
        return payload
    return {k: payload.get(k) for k in keys}


def split_mlflow_type(event_type: str) -> tuple[str, str]:
    entity, _, action = event_type.partition(".")
    return entity, action


# What ``test_webhook`` sends, as MLflow does (each payload class's ``example()``).
_MLFLOW_EXAMPLES: dict[str, dict[str, Any]] = {
    "registered_model.created": {
        "name": "example_model",
        "tags": {"example_key": "example_value"},
        "description": "An example registered model",
    },
    "model_version.created": {
        "name": "example_model",
        "version": "1",
        "source": "models:/123",
        "run_id": "abcd1234abcd5678",
        "tags": {"example_key": "example_value"},
        "description": "An example model version",
    },
    "model_version_tag.set": {
        "name": "example_model",
        "version": "1",
        "key": "example_key",
        "value": "example_value",
    },
    "model_version_tag.deleted": {"name": "example_model", "version": "1", "key": "example_key"},
    "model_version_alias.created": {
        "name": "example_model",
        "alias": "example_alias",
        "version": "1",
    },
    "model_version_alias.deleted": {"name": "example_model", "alias": "example_alias"},
    "prompt.created": {
        "name": "example_prompt",
        "tags": {"example_key": "example_value"},
        "description": "An example prompt",
    },
    "prompt_version.created": {
        "name": "example_prompt",
        "version": "1",
        "template": "Hello {{name}}!",
        "tags": {"example_key": "example_value"},
        "description": "An example prompt version",
    },
    "prompt_tag.set": {"name": "example_prompt", "key": "example_key", "value": "example_value"},
    "prompt_tag.deleted": {"name": "example_prompt", "key": "example_key"},
    "prompt_version_tag.set": {
        "name": "example_prompt",
        "version": "1",
        "key": "example_key",
        "value": "example_value",
    },
    "prompt_version_tag.deleted": {"name": "example_prompt", "version": "1", "key": "example_key"},
    "prompt_alias.created": {"name": "example_prompt", "alias": "example_alias", "version": "1"},
    "prompt_alias.deleted": {"name": "example_prompt", "alias": "example_alias"},
    "budget_policy.exceeded": {
        "budget_policy_id": "bp-abc123",
        "budget_unit": "USD",
        "budget_amount": 100.0,
        "current_spend": 105.50,
        "duration_unit": "MONTHS",
        "duration_value": 1,
        "target_scope": "ENDPOINT",
        "workspace": "default",
        "target_value": "ep-abc123",
        "window_start": 1704067200000,
    },
}


def example_payload(event_type: str) -> dict[str, Any]:
    """A sample ``data`` object for ``event_type`` (MLflow's examples; a stub for mlgate's)."""
    found = _MLFLOW_EXAMPLES.get(event_type)
    if found is not None:
        return dict(found)
    return {"name": "example_model", "example": True}
