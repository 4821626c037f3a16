"""The composition root: one function builds the Litestar app from the three domains."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any, Protocol

from litestar import Litestar, Request, Response, Router, get
from litestar.middleware import DefineMiddleware
from sqlalchemy.exc import DBAPIError

import gates.approvals.api
import gates.attestations.api
import gates.audit.api
import gates.deployments.api
import gates.events.api
import gates.identity.api
import gates.policies.api
import registry.api
import registry.service
import tracking.api
import tracking.service
from gates.approvals.expiry import ApprovalExpirySweep
from gates.attestations import service as attestations
from gates.attestations.keys import ATTESTATION_KEYS_STATE_KEY, load_keyring
from gates.audit.checkpoints import CheckpointLoop
from gates.deployments.drift import DriftSweep
from gates.deployments.watch import WATCH_LIMIT_STATE_KEY, WatchLimit
from gates.events.config import EventsConfig
from gates.events.worker import DeliveryWorker
from gates.policies.jwks import OIDC_KEYS_STATE_KEY, IssuerKeys
from gates.server import authentication, hardening, observe, openapi, security
from gates.server.hooks import registry_hooks
from gates.server.mlflow_ui import ajax as mlflow_ui_ajax
from gates.server.mlflow_ui import pages as mlflow_ui_pages
from gates.server.mlflow_ui.bundle import find_bundle
from gates.server.mlflow_ui.graphql import graphql as mlflow_ui_graphql
from gates.server.mlflow_ui.prefix import MlflowUiPrefix
from gates.server.web.routes import (
    UI_EXCEPTION_HANDLERS,
    UI_GUARDS,
    static_router,
    web_route_handlers,
)
from registry import events as registry_events
from registry.artifacts.api import (
    MODEL_VERSION_ROOT_STATE_KEY,
    RUN_ARTIFACT_ROUTE_HANDLERS,
    STORAGE_STATE_KEY,
    WRITE_GUARD_STATE_KEY,
    ModelVersionRootResolver,
    WriteGuard,
    artifact_routes,
)
from registry.artifacts.external import EXTERNAL_STATE_KEY, ExternalSources
from registry.artifacts.paths import ArtifactPath
from registry.artifacts.storage import build_storage
from registry.artifacts.sweep import StaleUploadSweep
from registry.events import RegistryHooks
from tracking.core.auth import PUBLIC, permission_opt
from tracking.core.db import Database
from tracking.core.errors import EXCEPTION_HANDLERS
from tracking.core.http import API_PREFIXES
from tracking.core.settings import Settings, get_settings
from tracking.core.signing import SIGNING_KEY_STATE_KEY, is_private_to_owner, load_or_create
from tracking.core.wire import Encoded, ok

VERSION = "0.1.0"

log = logging.getLogger("mlgate.server")


@get("/health", media_type="text/plain", opt=permission_opt(PUBLIC))
async def health() -> Response[bytes]:
    return Encoded(b"OK", media_type="text/plain")


@get("/version", media_type="text/plain", opt=permission_opt(PUBLIC))
async def version() -> Response[bytes]:
    return Encoded(VERSION.encode(), media_type="text/plain")


@get(
    ["/api/3.0/mlflow/server-info", "/ajax-api/3.0/mlflow/server-info"],
    opt=permission_opt(PUBLIC),
)
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


def registry_write_guard(db: Database) -> WriteGuard:
    """The artifact proxy's write guard: registered versions' files are immutable."""

    async def refuse_registered_files(path: ArtifactPath) -> None:
        async with db.read() as s:
            await registry.service.check_artifact_writable(s, path)

    return refuse_registered_files


class _Loop(Protocol):
    """A background loop the lifespan starts and stops (sweeps, the delivery worker)."""

    async def stop(self) -> None: ...


def _install_artifact_hooks(app: Litestar, db: Database) -> list[str]:
    """The registry's hooks into the artifact layer, which does not import the registry's
    service. A guard or resolver installed before start-up (tests, embedders) is kept; the
    keys installed here are returned, to be removed at shutdown."""
    resolver: ModelVersionRootResolver = registry.service.version_artifact_root
    hooks = {
        WRITE_GUARD_STATE_KEY: registry_write_guard(db),
        MODEL_VERSION_ROOT_STATE_KEY: resolver,
    }
    installed = [key for key in hooks if key not in app.state]
    for key in installed:
        app.state[key] = hooks[key]
    return installed


def _load_signing_key(app: Litestar, settings: Settings) -> None:
    key_path = settings.signing_key_path
    signing_key, created = load_or_create(key_path)
    app.state[SIGNING_KEY_STATE_KEY] = signing_key
    # A new key is news for the operator (back it up, share it with the replicas).
    log.log(
        logging.WARNING if created else logging.INFO,
        "audit signing key %s %s (%s)",
        signing_key.key_id,
        "created" if created else "loaded",
        key_path,
    )
    if not is_private_to_owner(key_path):
        log.warning("the signing key %s is readable by other users: chmod 600 it", key_path)


async def _load_attestation_keys(app: Litestar, settings: Settings, db: Database) -> None:
    """Promotion attestations: the signer (and retired keys), each published for good."""
    keyring, made = load_keyring(
        settings.attestation_key_paths, settings.default_attestation_key_path
    )
    app.state[ATTESTATION_KEYS_STATE_KEY] = keyring
    try:
        async with db.write() as s:
            await attestations.remember_keys(s, keyring)
    except DBAPIError as exc:
        # A schema behind head (/ready says so): the server still starts; the signer is
        # published with its first attestation, the retired keys at the next start.
        log.warning("attestation keys not published yet (%s)", exc.__class__.__name__)
    log.log(
        logging.WARNING if made else logging.INFO,
        "attestation key %s %s",
        keyring.signer.public.key_id,
        "created" if made else "loaded",
    )


def _start_loops(app: Litestar, settings: Settings, db: Database) -> list[_Loop]:
    """Start the background loops the settings turn on; returned in the order they stop."""
    artifacts = app.state[STORAGE_STATE_KEY]
    loops: list[_Loop] = []
    # Every replica checkpoints; each round first reads the store's latest checkpoint.
    if settings.audit_checkpoint_interval > 0:
        checkpoint_dir = settings.audit_checkpoint_dir
        loops.append(
            CheckpointLoop(
                db,
                artifacts,
                app.state[SIGNING_KEY_STATE_KEY],
                settings.audit_checkpoint_interval,
                Path(checkpoint_dir) if checkpoint_dir else None,
            ).start()
        )
    # Every replica delivers webhooks; claims keep each delivery to one of them.
    worker = (
        DeliveryWorker(db, EventsConfig.from_settings(settings)).start()
        if settings.webhook_worker
        else None
    )
    sweep = (
        ApprovalExpirySweep(db, settings.approval_sweep_interval).start()
        if settings.approval_sweep_interval > 0
        else None
    )
    if settings.staging_sweep_interval > 0:
        loops.append(
            StaleUploadSweep(
                artifacts,
                max_age_seconds=settings.staging_max_age,
                interval_seconds=settings.staging_sweep_interval,
            ).start()
        )
    # Every replica sweeps for drift; a guarded UPDATE emits each change of state once.
    if settings.drift_sweep_interval > 0:
        loops.append(
            DriftSweep(db, settings.drift_sweep_interval, settings.drift_after_seconds).start()
        )
    loops.extend(loop for loop in (sweep, worker) if loop is not None)
    return loops


def _lifespan(
    settings: Settings, hooks: RegistryHooks
) -> Callable[[Litestar], AbstractAsyncContextManager[None]]:
    """Open the app's database (its sessions carry ``hooks``), storage and background loops."""

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        db = Database(
            settings.database_url,
            pool_size=settings.db_pool_size,
            lock_timeout_ms=int(settings.db_lock_timeout * 1000),
            session_info=registry_events.session_info(hooks),
        )
        app.state["db"] = db
        app.state["settings"] = settings
        # PostgreSQL: this worker's concurrent metric writes share statements and commits.
        app.state[tracking.api.METRIC_WRITES_STATE_KEY] = tracking.service.metric_writes(db)
        app.state[WATCH_LIMIT_STATE_KEY] = WatchLimit(settings.watch_max_watchers)
        artifacts = build_storage(settings)
        app.state[STORAGE_STATE_KEY] = artifacts
        external = ExternalSources(
            settings.external_source_prefixes, endpoint_url=settings.s3_endpoint_url or None
        )
        app.state[EXTERNAL_STATE_KEY] = external
        installed = _install_artifact_hooks(app, db)
        _load_signing_key(app, settings)
        await _load_attestation_keys(app, settings, db)
        # The signing keys of the OIDC issuers gates trust, cached per app (per replica).
        oidc_keys = IssuerKeys.from_settings(settings)
        app.state[OIDC_KEYS_STATE_KEY] = oidc_keys
        app.state[WATCH_LIMIT_STATE_KEY] = WatchLimit(settings.watch_max_watchers)
        loops = _start_loops(app, settings, db)
        try:
            yield
        finally:
            await oidc_keys.aclose()
            for loop in loops:
                await loop.stop()
            for key in installed:
                app.state.pop(key, None)
            await artifacts.aclose()
            external.close()
            await db.dispose()

    return lifespan


