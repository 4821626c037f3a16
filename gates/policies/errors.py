"""Gate-domain errors, each carrying an MLflow-style ``error_code`` and an HTTP status."""

from __future__ import annotations

from tracking.core.errors import (
    InvalidParameter,
    InvalidState,
    PermissionDenied,
    ResourceAlreadyExists,
    ResourceNotFound,
    Unauthenticated,
)


class GateNotFound(ResourceNotFound):
    def __init__(self, name: str) -> None:
        super().__init__(f"Gate '{name}' not found")


class GateAlreadyExists(ResourceAlreadyExists):
    def __init__(self, name: str) -> None:
        super().__init__(f"Gate '{name}' already exists; update it to make a new version.")


class NoGateForTarget(ResourceNotFound):
    def __init__(self, model: str, target: str) -> None:
        super().__init__(f"No enabled gate guards target '{target}' of model '{model}'.")


class DecisionNotFound(ResourceNotFound):
    def __init__(self, decision_id: str) -> None:
        super().__init__(f"Gate decision '{decision_id}' not found")


class SecretNotFound(ResourceNotFound):
    def __init__(self, secret_id: str) -> None:
        super().__init__(f"Gate secret '{secret_id}' not found")


class TooManySecrets(InvalidState):
    def __init__(self, gate: str) -> None:
        super().__init__(
            f"Gate '{gate}' already has two active secrets; rotate or revoke one first."
        )


class InvalidPolicy(InvalidParameter):
    pass


class IdempotencyKeyReused(InvalidParameter):
    def __init__(self, key: str) -> None:
        super().__init__(
            f"Idempotency key '{key}' was already used for a different promotion request."
        )


class BadSignature(Unauthenticated):
    """The webhook's signature, timestamp or id does not verify (the reason is in the message)."""


class PromotionNotAllowed(PermissionDenied):
    pass


class LeavingGatedTarget(PermissionDenied):
    """A plain move that takes a version off (or deletes) a target a gate guards."""

    def __init__(self, model: str, target: str, gate: str, version: int, action: str) -> None:
        shown = target if target.startswith("@") else f"stage '{target}'"
        super().__init__(
            f"{shown} of model '{model}' is guarded by gate '{gate}' (policy version "
            f"{version}); leaving it ({action}) needs an admin's override with the header "
            "'X-Mlgate-Override: <reason>' (audited), like reaching it."
        )


class GatedTarget(PermissionDenied):
    """A plain stage transition or alias move onto a target a gate guards."""

    def __init__(self, model: str, target: str, gate: str, version: int) -> None:
        shown = target if target.startswith("@") else f"stage '{target}'"
        super().__init__(
            f"{shown} of model '{model}' is guarded by gate '{gate}' (policy version "
            f"{version}): promote through POST /api/2.0/mlgate/gates/promote, or an admin may "
            "override with the header 'X-Mlgate-Override: <reason>' (audited)."
        )
