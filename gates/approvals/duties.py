"""Separation of duties and who may withdraw a request: rules the approvals service enforces
and the web UI reads, so the inbox never offers what the service would refuse."""

from __future__ import annotations

from gates.policies.ports import Actor


def separation_of_duties(
    approver: str,
    *,
    requester: str | None,
    run_author: str | None,
    run_id: str | None,
    version: int | str,
) -> str | None:
    """Why ``approver`` may not approve this request (separation of duties), or None.

    Only authenticated principals count: a ``requested_by`` claim can bar nobody."""
    if requester and approver == requester:
        return (
            f"'{approver}' requested this promotion and cannot approve it (separation of duties)."
        )
    if run_author and approver == run_author:
        made = f"run {run_id}" if run_id else f"version {version}"
        return (
            f"'{approver}' authored {made} and cannot approve its promotion (separation of duties)."
        )
    return None


def may_cancel(actor: Actor, requester: str | None) -> bool:
    """Whether ``actor`` may withdraw a request ``requester`` opened (they, or an admin)."""
    return actor.is_admin or (actor.authenticated and actor.name == requester)
