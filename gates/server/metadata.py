"""Imports every domain's tables so migrations see the whole schema."""

from __future__ import annotations

import gates.approvals.models
import gates.attestations.models
import gates.audit.models
import gates.deployments.models
import gates.events.models
import gates.identity.models
import gates.policies.models  # noqa: F401
import registry.models  # noqa: F401
import tracking.models  # noqa: F401
from tracking.core.db import Base

target_metadata = Base.metadata
