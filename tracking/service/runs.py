"""Runs: start, read, update, delete and restore, and search."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
from sqlalchemy.ext.asyncio import AsyncSession

from tracking import store
from tracking.core.auth import ResourceScope
from tracking.core.clock import now_ms
from tracking.core.db import dialect_name
from tracking.core.driver import BuiltStatements, DriverRows
from tracking.core.errors import InvalidParameter, MlflowError
from tracking.core.wire import decode_page_token, encode_page_token
from tracking.errors import ExperimentNotFound, InactiveExperiment, RunNotFound
from tracking.schemas import (
    CreateRun,
    Id,
    RunDataOut,
    RunInfoOut,
    RunInputsOut,
    RunOut,
    SearchRuns,
    TagOut,
    UpdateRun,
)
from tracking.service.lookups import (
    RUN_NAME_TAG,
    RUN_STATUSES,
    USER_TAG,
    active_run,
    generate_run_name,
    page_fingerprint,
    parse_experiment_id,
    parse_view_type,
    run_handle,
)
from tracking.service.rendering import run_out
from tracking.service.run_json import runs_json
from tracking.store import prebuilt
from tracking.store.read_rows import load_run_page_rows
from tracking.validation import (
    MAX_RUN_NAME_LEN,
    MAX_RUN_TAG_VALUE_LEN,
    MAX_SEARCH_RESULTS,
    check_length,
    require,
    truncate,
    validate_key,
    validate_max_results,
)


@dataclass(frozen=True, slots=True)
class NewRun:
    """A checked create-run request: everything the new run's row, tags and answer hold."""

    raw_experiment_id: Id
    experiment_id: int
    run_uuid: str
    name: str
    user_id: str
    start_time: int
    tags: dict[str, str]

    def out(self, artifact_uri: str) -> RunOut:
        # Everything in the new run is known here: answer without reading it back.
        return RunOut(
            info=RunInfoOut(
                run_id=self.run_uuid,
                run_uuid=self.run_uuid,
                run_name=self.name,
                experiment_id=str(self.experiment_id),
                user_id=self.user_id,
                status="RUNNING",
                start_time=self.start_time,
                artifact_uri=artifact_uri,
                lifecycle_stage="active",
            ),
            data=RunDataOut(
                metrics=[], params=[], tags=[TagOut(k, v) for k, v in self.tags.items()]
            ),
            inputs=RunInputsOut(),
        )


def check_new_run(req: CreateRun, user: str | None) -> NewRun:
    """Validate a create-run request (no database needed). ``user`` is the authenticated
    caller when auth is on: it becomes the run's ``user_id`` and ``mlflow.user`` tag whatever
    the client claims; None keeps MLflow's behaviour (the client's ``user_id``)."""
    raw_id = req.experiment_id if req.experiment_id not in (None, "") else "0"
    eid = parse_experiment_id(raw_id)
    tags = {
        validate_key(t.key, "tag"): truncate(t.value or "", MAX_RUN_TAG_VALUE_LEN) for t in req.tags
    }
    tag_name = tags.get(RUN_NAME_TAG)
    if req.run_name and tag_name and req.run_name != tag_name:
        raise InvalidParameter(
            f"Both 'run_name' argument and 'mlflow.runName' tag are specified, but with different "
            f"values (run_name='{req.run_name}', mlflow.runName='{tag_name}')."
        )
    name = req.run_name or tag_name or generate_run_name()
    check_length(name, MAX_RUN_NAME_LEN, "Run name")
    tags[RUN_NAME_TAG] = name
    if user is not None:
        tags[USER_TAG] = user
    start_time = req.start_time if req.start_time is not None else now_ms()
    user_id = user if user is not None else (req.user_id or "")
    return NewRun(raw_id, eid, uuid.uuid4().hex, name, user_id, start_time, tags)


async def create_run(s: AsyncSession, req: CreateRun, *, user: str | None = None) -> RunOut:
    """Start a run (see :func:`check_new_run` for ``user``)."""
    return await start_checked_run(s, check_new_run(req, user))


