"""Wire structs of the watch, report-back and deployments endpoints (snake_case JSON)."""

from __future__ import annotations

import msgspec


class WatchQuery(msgspec.Struct):
    name: str | None = None
    stage: str | None = None
    alias: str | None = None
    # Seconds to wait for a move before answering 304 (default and cap in gates.deployments).
    timeout: float | None = None
    # The ETag of the last answer, for clients that cannot send If-None-Match.
    since: str | None = None


class WatchOut(msgspec.Struct):
    name: str
    stage: str | None
    alias: str | None
    # The version the pointer names now; null when it names none (watchers keep waiting).
    version: str | None
    # Where the version's files are (what get-download-uri answers), and the same location
    # as an HTTP path on this server; the frozen manifest digest of those files.
    download_uri: str | None
    artifact_url: str | None
    digest: str | None
    # Send it back as If-None-Match (or ``since``) to wait for the next move.
    etag: str


class ReportBody(msgspec.Struct):
    deployment: str | None = None
    # The registered model the deployment follows, and its stage or alias.
    name: str | None = None
    stage: str | None = None
    alias: str | None = None
    replica_id: str | None = None
    version: str | int | None = None
    # The manifest digest of the files the replica runs: 64 hex digits, or "sha256:" + them.
    digest: str | None = None


class DeploymentsQuery(msgspec.Struct):
    # The registered model; ``deployment`` narrows the answer to one deployment of it.
    name: str | None = None
    deployment: str | None = None


class DesiredOut(msgspec.Struct):
    version: str | None
    digest: str | None


class ReplicaOut(msgspec.Struct):
    replica_id: str
    version: str | None
    digest: str | None
    reported_at: int
    reported_by: str
    in_sync: bool
    # No report for longer than the stale window: shown, but left out of drift.
    stale: bool


class DeploymentOut(msgspec.Struct):
    name: str
    model: str
    stage: str | None
    alias: str | None
    desired: DesiredOut
    replicas: list[ReplicaOut]
    # Every live replica runs the desired digest (false with no live replica).
    in_sync: bool
    # Since when some live replica has differed (ms), and whether deployment.drift fired.
    mismatch_since: int | None
    drifted: bool
