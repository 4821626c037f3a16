"""Identity-domain errors, each carrying MLflow's error code and HTTP status."""

from __future__ import annotations

from tracking.core.errors import (
    InvalidParameter,
    PermissionDenied,
    ResourceAlreadyExists,
    ResourceNotFound,
    TooManyRequests,
    Unauthenticated,
)


class UserNotFound(ResourceNotFound):
    def __init__(self, username: str) -> None:
        super().__init__(f"User '{username}' not found.")


class UserAlreadyExists(ResourceAlreadyExists):
    def __init__(self, username: str) -> None:
        super().__init__(f"User '{username}' already exists.")


class TokenNotFound(ResourceNotFound):
    def __init__(self, token_id: object) -> None:
        super().__init__(f"API token '{token_id}' not found.")


class GrantNotFound(ResourceNotFound):
    def __init__(self, grant_id: object) -> None:
        super().__init__(f"Grant '{grant_id}' not found.")


class GrantAlreadyExists(ResourceAlreadyExists):
    def __init__(self, username: str, resource_type: str, pattern: str) -> None:
        super().__init__(
            f"User '{username}' already has a grant on {resource_type} '{pattern}'; delete it "
            "first to change its role or targets."
        )


class InvalidCredentials(Unauthenticated):
    # One message for every failure: unknown user, wrong password, disabled, bad token.
    def __init__(self) -> None:
        super().__init__("Invalid credentials.")


class AuthenticationRequired(Unauthenticated):
    def __init__(self) -> None:
        super().__init__(
            "Authentication required: send HTTP Basic credentials (MLFLOW_TRACKING_USERNAME "
            "and MLFLOW_TRACKING_PASSWORD) or a bearer token (MLFLOW_TRACKING_TOKEN)."
        )


class LoginThrottled(TooManyRequests):
    def __init__(self, retry_after: int) -> None:
        super().__init__(
            f"Too many failed logins; try again in {retry_after} seconds.", retry_after=retry_after
        )


class LastAdministrator(InvalidParameter):
    def __init__(self) -> None:
        super().__init__("The last active administrator cannot be removed, disabled or demoted.")


class NotAllowed(PermissionDenied):
    pass


class NoAdministrator(Exception):
    """Start-up refusal: auth is on, no administrator exists and none is configured."""
