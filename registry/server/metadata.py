"""Imports every domain's tables so migrations see the whole schema."""

from __future__ import annotations

import registry.models  # noqa: F401
import tracking.models  # noqa: F401
from tracking.core.db import Base

target_metadata = Base.metadata
