"""Administration pages for webhook subscriptions (admin only): creating one (with an "all
events" option, the API's ``"events": ["*"]``) and sending a test event. Pausing, enabling and
redelivering dead deliveries live on the subscription page (``audit_pages``).

Both forms call the events service the API calls (``create_subscription``, ``test_webhook``),
so name, URL (SSRF allow-list), event and status checks and the audit entry are the API's. The
new subscription's signing secret is rendered once, in the answer to the create form's POST
(``Cache-Control: no-store``); the subscription page never shows it.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from litestar import Request, Response, get, post

from gates.events import service as events
from gates.events.config import EventsConfig
from gates.events.event_types import MLFLOW_EVENT_TYPES, MLGATE_EVENT_TYPES
from gates.events.schemas import SubscriptionCreate
from gates.server.web.render import page, redirect_with_flash, settings_of
from registry.artifacts.api import RAW_BODY_OPT
from tracking.core.auth import ADMIN, actor_name, permission_opt
from tracking.core.errors import InvalidParameter, MlflowError
from tracking.core.http import database

Req = Request[Any, Any, Any]

ADMIN_PAGE = permission_opt(ADMIN)
ADMIN_FORM = permission_opt(ADMIN, **{RAW_BODY_OPT: True})
NEW = "/admin/webhooks/new"
ALL_EVENTS = "*"
MAX_FIELD = 2000
EMPTY_FORM: dict[str, Any] = {
    "name": "",
    "url": "",
    "model_name": "",
    "description": "",
    "paused": False,
    "events": [],
}
EVENT_CHOICES = tuple(sorted(set(MLGATE_EVENT_TYPES) | set(MLFLOW_EVENT_TYPES)))


def subscription_url(subscription_id: str) -> str:
    return f"/webhooks/{quote(subscription_id, safe='')}"


def _form_page(
    request: Req, values: dict[str, Any], error: str | None, status_code: int = 200
) -> Response[Any]:
    return page(
        request,
        "admin_webhook_new.html",
        status_code=status_code,
        values=values,
        error=error,
        event_choices=EVENT_CHOICES,
        created=None,
    )


@get(NEW, opt=ADMIN_PAGE, include_in_schema=False)
async def new_subscription(request: Req) -> Response[Any]:
    return _form_page(request, EMPTY_FORM, None)


async def _values(request: Req) -> dict[str, Any]:
    """The form as typed (to show again on a refusal): text fields and the chosen events."""
    form = await request.form()
    values: dict[str, Any] = {}
    for key in ("name", "url", "model_name", "description"):
        raw = form.get(key)
        values[key] = raw.strip() if isinstance(raw, str) else ""
    values["paused"] = form.get("paused") == "true"
    chosen = form.getall("events") if "events" in form else []
    values["events"] = [e for e in chosen if isinstance(e, str)]
    return values


def _request_of(values: dict[str, Any]) -> SubscriptionCreate:
    for key in ("name", "url", "model_name", "description"):
        if len(values[key]) > MAX_FIELD:
            raise InvalidParameter(
                f"The {key.replace('_', ' ')} is at most {MAX_FIELD} characters."
            )
    events = list(values["events"])
    if not events:
        raise InvalidParameter("Choose the events to send, or 'All events'.")
    return SubscriptionCreate(
        name=values["name"] or None,
        url=values["url"] or None,
        events=events,
        model_name=values["model_name"] or None,
        description=values["description"] or None,
        status="disabled" if values["paused"] else "active",
    )


@post("/admin/webhooks/create", opt=ADMIN_FORM, include_in_schema=False, status_code=200)
async def create_subscription(request: Req) -> Response[Any]:
    values = await _values(request)
    try:
        body = _request_of(values)
        async with database(request).write() as s:
            sub, secret = await events.create_subscription(
                s,
                body,
                actor=actor_name(request),
                config=EventsConfig.from_settings(settings_of(request)),
            )
    except MlflowError as exc:
        if exc.status_code >= 500:
            raise
        return _form_page(request, values, f"Refused: {exc.message} Nothing was created.", 400)
    response = page(
        request,
        "admin_webhook_new.html",
        values=EMPTY_FORM,
        error=None,
        event_choices=EVENT_CHOICES,
        created={
            "id": sub.id,
            "name": sub.name,
            "href": subscription_url(sub.id),
            "secret": secret,
        },
    )
    # The secret is in this answer only: no cache, no history copy.
    response.headers["Cache-Control"] = "no-store"
    return response


@post(
    "/admin/webhooks/{subscription_id:str}/test",
    opt=ADMIN_FORM,
    include_in_schema=False,
    status_code=303,
)
async def test_subscription(request: Req, subscription_id: str) -> Response[Any]:
    """MLflow's ``test_webhook``: the example payload of the webhook's first event, now."""
    back = subscription_url(subscription_id)
    try:
        result = await events.test_webhook(
            database(request),
            subscription_id,
            None,
            config=EventsConfig.from_settings(settings_of(request)),
        )
    except MlflowError as exc:
        if exc.status_code >= 500:
            raise
        return redirect_with_flash(request, back, "error", f"Test refused: {exc.message}")
    if result.success:
        return redirect_with_flash(
            request,
            back,
            "notice",
            f"Test delivered: the receiver answered {result.response_status}.",
        )
    reason = result.error_message or f"the receiver answered {result.response_status}"
    return redirect_with_flash(request, back, "error", f"Test failed: {reason}.")


ROUTE_HANDLERS = [new_subscription, create_subscription, test_subscription]
