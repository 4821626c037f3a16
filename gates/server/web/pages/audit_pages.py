"""The audit trail page and the webhook pages (subscriptions, delivery log, redeliver).

Both are administrators' views, as their APIs are (``gates/audit/api.py``,
``gates/events/api.py``): the trail records every actor and decision, and subscriptions reach
out to arbitrary URLs with every event. Signing secrets are never shown (the service's
``Subscription`` carries none).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import SplitResult, quote, urlsplit, urlunsplit

from litestar import Request, Response, get, post

from gates.audit import service as audit_service
from gates.audit.schemas import AuditEntryOut
from gates.events import service as events_service
from gates.events.errors import DeliveryNotFound
from gates.events.service import deliveries as delivery_service
from gates.server.web.render import page, redirect_with_flash, with_query
from registry.artifacts.api import RAW_BODY_OPT
from tracking.core.auth import ADMIN, actor_name, permission_opt
from tracking.core.errors import InvalidParameter, MlflowError
from tracking.core.http import database

Req = Request[Any, Any, Any]

ADMIN_ONLY = permission_opt(ADMIN)
ADMIN_FORM = permission_opt(ADMIN, **{RAW_BODY_OPT: True})

AUDIT_PAGE = 50
MAX_AUDIT_PAGE = 200
SUBSCRIPTION_PAGE = 100
DELIVERY_PAGE = 50
MAX_FILTER = 256
DETAILS_SHOWN = 300
# Suggestions for the kind filter; any kind may be typed, and 'x.*' matches a family.
KIND_SUGGESTIONS = (
    "stage.transitioned",
    "alias.moved",
    "model_version.created",
    "model_version.deleted",
    "registered_model.deleted",
    "gate.decided",
    "gate.overridden",
    "gate.*",
    "approval.requested",
    "approval.approved",
    "approval.rejected",
    "approval.cancelled",
    "approval.commented",
    "approval.executed",
    "approval.failed",
    "approval.*",
    "policy.created",
    "policy.updated",
    "policy.enabled",
    "policy.disabled",
    "policy.secret_added",
    "policy.secret_revoked",
    "policy.*",
    "user.created",
    "user.updated",
    "user.deleted",
    "user.*",
    "token.created",
    "token.revoked",
    "token.*",
    "grant.created",
    "grant.deleted",
    "grant.*",
)
DELIVERY_STATUSES = ("pending", "failed", "succeeded", "dead")


def _param(request: Req, name: str) -> str | None:
    value = request.query_params.get(name)
    if value is None:
        return None
    value = value.strip()
    if len(value) > MAX_FILTER:
        raise InvalidParameter(f"The {name!r} filter is longer than {MAX_FILTER} characters.")
    return value or None


# --- audit ---------------------------------------------------------------------------------------


def _day_start_ms(raw: str, name: str) -> int:
    try:
        day = datetime.strptime(raw, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise InvalidParameter(
            f"Invalid {name!r} date {raw[:40]!r}: use YYYY-MM-DD (UTC)."
        ) from None
    return int(day.timestamp() * 1000)


def audit_filter(request: Req) -> audit_service.AuditFilter:
    """The page's filters as the service's; a bad value is a 400 with a clear message."""
    since = _param(request, "from")
    until = _param(request, "to")
    since_ms = _day_start_ms(since, "from") if since else None
    # 'to' is a whole day, inclusive: everything before the next day's midnight.
    until_ms = (
        _day_start_ms(until, "to") + int(timedelta(days=1).total_seconds() * 1000)
        if until
        else None
    )
    if since_ms is not None and until_ms is not None and since_ms >= until_ms:
        raise InvalidParameter("The 'from' date must not be after the 'to' date.")
    return audit_service.AuditFilter(
        kind=_param(request, "kind"),
        model=_param(request, "model"),
        actor=_param(request, "actor"),
        since_ms=since_ms,
        until_ms=until_ms,
    )


def _page_size(raw: str | None) -> int:
    if not raw:
        return AUDIT_PAGE
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_AUDIT_PAGE:
        raise InvalidParameter(f"max_results must be a whole number from 1 to {MAX_AUDIT_PAGE}.")
    return int(raw)


def _model_link(name: str) -> str:
    return f"/models/{quote(name, safe='')}"


def audit_row(entry: AuditEntryOut) -> dict[str, Any]:
    """One table row: the entry plus links to the model and version it is about."""
    payload = entry.payload if isinstance(entry.payload, dict) else {}
    kind, _, ident = entry.subject.partition(":")
    model = ident if kind == "model" else payload.get("model")
    version = payload.get("version")
    links: list[tuple[str, str]] = []
    if isinstance(model, str) and model:
        links.append((model, _model_link(model)))
        if isinstance(version, str | int) and not isinstance(version, bool) and str(version):
            links.append(
                (f"version {version}", f"{_model_link(model)}/versions/{quote(str(version))}")
            )
    details = json.dumps(payload, separators=(",", ":"), ensure_ascii=False, sort_keys=True)
    return {
        "seq": entry.seq,
        "at": entry.at,
        "actor": entry.actor,
        "kind": entry.kind,
        "subject": entry.subject,
        "links": links,
        "details": details,
        "details_short": details
        if len(details) <= DETAILS_SHOWN
        else details[:DETAILS_SHOWN] + "…",
        "hash": entry.hash,
    }


@get("/audit", opt=ADMIN_ONLY, include_in_schema=False)
async def audit_page(request: Req) -> Response[Any]:
    form = {
        name: request.query_params.get(name) or ""
        for name in ("kind", "model", "actor", "from", "to")
    }
    context: dict[str, Any] = {
        "form": form,
        "kinds": KIND_SUGGESTIONS,
        "rows": [],
        "next_url": None,
        "first_url": None,
        "filter_error": None,
        "verification": None,
    }
    try:
        where = audit_filter(request)
        size = _page_size(request.query_params.get("max_results"))
        token = request.query_params.get("page_token") or None
        async with database(request).read() as s:
            entries, next_token = await audit_service.search_filtered(
                s, where, max_results=size, page_token=token
            )
    except InvalidParameter as exc:
        context["filter_error"] = exc.message
        return page(request, "audit.html", status_code=400, **context)
    filters: dict[str, Any] = {k: v or None for k, v in form.items()}
    if size != AUDIT_PAGE:
        filters["max_results"] = size
    context["rows"] = [audit_row(e) for e in entries]
    if next_token:
        context["next_url"] = with_query("/audit", **filters, page_token=next_token)
    if token:
        context["first_url"] = with_query("/audit", **filters)
    if request.query_params.get("verify") == "1":
        # The whole chain is re-hashed: only on request, never on an ordinary page load.
        context["verification"] = await audit_service.verify(database(request))
    context["verify_url"] = with_query("/audit", **filters, verify=1)
    return page(request, "audit.html", **context)


# --- webhooks ------------------------------------------------------------------------------------


def shown_url(url: str) -> str:
    """A subscriber URL with any password and query values masked (they often carry tokens)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user = userinfo.partition(":")[0]
        netloc = f"{user}:***@{host}" if ":" in userinfo else f"{userinfo}@{host}"
    query = "&".join(
        f"{pair.partition('=')[0]}=***" if "=" in pair else pair
        for pair in parts.query.split("&")
        if pair
    )
    return urlunsplit(SplitResult(parts.scheme, netloc, parts.path, query, ""))


