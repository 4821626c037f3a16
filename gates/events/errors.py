"""Events-domain errors, each carrying MLflow's error code and HTTP status."""

from __future__ import annotations

from tracking.core.errors import InvalidParameter, InvalidState, ResourceNotFound


class SubscriptionNotFound(ResourceNotFound):
    def __init__(self, subscription_id: str, *, mlflow: bool = False) -> None:
        # MLflow's wording, which its clients and tests match on.
        what = "Webhook" if mlflow else "Subscription"
        super().__init__(f"{what} with ID {subscription_id} not found.")


class DeliveryNotFound(ResourceNotFound):
    def __init__(self, delivery_id: str) -> None:
        super().__init__(f"Delivery with ID {delivery_id} not found.")


class UnsafeSubscriberUrl(InvalidParameter):
    """A refused subscriber URL; the message is already worded as mlflow server words it."""


class DeliveryInFlight(InvalidState):
    def __init__(self, delivery_id: str) -> None:
        super().__init__(
            f"Delivery {delivery_id} is being attempted right now; redeliver it after the attempt."
        )
