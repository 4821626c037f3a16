"""Litestar glue shared by every domain's controllers: the database handle and route prefixes."""

from __future__ import annotations

from typing import Any

from litestar import Request

from tracking.core.db import Database

# MLflow's REST prefixes: the client uses /api/2.0/mlflow, MLflow's UI the /ajax-api twin.
API_PREFIXES = ("/api/2.0/mlflow", "/ajax-api/2.0/mlflow")


def database(request: Request[Any, Any, Any]) -> Database:
    db: Database = request.app.state["db"]
    return db