def _subscription_view(sub: Any) -> dict[str, Any]:
    return {
        "id": sub.id,
        "name": sub.name,
        "url": shown_url(sub.url),
        "events": sub.events,
        "status": sub.status,
        "flavor": sub.flavor,
        "model_name": sub.model_name,
        "description": sub.description,
        "created_by": sub.created_by,
        "created_at": sub.created_at,
        "updated_at": sub.updated_at,
        "failing_since": sub.failing_since,
        "auto_disabled_at": sub.auto_disabled_at,
        "disabled_reason": sub.disabled_reason,
        "href": f"/webhooks/{quote(sub.id, safe='')}",
    }


@get("/webhooks", opt=ADMIN_ONLY, include_in_schema=False)
async def webhooks_page(request: Req) -> Response[Any]:
    token = request.query_params.get("page_token") or None
    async with database(request).read() as s:
        subs, next_token = await events_service.list_subscriptions(s, SUBSCRIPTION_PAGE, token)
        latest = await delivery_service.latest_delivery_of(s, [sub.id for sub in subs])
    rows = []
    for sub in subs:
        view = _subscription_view(sub)
        view["last"] = latest.get(sub.id)
        rows.append(view)
    return page(
        request,
        "webhooks.html",
        rows=rows,
        next_url=with_query("/webhooks", page_token=next_token) if next_token else None,
        first_url="/webhooks" if token else None,
    )


