"""Registry-domain errors, each carrying MLflow's error code and HTTP status."""

from __future__ import annotations

from tracking.core.errors import (
    InvalidParameter,
    PermissionDenied,
    ResourceAlreadyExists,
    ResourceNotFound,
)


class RegisteredModelNotFound(ResourceNotFound):
    def __init__(self, name: str) -> None:
        super().__init__(f"Registered Model with name={name} not found")


class RegisteredModelAlreadyExists(ResourceAlreadyExists):
    def __init__(self, name: str) -> None:
        super().__init__(f"Registered Model (name={name}) already exists.")


class ModelVersionNotFound(ResourceNotFound):
    def __init__(self, name: str, version: object) -> None:
        super().__init__(f"Model Version (name={name}, version={version}) not found")


class AliasNotFound(InvalidParameter):
    # MLflow answers an unknown alias with INVALID_PARAMETER_VALUE/400, not a 404.
    def __init__(self, name: str, alias: str) -> None:
        super().__init__(f"Registered model alias {alias} not found.")


class InvalidStage(InvalidParameter):
    def __init__(self, stage: object) -> None:
        super().__init__(
            f"Invalid Model Version stage: {stage}. "
            "Value must be one of None, Staging, Production, Archived."
        )


class InvalidSource(InvalidParameter):
    """A model version ``source`` that is not one of the forms mlgate can vouch for."""

    def __init__(self, source: object, why: str) -> None:
        shown = source if isinstance(source, str) and len(source) <= 200 else f"{source!s:.200}..."
        super().__init__(f"Invalid model version source {shown!r}: {why}.")


class FrozenAreaReadOnly(PermissionDenied):
    """A client write or delete in the registry's frozen copies of version files."""

    def __init__(self, path: str) -> None:
        super().__init__(
            f"Artifact path '{path}' is protected: it is in the registry's frozen copies of "
            "model version files, which are read-only."
        )


class VersionFilesImmutable(PermissionDenied):
    """A write or delete that would change the files of a registered model version."""

    def __init__(self, path: str, name: str, version: int, root: str) -> None:
        super().__init__(
            f"Artifact path '{path}' is protected: the files under '{root}' belong to registered "
            f"model version (name={name}, version={version}) and are immutable. Write elsewhere, "
            "or delete that model version first."
        )
