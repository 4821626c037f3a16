"""Tracking-domain errors, each carrying MLflow's error code and HTTP status."""

from __future__ import annotations

from tracking.core.errors import InvalidParameter, ResourceAlreadyExists, ResourceNotFound


class ExperimentNotFound(ResourceNotFound):
    def __init__(self, ref: object, by: str = "id") -> None:
        label = "name" if by == "name" else "id"
        super().__init__(f"No Experiment with {label}={ref} exists")


class ExperimentAlreadyExists(ResourceAlreadyExists):
    def __init__(self, name: str) -> None:
        super().__init__(f"Experiment(name={name}) already exists.")


class RunNotFound(ResourceNotFound):
    def __init__(self, run_id: str) -> None:
        super().__init__(f"Run with id={run_id} not found")


class LoggedModelNotFound(ResourceNotFound):
    def __init__(self, model_id: str) -> None:
        super().__init__(f"Logged model with ID '{model_id}' not found.")


class InactiveRun(InvalidParameter):
    def __init__(self, run_id: str) -> None:
        super().__init__(
            f"The run {run_id} must be in the 'active' state. Current state is deleted."
        )


class InactiveExperiment(InvalidParameter):
    def __init__(self, experiment_id: object) -> None:
        super().__init__(
            f"The experiment {experiment_id} must be in the 'active' state. "
            "Current state is deleted."
        )


class ParamChanged(InvalidParameter):
    def __init__(self, run_id: str, key: str, old: str, new: str) -> None:
        super().__init__(
            "Changing param values is not allowed. "
            f"Param with key='{key}' was already logged with value='{old}' for run ID='{run_id}'. "
            f"Attempted logging new value '{new}'."
        )


class MissingParameter(InvalidParameter):
    def __init__(self, name: str) -> None:
        super().__init__(f"Missing value for required parameter '{name}'.")
