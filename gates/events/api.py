"""Litestar controllers: mlgate's subscriptions and delivery log, and MLflow 3's webhook API."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, delete, get, patch, post

from gates.events import service
from gates.events.config import EventsConfig
from gates.events.schemas import (
    CreateWebhook,
    DeliveryQuery,
    ListQuery,
    RotateSecret,
    SubscriptionCreate,
    SubscriptionUpdate,
    TestWebhookRequest,
    UpdateWebhook,
)
from tracking.core.auth import ADMIN, actor_name, permission_opt
from tracking.core.http import database
from tracking.core.wire import ok, read_json, read_query

Req = Request[Any, Any, Any]

# Subscriptions reach out to arbitrary URLs and see every event: administrators only.
ADMIN_ONLY = permission_opt(ADMIN)
R = Response[bytes]


def _config(request: Req) -> EventsConfig:
    return EventsConfig.from_settings(request.app.state["settings"])


def _page(key: str, items: list[Any], token: str | None) -> R:
    out: dict[str, Any] = {key: items}
    if token:
        out["next_page_token"] = token
    return ok(out)


# --- mlgate: subscriptions -----------------------------------------------------------------------


@post("/subscriptions", status_code=200, opt=ADMIN_ONLY)
async def create_subscription(request: Req) -> R:
    body = await read_json(request, SubscriptionCreate)
    async with database(request).write() as s:
        sub, secret = await service.create_subscription(
            s, body, actor=actor_name(request), config=_config(request)
        )
    # The only time the secret is shown.
    return ok({"subscription": sub, "secret": secret})


@get("/subscriptions", opt=ADMIN_ONLY)
async def list_subscriptions(request: Req) -> R:
    q = read_query(request, ListQuery)
    async with database(request).read() as s:
        subs, token = await service.list_subscriptions(s, q.max_results, q.page_token)
    return _page("subscriptions", subs, token)


@get("/subscriptions/{subscription_id:str}", opt=ADMIN_ONLY)
async def get_subscription(request: Req, subscription_id: str) -> R:
    async with database(request).read() as s:
        sub = await service.get_subscription(s, subscription_id)
    return ok({"subscription": sub})


@patch("/subscriptions/{subscription_id:str}", status_code=200, opt=ADMIN_ONLY)
async def update_subscription(request: Req, subscription_id: str) -> R:
    body = await read_json(request, SubscriptionUpdate)
    async with database(request).write() as s:
        sub = await service.update_subscription(
            s, subscription_id, body, config=_config(request), actor=actor_name(request)
        )
    return ok({"subscription": sub})


@post("/subscriptions/{subscription_id:str}/redeliver-dead", status_code=200, opt=ADMIN_ONLY)
async def redeliver_dead(request: Req, subscription_id: str) -> R:
    async with database(request).write() as s:
        sub, count = await service.redeliver_dead(s, subscription_id, actor=actor_name(request))
    return ok({"subscription": sub, "requeued": count})


@post("/subscriptions/{subscription_id:str}/rotate-secret", status_code=200, opt=ADMIN_ONLY)
async def rotate_secret(request: Req, subscription_id: str) -> R:
    body = await read_json(request, RotateSecret)
    async with database(request).write() as s:
        sub, secret = await service.rotate_secret(s, subscription_id, body, config=_config(request))
    return ok({"subscription": sub, "secret": secret})


@delete("/subscriptions/{subscription_id:str}", status_code=200, opt=ADMIN_ONLY)
async def delete_subscription(request: Req, subscription_id: str) -> R:
    async with database(request).write() as s:
        await service.delete_subscription(s, subscription_id)
    return ok()


# --- mlgate: the delivery log --------------------------------------------------------------------


@get("/deliveries", opt=ADMIN_ONLY)
async def list_deliveries(request: Req) -> R:
    q = read_query(request, DeliveryQuery)
    async with database(request).read() as s:
        deliveries, token = await service.list_deliveries(
            s,
            subscription_id=q.subscription_id or None,
            status=q.status or None,
            max_results=q.max_results,
            page_token=q.page_token,
        )
    return _page("deliveries", deliveries, token)


@get("/deliveries/{delivery_id:str}", opt=ADMIN_ONLY)
async def get_delivery(request: Req, delivery_id: str) -> R:
    async with database(request).read() as s:
        delivery, attempts = await service.get_delivery(s, delivery_id)
    return ok({"delivery": delivery, "attempts": attempts})


@post("/deliveries/{delivery_id:str}/redeliver", status_code=200, opt=ADMIN_ONLY)
async def redeliver(request: Req, delivery_id: str) -> R:
    async with database(request).write() as s:
        delivery = await service.redeliver(s, delivery_id, actor=actor_name(request))
    return ok({"delivery": delivery})


# --- MLflow 3: /api/2.0/mlflow/webhooks ----------------------------------------------------------


@post("/webhooks", status_code=200, opt=ADMIN_ONLY)
async def create_webhook(request: Req) -> R:
    body = await read_json(request, CreateWebhook)
    async with database(request).write() as s:
        webhook = await service.create_webhook(
            s, body, actor=actor_name(request), config=_config(request)
        )
    return ok({"webhook": webhook})


@get("/webhooks", opt=ADMIN_ONLY)
async def list_webhooks(request: Req) -> R:
    q = read_query(request, ListQuery)
    async with database(request).read() as s:
        webhooks, token = await service.list_webhooks(s, q.max_results, q.page_token)
    return _page("webhooks", webhooks, token)


@get("/webhooks/{webhook_id:str}", opt=ADMIN_ONLY)
async def get_webhook(request: Req, webhook_id: str) -> R:
    async with database(request).read() as s:
        webhook = await service.get_webhook(s, webhook_id)
    return ok({"webhook": webhook})


@patch("/webhooks/{webhook_id:str}", status_code=200, opt=ADMIN_ONLY)
async def update_webhook(request: Req, webhook_id: str) -> R:
    body = await read_json(request, UpdateWebhook)
    async with database(request).write() as s:
        webhook = await service.update_webhook(
            s, webhook_id, body, config=_config(request), actor=actor_name(request)
        )
    return ok({"webhook": webhook})


@delete("/webhooks/{webhook_id:str}", status_code=200, opt=ADMIN_ONLY)
async def delete_webhook(request: Req, webhook_id: str) -> R:
    async with database(request).write() as s:
        await service.delete_webhook(s, webhook_id)
    return ok()


@post("/webhooks/{webhook_id:str}/test", status_code=200, opt=ADMIN_ONLY)
async def test_webhook(request: Req, webhook_id: str) -> R:
    body = await read_json(request, TestWebhookRequest)
    result = await service.test_webhook(
        database(request), webhook_id, body.event, config=_config(request)
    )
    return ok({"result": result})


# Mounted under each of MLflow's API prefixes.
ROUTE_HANDLERS = [
    create_webhook,
    list_webhooks,
    get_webhook,
    update_webhook,
    delete_webhook,
    test_webhook,
]

# Mounted under /api/2.0/mlgate.
MLGATE_ROUTE_HANDLERS = [
    create_subscription,
    list_subscriptions,
    get_subscription,
    update_subscription,
    rotate_secret,
    redeliver_dead,
    delete_subscription,
    list_deliveries,
    get_delivery,
    redeliver,
]