@get("/webhooks/{subscription_id:str}", opt=ADMIN_ONLY, include_in_schema=False)
async def webhook_page(request: Req, subscription_id: str) -> Response[Any]:
    status = _param(request, "status")
    if status is not None and status not in DELIVERY_STATUSES:
        raise InvalidParameter(
            f"Invalid status {status!r}: use one of {', '.join(DELIVERY_STATUSES)}."
        )
    token = request.query_params.get("page_token") or None
    shown_delivery = _param(request, "delivery")
    base = f"/webhooks/{quote(subscription_id, safe='')}"
    async with database(request).read() as s:
        sub = await events_service.get_subscription(s, subscription_id)
        deliveries, next_token = await events_service.list_deliveries(
            s,
            subscription_id=sub.id,
            status=status,
            max_results=DELIVERY_PAGE,
            page_token=token,
        )
        attempts = None
        selected = None
        if shown_delivery:
            selected, attempts = await events_service.get_delivery(s, shown_delivery)
            if selected.subscription_id != sub.id:
                raise DeliveryNotFound(shown_delivery)
    rows = []
    for d in deliveries:
        rows.append(
            {
                "d": d,
                "attempts_url": with_query(
                    base, status=status, page_token=token, delivery=d.delivery_id
                ),
                "redeliver_url": f"{base}/deliveries/{quote(d.delivery_id, safe='')}/redeliver",
            }
        )
    return page(
        request,
        "webhook.html",
        sub=_subscription_view(sub),
        rows=rows,
        status=status or "",
        statuses=DELIVERY_STATUSES,
        selected=selected,
        attempts=attempts,
        base=base,
        here=with_query(base, status=status, page_token=token),
        next_url=with_query(base, status=status, page_token=next_token) if next_token else None,
        first_url=with_query(base, status=status) if token else None,
    )


@post(
    "/webhooks/{subscription_id:str}/deliveries/{delivery_id:str}/redeliver",
    opt=ADMIN_FORM,
    include_in_schema=False,
    status_code=303,
)
async def redeliver(request: Req, subscription_id: str, delivery_id: str) -> Response[Any]:
    """Queue a delivery again (the API's ``redeliver``), then back to the log with a flash."""
    base = f"/webhooks/{quote(subscription_id, safe='')}"
    form = await request.form()
    back = form.get("back")
    target = back if isinstance(back, str) and back.startswith(base) and "\\" not in back else base
    try:
        async with database(request).write() as s:
            found, _ = await events_service.get_delivery(s, delivery_id)
            if found.subscription_id != subscription_id:
                raise DeliveryNotFound(delivery_id)
            await events_service.redeliver(s, delivery_id, actor=actor_name(request))
    except DeliveryNotFound:
        raise
    except MlflowError as exc:
        return redirect_with_flash(request, target, "error", exc.message)
    message = f"Delivery {delivery_id} was queued for redelivery."
    return redirect_with_flash(request, target, "notice", message)


def _back(form: Any, base: str) -> str:
    back = form.get("back")
    return back if isinstance(back, str) and back.startswith(base) and "\\" not in back else base


@post(
    "/webhooks/{subscription_id:str}/redeliver-dead",
    opt=ADMIN_FORM,
    include_in_schema=False,
    status_code=303,
)
async def redeliver_dead(request: Req, subscription_id: str) -> Response[Any]:
    """Queue every dead delivery of the subscription again (the API's ``redeliver-dead``)."""
    base = f"/webhooks/{quote(subscription_id, safe='')}"
    target = _back(await request.form(), base)
    async with database(request).write() as s:
        sub, count = await events_service.redeliver_dead(
            s, subscription_id, actor=actor_name(request)
        )
    message = f"{count} dead deliveries were queued for redelivery."
    if sub.status != "active":
        message += " They go out once the subscription is enabled."
    return redirect_with_flash(request, target, "notice", message)


@post(
    "/webhooks/{subscription_id:str}/{action:str}",
    opt=ADMIN_FORM,
    include_in_schema=False,
    status_code=303,
)
async def set_enabled(request: Req, subscription_id: str, action: str) -> Response[Any]:
    """Enable (resuming the queued deliveries) or disable a subscription."""
    if action not in ("enable", "disable"):
        raise InvalidParameter(f"Unknown action {action[:40]!r}: use enable or disable.")
    base = f"/webhooks/{quote(subscription_id, safe='')}"
    target = _back(await request.form(), base)
    async with database(request).write() as s:
        sub = await events_service.set_subscription_enabled(
            s, subscription_id, action == "enable", actor=actor_name(request)
        )
    return redirect_with_flash(
        request, target, "notice", f"Subscription {sub.name} is {sub.status}."
    )


ROUTE_HANDLERS = [audit_page, webhooks_page, webhook_page, redeliver, redeliver_dead, set_enabled]