async def start_checked_run(s: AsyncSession, new: NewRun) -> RunOut:
    started = await store.insert_run_in_active_experiment(
        s,
        run_uuid=new.run_uuid,
        experiment_id=new.experiment_id,
        name=new.name,
        user_id=new.user_id,
        start_time=new.start_time,
    )
    if started is None:
        experiment = await store.experiment_stage_and_location(s, new.experiment_id)
        if experiment is None:
            raise ExperimentNotFound(new.raw_experiment_id)
        raise InactiveExperiment(new.experiment_id)
    run_pk, artifact_uri = started
    await store.upsert_run_tags(s, run_pk, new.tags)
    return new.out(artifact_uri)


async def create_run_at_once(w: DriverRows, new: NewRun) -> RunOut | None:
    """Start a checked run on the write connection's driver: one statement on PostgreSQL.
    None: no active experiment has its id (nothing written; :func:`start_checked_run` says
    why)."""
    artifact_uri = await prebuilt.start_run(
        w,
        run_uuid=new.run_uuid,
        experiment_id=new.experiment_id,
        name=new.name,
        user_id=new.user_id,
        start_time=new.start_time,
        tags=new.tags,
    )
    return None if artifact_uri is None else new.out(artifact_uri)


async def get_run(s: AsyncSession, run_id: str | None) -> RunOut:
    handle = await run_handle(s, run_id)
    return run_out((await store.load_runs(s, [handle.id]))[0])


async def get_run_outputs(s: AsyncSession, run_id: str | None) -> RunOut:
    """The run's info and model inputs/outputs only; its params, tags, metrics and dataset
    inputs are left empty (what resolving a ``runs:/`` source needs, in two reads)."""
    require(run_id, "run_id")
    assert run_id is not None
    bundle = await store.load_run_by_uuid(s, run_id, data=False)
    if bundle is None:
        raise RunNotFound(run_id)
    return run_out(bundle)


async def get_run_for_checks(s: AsyncSession, run_id: str | None) -> RunOut:
    """The run's info, params, tags, latest metrics and model inputs/outputs in two reads,
    its dataset inputs left empty: what checking a run against a gate's policy and resolving
    a ``runs:/`` source need. Errors as :func:`get_run`."""
    require(run_id, "run_id")
    assert run_id is not None
    bundle = await store.load_run_by_uuid(s, run_id)
    if bundle is None:
        raise RunNotFound(run_id)
    return run_out(bundle)


async def update_run(s: AsyncSession, req: UpdateRun) -> RunInfoOut:
    handle = await active_run(s, req.run_id or req.run_uuid)
    values: dict[str, Any] = {}
    if req.status:
        status = req.status.upper()
        if status not in RUN_STATUSES:
            raise InvalidParameter(f"Invalid run status '{req.status}'.")
        values["status"] = status
    if req.end_time is not None:
        values["end_time"] = req.end_time
    if req.run_name:
        check_length(req.run_name, MAX_RUN_NAME_LEN, "Run name")
        values["name"] = req.run_name
        await store.upsert_run_tags(s, handle.id, {RUN_NAME_TAG: req.run_name})
    if values:
        await store.update_run(s, handle.id, **values)
    return run_out((await store.load_runs(s, [handle.id]))[0]).info


async def delete_run(s: AsyncSession, run_id: str | None) -> None:
    handle = await run_handle(s, run_id)
    await store.update_run(s, handle.id, lifecycle_stage="deleted", deleted_time=now_ms())


async def restore_run(s: AsyncSession, run_id: str | None) -> None:
    handle = await run_handle(s, run_id)
    stage = await store.experiment_lifecycle(s, handle.experiment_id)
    if stage != "active":
        raise InactiveExperiment(handle.experiment_id)
    await store.update_run(s, handle.id, lifecycle_stage="active", deleted_time=None)


