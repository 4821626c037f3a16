"""Wire structs of the audit API."""

from __future__ import annotations

from typing import Any

import msgspec


class AuditQuery(msgspec.Struct):
    kind: str | None = None
    subject: str | None = None
    max_results: int | None = None
    page_token: str | None = None


class AuditEntryOut(msgspec.Struct):
    seq: int
    at: int
    actor: str
    kind: str
    subject: str
    payload: dict[str, Any]
    prev_hash: str
    hash: str


class AuditVerifyQuery(msgspec.Struct):
    # Start after this entry (0: the genesis); a window checks at most max_entries.
    after_seq: int = 0
    max_entries: int | None = None
