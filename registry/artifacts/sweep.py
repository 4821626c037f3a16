"""The background sweep that clears what abandoned uploads leave in the artifact store.

A server killed mid-upload leaves its temp file (possibly hundreds of MB) in the local store's
staging folder; a client that never completes a multipart upload leaves it open, locally as a
folder of parts and on S3 as an invisible, billed upload. Every replica runs this sweep: each
removal tolerates the thing being gone already, and nothing touched within the age is removed.
"""

from __future__ import annotations

import logging

from registry.artifacts.storage import ArtifactStorage
from tracking.core.background import PollingLoop

log = logging.getLogger("mlgate.artifacts")


class StaleUploadSweep(PollingLoop):
    task_name = "mlgate-stale-upload-sweep"

    def __init__(
        self, storage: ArtifactStorage, *, max_age_seconds: float, interval_seconds: float
    ) -> None:
        super().__init__(interval_seconds, log)
        self.storage = storage
        self.max_age_seconds = max_age_seconds

    def more_waiting(self, handled: int) -> bool:
        return False  # one pass clears everything due; the next is an interval away

    async def run_once(self) -> int:
        removed = await self.storage.sweep_stale_uploads(self.max_age_seconds)
        if removed:
            log.info("removed %d abandoned upload(s) older than %ss", removed, self.max_age_seconds)
        return removed