@dataclass(frozen=True, slots=True)
class _RunPage:
    """A checked search_runs request: how to build its page's query and where the page starts."""

    scope: ResourceScope | None
    experiment_ids: tuple[int, ...]
    filter: str | None
    order_by: tuple[str, ...]
    view: str | None
    dialect: str
    offset: int
    limit: int
    fingerprint: str

    def select(self) -> Any:
        """The ordered select of run keys, offset and limited (one run past the page)."""
        from tracking.search import run_search_select
        from tracking.search.sql import with_values_in_sql

        stmt = run_search_select(
            list(self.experiment_ids), self.filter, list(self.order_by), self.view, self.scope
        )
        stmt = stmt.offset(self.offset).limit(self.limit + 1)
        if self.dialect == "postgresql":
            stmt = with_values_in_sql(stmt)  # every plan made knowing the values (see there)
        return stmt

    def token(self, found: int) -> str | None:
        over = found > self.limit
        return encode_page_token(self.offset + self.limit, self.fingerprint) if over else None


# The SQL of recent run searches, by request: this object is all its select depends on.
_SEARCH_SQL = BuiltStatements()


def _run_page(req: SearchRuns, scope: ResourceScope | None, dialect: str) -> _RunPage | None:
    """Check the request (raising MLflow's errors but a bad filter's or order's, which
    building its select raises); None: no experiment named, an empty page."""
    limit = validate_max_results(req.max_results, 1000, MAX_SEARCH_RESULTS)
    view = parse_view_type(req.run_view_type)
    experiment_ids = tuple(parse_experiment_id(e) for e in req.experiment_ids)
    order_by = tuple(req.order_by)
    fingerprint = page_fingerprint("runs", experiment_ids, req.filter or "", order_by, view)
    offset = decode_page_token(req.page_token, fingerprint)
    if not experiment_ids:
        return None
    return _RunPage(
        scope, experiment_ids, req.filter, order_by, view, dialect, offset, limit, fingerprint
    )


async def search_runs(
    s: AsyncSession, req: SearchRuns, *, scope: ResourceScope | None = None
) -> tuple[list[RunOut], str | None]:
    """One page of runs; ``scope`` (None: all) drops runs of experiments the caller can't read."""
    page = _run_page(req, scope, dialect_name(s))
    if page is None:
        return [], None
    pks = [row[0] for row in await s.execute(page.select())]
    bundles = await store.load_runs(s, pks[: page.limit])
    return [run_out(b) for b in bundles], page.token(len(pks))


async def search_runs_at_once(
    r: DriverRows, req: SearchRuns, *, scope: ResourceScope | None = None
) -> tuple[list[msgspec.Raw], str | None] | None:
    """:func:`search_runs` on a read connection's driver, no session: the same query and the
    same loading statements, so the same page, each run written straight to its JSON
    (:mod:`tracking.service.run_json`). A request seen recently reuses its query's SQL
    (:data:`_SEARCH_SQL`). None: the request is refused (the session path names the error)."""
    try:
        page = _run_page(req, scope, r.dialect)
        if page is None:
            return [], None
        rows = await r.all_memoized(_SEARCH_SQL, page, page.select)
    except MlflowError:
        return None
    pks = [row[0] for row in rows]
    shown = pks[: page.limit]
    return runs_json(await load_run_page_rows(r, shown), shown), page.token(len(pks))


async def get_run_at_once(r: DriverRows, run_id: str | None) -> msgspec.Raw | None:
    """:func:`get_run` on the driver, as the run's JSON; None: no such run (or no id), which
    the session path refuses with MLflow's error."""
    pk = await prebuilt.run_pk(r, run_id) if run_id else None
    found = runs_json(await load_run_page_rows(r, [pk]), [pk]) if pk is not None else []
    return found[0] if found else None


async def get_runs(s: AsyncSession, run_ids: Sequence[str]) -> list[RunOut]:
    """The known runs among ``run_ids``, in that order (a fixed number of queries)."""
    pks = await store.run_pks_by_uuids(s, list(dict.fromkeys(run_ids)))
    bundles = await store.load_runs(s, [pks[r] for r in dict.fromkeys(run_ids) if r in pks])
    return [run_out(b) for b in bundles]
