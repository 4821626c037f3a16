"""Every route the app registers declares the permission it needs; undeclared ones are refused.

MLflow's own auth app had authorization CVEs from routes nobody mapped to a rule, which were
then allowed. Here the guard refuses a route without a declaration, and this test walks every
route of the real app so a new route without one fails the build.
"""

from __future__ import annotations

from pathlib import Path

from litestar import get
from litestar.testing import TestClient

from gates.server import migrate
from gates.server.app import create_app
from tracking.core.auth import Permission
from tracking.core.settings import Settings

RESOURCES_NEEDING_A_LOCATOR = {
    "experiment",
    "run",
    "logged_model",
    "registered_model",
    "model_version",
}


def _app(tmp_path: Path, database_url: str, **settings: object) -> object:
    return create_app(
        Settings(
            database_url=database_url,
            artifacts_destination=str(tmp_path / "artifacts"),
            **settings,  # type: ignore[arg-type]
        )
    )


def _handlers(app: object) -> list[tuple[str, object]]:
    return [
        (route.path, handler)
        for route in app.routes  # type: ignore[attr-defined]
        for handler in getattr(route, "route_handlers", ())
    ]


def test_every_route_handler_declares_a_permission(tmp_path: Path, database_url: str) -> None:
    handlers = _handlers(_app(tmp_path, database_url))
    assert len(handlers) > 100
    missing = [
        f"{sorted(h.http_methods)} {path}"  # type: ignore[attr-defined]
        for path, h in handlers
        if not isinstance(h.opt.get("permission"), Permission)  # type: ignore[attr-defined]
    ]
    assert missing == [], "routes without a permission declaration:\n" + "\n".join(missing)


def test_object_rules_say_where_the_object_is_named(tmp_path: Path, database_url: str) -> None:
    """A rule on an object without a locator could only ever match the '*' grant."""
    for path, h in _handlers(_app(tmp_path, database_url)):
        permission = h.opt["permission"]  # type: ignore[attr-defined]
        if permission.resource in RESOURCES_NEEDING_A_LOCATOR and not permission.filtered:
            assert permission.locators, path
        for extra in permission.also:
            assert extra.locators, path


def test_a_route_without_a_declaration_is_refused(tmp_path: Path, make_database) -> None:  # type: ignore[no-untyped-def]
    database_url = make_database("undeclared")
    migrate.upgrade(database_url)

    @get("/api/2.0/mlgate/undeclared", sync_to_thread=False)
    def undeclared() -> dict[str, str]:
        return {"secret": "reachable"}

    for auth in (False, True):
        app = _app(
            tmp_path,
            database_url,
            auth=auth,
            admin_username="root",
            admin_password="root-password-for-tests",
        )
        app.register(undeclared)  # type: ignore[attr-defined]
        with TestClient(app) as client:  # type: ignore[arg-type]
            r = client.get("/api/2.0/mlgate/undeclared", auth=("root", "root-password-for-tests"))
        assert r.status_code == 403, (auth, r.text)
        assert r.json()["error_code"] == "PERMISSION_DENIED"