def _routers() -> list[Any]:
    """The domains' API routers, the web UI and MLflow's own UI, under their prefixes."""
    domain_handlers = [
        *tracking.api.ROUTE_HANDLERS,
        *RUN_ARTIFACT_ROUTE_HANDLERS,
        *registry.api.ROUTE_HANDLERS,
        *gates.events.api.ROUTE_HANDLERS,
    ]
    routers: list[Any] = [
        Router(path=prefix, route_handlers=domain_handlers) for prefix in API_PREFIXES
    ]
    routers.append(
        Router(
            path=registry.api.MLGATE_API_PREFIX, route_handlers=registry.api.MLGATE_ROUTE_HANDLERS
        )
    )
    routers.append(
        Router(
            path=registry.api.MLGATE_API_PREFIX,
            route_handlers=[
                *gates.policies.api.ROUTE_HANDLERS,
                *gates.approvals.api.ROUTE_HANDLERS,
                *gates.attestations.api.MLGATE_ROUTE_HANDLERS,
                *gates.events.api.MLGATE_ROUTE_HANDLERS,
                *gates.audit.api.MLGATE_ROUTE_HANDLERS,
                *gates.identity.api.ROUTE_HANDLERS,
                *gates.deployments.api.MLGATE_ROUTE_HANDLERS,
            ],
        )
    )
    # The web UI at "/": same services, same permission declarations, HTML errors, CSRF checks.
    routers.append(
        Router(
            path="/",
            route_handlers=[*web_route_handlers(), static_router()],
            exception_handlers=UI_EXCEPTION_HANDLERS,
            guards=UI_GUARDS,
            include_in_schema=False,
        )
    )
    # MLflow's own UI at /mlflow/ (when the full mlflow package is installed): its page and
    # files, the /ajax-api routes only it calls, and the GenAI families it may probe (501).
    # Its calls under /mlflow/ reach the routes above through MlflowUiPrefix (outermost).
    bundle = find_bundle()
    domain_paths = frozenset(path for h in domain_handlers for path in getattr(h, "paths", ()))
    routers.extend(mlflow_ui_ajax.ajax_routes(domain_paths))
    routers.append(mlflow_ui_graphql)
    routers.extend(
        mlflow_ui_pages.installed_routes(bundle) if bundle else mlflow_ui_pages.missing_routes()
    )
    return routers


