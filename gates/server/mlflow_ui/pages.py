"""MLflow's UI page and static files at ``/mlflow/``, or a 404 page naming the extra to install.

The page is MLflow's ``index.html`` as shipped, under a Content-Security-Policy that allows
exactly what the bundle needs: its own scripts from this server (no inline script, no eval),
the inline styles its CSS-in-JS library injects, images and fonts from this server or
``data:``/``blob:`` URLs it builds, and requests to this server only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from litestar import Request, Response, Router, get
from litestar.datastructures import CacheControlHeader
from litestar.response import File, Redirect
from litestar.static_files import create_static_files_router
from litestar.types import ControllerRouterHandler

from gates.server.mlflow_ui.bundle import INSTALL_HINT
from gates.server.mlflow_ui.prefix import UI_PREFIX
from gates.server.web.render import page
from gates.server.web.routes import UI_EXCEPTION_HANDLERS
from tracking.core.auth import AUTHENTICATED, PUBLIC, permission_opt

Req = Request[Any, Any, Any]
MLFLOW_UI_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; font-src 'self' data:; connect-src 'self'; "
    "worker-src 'self' blob:; manifest-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'self'"
)
# The bundle's file names carry content hashes; index.html does not, so it is never cached.
STATIC_MAX_AGE = 7 * 24 * 3600


def _ui_headers() -> dict[str, str]:
    return {"Content-Security-Policy": MLFLOW_UI_CSP, "Cache-Control": "no-store"}


def installed_routes(bundle: Path) -> list[ControllerRouterHandler]:
    index = bundle / "index.html"

    # Signed-out visitors (auth on) are sent to the login page first, as on mlgate's pages.
    @get(f"{UI_PREFIX}/", opt=permission_opt(AUTHENTICATED), include_in_schema=False)
    async def mlflow_ui_index(request: Req) -> Response[Any]:
        # The router matches /mlflow and /mlflow/ alike; only the latter resolves the page's
        # relative URLs (static-files/..., ajax-api/...) under the prefix.
        raw = request.scope.get("raw_path") or request.scope["path"].encode()
        if not raw.partition(b"?")[0].endswith(b"/"):
            return Redirect(f"{UI_PREFIX}/", status_code=308)
        return File(
            index,
            filename="index.html",
            media_type="text/html",
            content_disposition_type="inline",
            headers=_ui_headers(),
        )

    static = create_static_files_router(
        path=f"{UI_PREFIX}/static-files",
        directories=[bundle],
        opt=permission_opt(PUBLIC),
        include_in_schema=False,
        name="mlflow-ui-static",
        cache_control=CacheControlHeader(max_age=STATIC_MAX_AGE, public=True),
    )
    return [
        Router(
            path="/",
            route_handlers=[mlflow_ui_index, static],
            exception_handlers=UI_EXCEPTION_HANDLERS,
            include_in_schema=False,
        )
    ]


def missing_routes() -> list[ControllerRouterHandler]:
    @get(
        [UI_PREFIX, f"{UI_PREFIX}/", f"{UI_PREFIX}/{{rest:path}}"],
        opt=permission_opt(PUBLIC),
        include_in_schema=False,
    )
    async def mlflow_ui_missing(request: Req, rest: str | None = None) -> Response[Any]:
        return page(
            request,
            "error.html",
            status_code=404,
            code="MLFLOW_UI_NOT_INSTALLED",
            message=INSTALL_HINT,
        )

    return [
        Router(
            path="/",
            route_handlers=[mlflow_ui_missing],
            exception_handlers=UI_EXCEPTION_HANDLERS,
            include_in_schema=False,
        )
    ]
