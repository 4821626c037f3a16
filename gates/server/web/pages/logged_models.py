"""A run's logged models (MLflow 3's ``log_model(..., name=...)``) on the run page, and the
artifact browser of a logged model's files.

MLflow 3 stores a model's files under a logged model (``models:/m-<id>``), not under the run,
so the run's own artifact folder is often empty. The run page lists the logged models whose
``source_run_id`` is the run (in the run's experiment, as MLflow's UI does) with their
params, metrics, tags, flavours and the registered versions made from them; their files open
in the same browser as a run's (``artifacts.browse``/``artifacts.serve_raw``: one parse of the
user's path, joined to the logged model's own root, which must be a folder of mlgate's store
below the model's experiment).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from litestar import Request, Response, get
from litestar.response import Stream
from sqlalchemy.ext.asyncio import AsyncSession

from gates.server.web.pages.artifacts import (
    ArtifactOwner,
    browse,
    logged_models_of_run,
    read_head,
    serve_raw,
    summarise_mlmodel,
)
from registry.artifacts.api import artifact_storage
from registry.artifacts.paths import ArtifactPath, run_artifact_root
from registry.artifacts.storage import ArtifactStorage
from tracking import service as tracking
from tracking.core.auth import Permission, permission_opt
from tracking.core.errors import MlflowError
from tracking.core.http import database
from tracking.schemas import LoggedModelOut

Req = Request[Any, Any, Any]

LOGGED_MODEL_READ = permission_opt(Permission("logged_model", "read", "model_id"))
# The MLmodel file is read for its flavours only up to this size.
MLMODEL_READ_BYTES = 64 * 1024
MODEL_VERSIONS_TAG = "mlflow.modelVersions"


@dataclass
class LoggedModelView:
    """What the run page shows of one logged model."""

    model_id: str
    name: str
    status: str
    model_type: str
    created: int
    artifacts_href: str
    flavors: list[str] = field(default_factory=list)
    params: list[tuple[str, str]] = field(default_factory=list)
    metrics: list[Any] = field(default_factory=list)
    tags: list[tuple[str, str]] = field(default_factory=list)
    versions: list[Any] = field(default_factory=list)


def logged_model_root(model: LoggedModelOut) -> ArtifactPath | None:
    """The store folder of a logged model's files, under the same rule as a run's."""
    return run_artifact_root(model.info.experiment_id, model.info.artifact_uri)


async def _flavors(storage: ArtifactStorage, root: ArtifactPath | None) -> list[str]:
    """The flavour names of the model's MLmodel file; [] when absent, too big or unreadable."""
    if root is None:
        return []
    path = root.joinpath(ArtifactPath(("MLmodel",)))
    try:
        stat = await storage.stat(path)
        if stat is None or stat.is_dir or (stat.size or 0) > MLMODEL_READ_BYTES:
            return []
        data, _ = await read_head(storage, path, MLMODEL_READ_BYTES)
    except MlflowError:
        return []
    flavors, _, _ = summarise_mlmodel(data.decode("utf-8", "replace"))
    return [f["name"] for f in flavors]


async def run_logged_models(
    request: Req, s: AsyncSession, run: Any, versions: Sequence[Any]
) -> list[LoggedModelView]:
    """The logged models the run produced, newest first, each with the versions (among
    ``versions``, already limited to the models the user may read) registered from it."""
    found = await logged_models_of_run(request, s, run)
    storage = artifact_storage(request)
    views = []
    for model in found:
        info = model.info
        views.append(
            LoggedModelView(
                model_id=info.model_id,
                name=info.name,
                status=info.status.removeprefix("LOGGED_MODEL_"),
                model_type=info.model_type,
                created=info.creation_timestamp_ms,
                artifacts_href=f"/logged-models/{info.model_id}/artifacts",
                flavors=await _flavors(storage, logged_model_root(model)),
                params=sorted((p.key, p.value) for p in model.data.params),
                metrics=sorted(model.data.metrics, key=lambda m: (m.key, m.step)),
                tags=sorted((t.key, t.value) for t in info.tags if t.key != MODEL_VERSIONS_TAG),
                versions=[v for v in versions if v.model_id == info.model_id],
            )
        )
    return views


async def _logged_model(request: Req, model_id: str) -> LoggedModelOut:
    async with database(request).read() as s:
        return await tracking.get_logged_model(s, model_id)


def _owner(model: LoggedModelOut) -> ArtifactOwner:
    info = model.info
    back = [(f"Experiment {info.experiment_id}", f"/experiments/{info.experiment_id}")]
    if info.source_run_id:
        back.append(("Source run", f"/runs/{info.source_run_id}"))
    return ArtifactOwner(
        base=f"/logged-models/{info.model_id}/artifacts",
        title=f"logged model {info.name} ({info.model_id})",
        artifact_uri=info.artifact_uri,
        root=logged_model_root(model),
        back=back,
        missing=f"logged model {info.model_id}",
    )


@get("/logged-models/{model_id:str}/artifacts", opt=LOGGED_MODEL_READ, include_in_schema=False)
async def logged_model_artifacts(request: Req, model_id: str) -> Response[Any]:
    model = await _logged_model(request, model_id)
    return await browse(request, _owner(model))


@get("/logged-models/{model_id:str}/artifacts/raw", opt=LOGGED_MODEL_READ, include_in_schema=False)
async def logged_model_artifact_raw(request: Req, model_id: str) -> Stream:
    model = await _logged_model(request, model_id)
    outside = (
        f"Logged model {model.info.model_id}'s files are stored outside mlgate; "
        "they are not served here."
    )
    return await serve_raw(request, logged_model_root(model), outside)


ROUTE_HANDLERS = [logged_model_artifacts, logged_model_artifact_raw]