def _outer_layers(app: Litestar, settings: Settings) -> None:
    """Wrap the app's ASGI handler in the layers that run before routing."""
    # Outermost: a request for another host is refused before routing, CORS or anything else.
    # /metrics answers ahead of authentication (scrapers hold no user credentials) but behind
    # the Host check; the observer, outermost, sees and logs every request, refused ones too.
    handler: Any = observe.MetricsEndpoint(app.asgi_handler, app, settings)
    handler = MlflowUiPrefix(handler)
    handler = hardening.HostAllowlist(
        handler, settings.allowed_host_names, observe.host_exempt_paths(settings)
    )
    app.asgi_handler = observe.RequestObserver(handler, app, settings)


def create_app(settings: Settings | None = None) -> Litestar:
    """Build one app; its registry hooks are built here, once, and belong to it alone."""
    settings = settings or get_settings()
    observe.configure_logging(settings)
    routers = _routers()
    refusal = authentication.bind_refusal(settings)
    if refusal is not None:
        raise RuntimeError(f"mlgate: {refusal}")
    hooks = registry_hooks(auth=settings.auth)
    # Outermost first. The permission check is innermost: after authentication, before the
    # route's own guards and its handler.
    middleware: list[Any] = [
        gates.policies.api.override_middleware,
        security.permission_middleware(settings),
    ]
    if settings.auth:
        middleware.insert(
            0, DefineMiddleware(authentication.AuthenticationMiddleware, settings=settings)
        )
    app = Litestar(
        route_handlers=[
            health,
            observe.ready,
            version,
            server_info,
            openapi.openapi_document,
            *gates.attestations.api.ROOT_ROUTE_HANDLERS,
            *routers,
            *artifact_routes(),
        ],
        middleware=middleware,
        cors_config=hardening.cors_config(settings),
        request_max_body_size=settings.max_json_body,
        lifespan=[_lifespan(settings, hooks), authentication.identity_lifespan(settings)],
        exception_handlers=EXCEPTION_HANDLERS,
        openapi_config=openapi.openapi_config(VERSION, registry.api.MLGATE_API_PREFIX),
        debug=False,
        # Logging is configured by observe.configure_logging; Litestar's default would replace
        # the root handler with its own plain-text one when the app starts.
        logging_config=None,
    )
    security.mark_generated_routes_public(app)
    _outer_layers(app, settings)
    return app
