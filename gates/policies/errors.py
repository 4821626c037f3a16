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


class OidcTokenRefused(Unauthenticated):
    """A CI token that does not prove who sent it (signature, issuer, audience, time)."""

    headers = {"WWW-Authenticate": 'Bearer realm="mlgate", error="invalid_token"'}

    def __init__(self, reason: str) -> None:
        super().__init__(f"OIDC token refused: {reason}")


class OidcClaimsRefused(PermissionDenied):
    """A verified CI token whose claims the gate's trust does not allow (wrong repository...)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"OIDC token not allowed by the gate: {reason}")


class OidcTrustNotFound(ResourceNotFound):
    def __init__(self, trust_id: str) -> None:
        super().__init__(f"OIDC trust '{trust_id}' not found")


class TooManyOidcTrusts(InvalidState):
    def __init__(self, gate: str, limit: int) -> None:
        super().__init__(f"Gate '{gate}' already trusts {limit} OIDC issuers; remove one first.")
