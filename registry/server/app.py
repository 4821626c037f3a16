"""The composition root: one function builds the Litestar app from the three domains."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar, Request, Response, Router, get

import registry.api
import tracking.api
from registry.artifacts.api import STORAGE_STATE_KEY, artifact_routes
from registry.artifacts.storage import build_storage
from tracking.core.db import Database
from tracking.core.errors import EXCEPTION_HANDLERS
from tracking.core.http import API_PREFIXES
from tracking.core.settings import Settings, get_settings
from tracking.core.wire import ok

VERSION = "0.1.0"


@get("/health", media_type="text/plain")
async def health() -> str:
    return "OK"


@get("/version", media_type="text/plain")
async def version() -> str:
    return VERSION


@get("/api/3.0/mlflow/server-info")
async def server_info(request: Request[Any, Any, Any]) -> Response[bytes]:
    # Capability probe the client makes before artifact downloads; features mlgate lacks are off.
    return ok(
        {
            "store_type": "SqlStore",
            "workspaces_enabled": False,
            "multipart_uploads_enabled": False,
            "server": "mlgate",
            "version": VERSION,
        }
    )


def create_app(settings: Settings | None = None) -> Litestar:
    settings = settings or get_settings()
    logging.basicConfig(level=settings.log_level.upper())

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        db = Database(settings.database_url, pool_size=settings.db_pool_size)
        app.state["db"] = db
        app.state["settings"] = settings
        artifacts = build_storage(settings)
        app.state[STORAGE_STATE_KEY] = artifacts
        try:
            yield
        finally:
            await artifacts.aclose()
            await db.dispose()

    domain_handlers = [*tracking.api.ROUTE_HANDLERS, *registry.api.ROUTE_HANDLERS]
    routers = [Router(path=prefix, route_handlers=domain_handlers) for prefix in API_PREFIXES]
    routers.append(
        Router(
            path=registry.api.MLGATE_API_PREFIX, route_handlers=registry.api.MLGATE_ROUTE_HANDLERS
        )
    )
    return Litestar(
        route_handlers=[health, version, server_info, *routers, *artifact_routes()],
        lifespan=[lifespan],
        exception_handlers=EXCEPTION_HANDLERS,
        openapi_config=None,
        debug=False,
    )
