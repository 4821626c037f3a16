"""The registry's tables as Core objects and the row count of a write, for every store module."""

from __future__ import annotations

from typing import Any

from registry.models import ModelVersion, RegisteredModel

RM = RegisteredModel.__table__
MV = ModelVersion.__table__


def rowcount(result: Any) -> int:
    return int(result.rowcount or 0)
