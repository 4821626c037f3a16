"""Approval-domain errors, each carrying an MLflow-style ``error_code`` and an HTTP status."""

from __future__ import annotations

from tracking.core.errors import InvalidState, PermissionDenied, ResourceNotFound


class ApprovalNotFound(ResourceNotFound):
    def __init__(self, request_id: str) -> None:
        super().__init__(f"Approval request '{request_id}' not found")


class ApprovalClosed(InvalidState):
    def __init__(self, request_id: str, status: str) -> None:
        super().__init__(f"Approval request '{request_id}' is {status}; it can no longer change.")


class AlreadyApproved(InvalidState):
    def __init__(self, request_id: str, user: str) -> None:
        super().__init__(f"'{user}' has already approved request '{request_id}'.")


class SeparationOfDuties(PermissionDenied):
    """The requester and the run's author may not sign off their own promotion."""


class NotAnApprover(PermissionDenied):
    def __init__(self, user: str, model: str, target: str) -> None:
        super().__init__(
            f"'{user}' does not hold the approver role on model '{model}' for {target}."
        )
