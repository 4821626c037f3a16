"""The CI promotion webhook: authenticate, decide, and act on the decision in one transaction.

A passing decision registers the run's version and moves the target (or opens an approval
request); a failing one is stored and answered with 422, and nothing is created or moved.
Idempotency rests on the unique (model, target, idempotency_key) of ``gate_decisions``: the
decision row is claimed *before* anything is created, so a concurrent duplicate waits on it and
then returns the stored decision. Dry runs evaluate without acting; their decisions are stored
(``dry_run: true``) for explanation but are never bound to an idempotency key.

Closed means closed: a replay answers with the newest decision of the key and the *current*
status of its approval request. With ``reopen``, a replay whose request is closed (expired,
rejected, cancelled or failed) is decided again; the new decision ``supersedes`` the stored one,
which is linked forward to it, so later replays of the key follow the links to it. A reopen is
never implicit: otherwise a CI retry would silently re-ask after a rejection.

Modules: ``callers`` (the request's checks, the gate, the caller's proof), ``candidates`` (the
run or version promoted, the version registered), ``prepare`` (what is read before the write
transaction), ``decide`` (the transaction itself).
"""

from gates.policies.promotion.callers import (
    MAX_IDEMPOTENCY_KEY,
    Caller,
    request_fingerprint,
    validate_request,
)
from gates.policies.promotion.candidates import create_request
from gates.policies.promotion.decide import CLOSED_STATUSES, MAX_REOPENS, Promotion, promote
from gates.policies.promotion.prepare import Prepared, prepare

__all__ = [
    "CLOSED_STATUSES",
    "MAX_IDEMPOTENCY_KEY",
    "MAX_REOPENS",
    "Caller",
    "Prepared",
    "Promotion",
    "create_request",
    "prepare",
    "promote",
    "request_fingerprint",
    "validate_request",
]
