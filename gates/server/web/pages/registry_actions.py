"""Acting on the registry from the web UI: promotions through the gate (dry run first), direct
stage and alias moves (an admin's override with a reason), descriptions, tags, and deleting a
version.

Every form calls the same service function as the JSON API route it mirrors, under the same
permission declaration where the route names its object in the path; the target of a move is
checked by the registry's pointer-move hook (promote rights, row locked) and by the gate guard,
exactly as for the API. Nothing here re-decides who may do what: refusals come back from the
services and are shown as a flash on the page the form was on. Each action is one transaction,
so a refused one leaves nothing behind.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from litestar import Request, Response, get, post

from gates.attestations.keys import ATTESTATION_KEYS_STATE_KEY
from gates.policies import ports, promotion
from gates.policies.errors import GatedTarget, LeavingGatedTarget, NoGateForTarget
from gates.policies.guard import MAX_OVERRIDE_REASON, OverrideRequest, override_request
from gates.policies.promotion import MAX_IDEMPOTENCY_KEY
from gates.policies.schemas import DecisionOut, PromoteRequest
from gates.server.web.pages.registry_pages import model_url, operator_of, version_url
from gates.server.web.render import page, redirect_with_flash, settings_of
from registry import service as registry
from registry.artifacts.api import RAW_BODY_OPT, STORAGE_STATE_KEY
from tracking.core.auth import Permission, actor_name, permission_opt
from tracking.core.errors import InvalidParameter, MlflowError
from tracking.core.http import database

Req = Request[Any, Any, Any]

MAX_FIELD = 300
MAX_TEXT = 100_000  # a tag value or a description; the services apply MLflow's own limits
MAX_COMMENT = 1000


def _form_opt(permission: Permission) -> dict[str, Any]:
    return permission_opt(permission, **{RAW_BODY_OPT: True})


# The same declarations as the JSON API (registry.api), located by the path's ``name``.
VERSION_READ = permission_opt(Permission("model_version", "read", "name"))
# Moves: reading the model here; the promote right on the pointers a move changes is checked
# by the registry's pointer-move hook with the model row locked, the gate by the gate guard.
VERSION_MOVE = _form_opt(Permission("model_version", "read", "name"))
MODEL_EDIT = _form_opt(Permission("registered_model", "edit", "name"))
VERSION_EDIT = _form_opt(Permission("model_version", "edit", "name"))
VERSION_DELETE = _form_opt(Permission("model_version", "delete", "name"))
VERSION_DELETE_PAGE = permission_opt(Permission("model_version", "delete", "name"))


async def _fields(request: Req) -> dict[str, str]:
    """The form's text fields, stripped (files and repeated keys are ignored)."""
    form = await request.form()
    out: dict[str, str] = {}
    for key in form:
        value = form.get(key)
        if isinstance(value, str):
            out[key] = value.strip()
    return out


def _bounded(fields: dict[str, str], key: str, label: str, limit: int = MAX_FIELD) -> str:
    value = fields.get(key, "")
    if len(value) > limit:
        raise InvalidParameter(f"{label} is at most {limit} characters.")
    return value


def _required(fields: dict[str, str], key: str, label: str, limit: int = MAX_FIELD) -> str:
    value = _bounded(fields, key, label, limit)
    if not value:
        raise InvalidParameter(f"{label} is required.")
    return value


def _back(request: Req, target: str, kind: str, text: str) -> Response[Any]:
    return redirect_with_flash(request, target, kind, text)


def _refusal(exc: MlflowError) -> str:
    """The service's message, with what the UI offers instead of the API's header."""
    if isinstance(exc, GatedTarget):
        head = exc.message.partition(": promote through")[0]
        return (
            f"Refused: {head}. Use 'Request promotion' to go through the gate; an admin may "
            "override it with a recorded reason."
        )
    if isinstance(exc, LeavingGatedTarget):
        head = exc.message.partition(" needs an admin's override")[0]
        return f"Refused: {head}: only an admin's override, with a recorded reason, may do that."
    return exc.message


async def _acting(request: Req, back: str, action: Callable[[], Awaitable[str]]) -> Response[Any]:
    """Run one form's ``action`` and flash its text at ``back``; a refusal (4xx) is flashed as
    an error instead, with nothing written (the action's transaction rolled back)."""
    try:
        text = await action()
    except MlflowError as exc:
        if exc.status_code >= 500:
            raise
        return _back(request, back, "error", _refusal(exc))
    return _back(request, back, "notice", text)


@contextmanager
def _override(request: Req, reason: str) -> Iterator[None]:
    """Hand the gate guard an admin's override reason, as the ``X-Mlgate-Override`` header
    does for the API: the guard checks the caller is an admin and audits the reason."""
    if not reason:
        yield
        return
    token = override_request.set(OverrideRequest(reason, request))
    try:
        yield
    finally:
        override_request.reset(token)


# --- promotion through the gate ----------------------------------------------------------------


async def _promote(
    request: Req, name: str, version: str, target: str, key: str | None
) -> DecisionOut:
    """The gate's promotion with the signed-in user as the authenticated caller: a dry run
    when ``key`` is None, else the real one (idempotent on ``key``)."""
    body = PromoteRequest(
        model=name, target=target, version=version, idempotency_key=key, dry_run=key is None
    )
    actor = replace(await ports.request_actor(request), auth_method="session")
    async with database(request).write() as s:
        result = await promotion.promote(
            s,
            body,
            raw_body=b"",
            signed=None,
            bearer=actor,
            storage=request.app.state.get(STORAGE_STATE_KEY),
            approval_ttl_hours=settings_of(request).approval_ttl_hours,
            trigger="ui",
            attestations=request.app.state.get(ATTESTATION_KEYS_STATE_KEY),
        )
    return result.decision


def _outcome_text(d: DecisionOut) -> tuple[str, str]:
    what = f"{d.model} version {d.version} -> {d.target}"
    if d.outcome == "passed":
        return "notice", f"Gate '{d.policy_name}' passed: {what} moved."
    if d.outcome == "failed":
        failed = ", ".join(c.name for c in d.checks if c.verdict == "fail")
        return "error", f"Gate '{d.policy_name}' refused {what} ({failed}); nothing moved."
    status = d.approval_status or "pending"
    if status == "pending":
        return "notice", (
            f"Gate '{d.policy_name}' opened approval request {d.approval_request_id} for "
            f"{what}; it moves when approved."
        )
    return "error", f"The approval request for {what} is {status}; nothing moved."


@post(
    "/models/{name:str}/versions/{version:str}/promote",
    opt=VERSION_MOVE,
    include_in_schema=False,
    status_code=200,
)
async def promote_version(request: Req, name: str, version: str) -> Response[Any]:
    """Step one (no key): the gate's dry-run decision and a confirm form. Step two: act."""
    back = version_url(name, version)
    fields = await _fields(request)
    try:
        target = _required(fields, "target", "The target (a stage or @alias)")
        key = _bounded(fields, "idempotency_key", "The confirmation key", MAX_IDEMPOTENCY_KEY)
        decision = await _promote(request, name, version, target, key or None)
    except NoGateForTarget as exc:
        return _back(request, back, "error", f"{exc.message} Move it directly instead, if you may.")
    except MlflowError as exc:
        if exc.status_code >= 500:
            raise
        return _back(request, back, "error", _refusal(exc))
    if key:
        kind, text = _outcome_text(decision)
        return _back(request, back, kind, text)
    return page(
        request,
        "promote.html",
        d=decision,
        operator_of=operator_of,
        version_href=back,
        model_href=model_url(name),
        name=name,
        version=version,
        confirm_key=secrets.token_urlsafe(24),
    )


# --- direct moves ------------------------------------------------------------------------------


@post(
    "/models/{name:str}/versions/{version:str}/move",
    opt=VERSION_MOVE,
    include_in_schema=False,
    status_code=303,
)
async def move_version(request: Req, name: str, version: str) -> Response[Any]:
    """A stage transition or alias move, as transition-stage / set alias would make it."""
    fields = await _fields(request)

    async def move() -> str:
        target = _required(fields, "target", "The target (a stage or @alias)")
        reason = _bounded(fields, "override_reason", "An override reason", MAX_OVERRIDE_REASON)
        comment = _bounded(fields, "comment", "The comment", MAX_COMMENT) or None
        actor = actor_name(request)
        with _override(request, reason):
            async with database(request).write() as s:
                if target.startswith("@"):
                    await registry.set_alias(
                        s, name, target[1:], version, actor=actor, comment=comment
                    )
                else:
                    archive = fields.get("archive_existing_versions") == "true"
                    await registry.transition_stage(
                        s, name, version, target, archive, actor=actor, comment=comment
                    )
        how = " (override recorded)" if reason else ""
        return f"Moved {name} version {version} to {target}{how}."

    return await _acting(request, version_url(name, version), move)


@post(
    "/models/{name:str}/versions/{version:str}/unalias",
    opt=VERSION_MOVE,
    include_in_schema=False,
    status_code=303,
)
async def remove_alias(request: Req, name: str, version: str) -> Response[Any]:
    fields = await _fields(request)

    async def unalias() -> str:
        alias = _required(fields, "alias", "The alias").removeprefix("@")
        reason = _bounded(fields, "override_reason", "An override reason", MAX_OVERRIDE_REASON)
        with _override(request, reason):
            async with database(request).write() as s:
                await registry.delete_alias(s, name, alias, actor=actor_name(request))
        return f"Removed alias @{alias} of {name}."

    return await _acting(request, version_url(name, version), unalias)


# --- descriptions and tags ---------------------------------------------------------------------


@post("/models/{name:str}/edit", opt=MODEL_EDIT, include_in_schema=False, status_code=303)
async def edit_model(request: Req, name: str) -> Response[Any]:
    fields = await _fields(request)

    async def save() -> str:
        description = _bounded(fields, "description", "The description", MAX_TEXT)
        async with database(request).write() as s:
            await registry.update_registered_model(s, name, description)
        return "Description saved."

    return await _acting(request, model_url(name), save)


@post(
    "/models/{name:str}/versions/{version:str}/edit",
    opt=VERSION_EDIT,
    include_in_schema=False,
    status_code=303,
)
async def edit_version(request: Req, name: str, version: str) -> Response[Any]:
    fields = await _fields(request)

    async def save() -> str:
        description = _bounded(fields, "description", "The description", MAX_TEXT)
        async with database(request).write() as s:
            await registry.update_model_version(s, name, version, description)
        return "Description saved."

    return await _acting(request, version_url(name, version), save)


async def _tag_change(request: Req, name: str, version: str | None) -> str:
    """Set (``op=set``) or delete (``op=delete``) one tag; the message to show."""
    fields = await _fields(request)
    op = fields.get("op", "set")
    if op not in ("set", "delete"):
        raise InvalidParameter("Choose to set or delete the tag.")
    key = _required(fields, "key", "The tag key", MAX_TEXT)
    value = _bounded(fields, "value", "The tag value", MAX_TEXT)
    async with database(request).write() as s:
        if version is None and op == "set":
            await registry.set_registered_model_tag(s, name, key, value)
        elif version is None:
            await registry.delete_registered_model_tag(s, name, key)
        elif op == "set":
            await registry.set_model_version_tag(s, name, version, key, value)
        else:
            await registry.delete_model_version_tag(s, name, version, key)
    return f"Tag '{key}' {'saved' if op == 'set' else 'deleted'}."


@post("/models/{name:str}/tags", opt=MODEL_EDIT, include_in_schema=False, status_code=303)
async def model_tags(request: Req, name: str) -> Response[Any]:
    return await _acting(request, model_url(name), lambda: _tag_change(request, name, None))


@post(
    "/models/{name:str}/versions/{version:str}/tags",
    opt=VERSION_EDIT,
    include_in_schema=False,
    status_code=303,
)
async def version_tags(request: Req, name: str, version: str) -> Response[Any]:
    return await _acting(
        request, version_url(name, version), lambda: _tag_change(request, name, version)
    )


# --- deleting a version ------------------------------------------------------------------------


@get(
    "/models/{name:str}/versions/{version:str}/delete",
    opt=VERSION_DELETE_PAGE,
    include_in_schema=False,
)
async def confirm_delete(request: Req, name: str, version: str) -> Response[Any]:
    async with database(request).read() as s:
        mv = await registry.get_model_version(s, name, version)
    return page(
        request,
        "version_delete.html",
        mv=mv,
        version_href=version_url(mv.name, mv.version),
        model_href=model_url(mv.name),
    )


@post(
    "/models/{name:str}/versions/{version:str}/delete",
    opt=VERSION_DELETE,
    include_in_schema=False,
    status_code=303,
)
async def delete_version(request: Req, name: str, version: str) -> Response[Any]:
    fields = await _fields(request)
    confirm_page = f"{version_url(name, version)}/delete"
    if fields.get("confirm") != version:
        return _back(
            request,
            confirm_page,
            "error",
            f"Type the version number ({version}) to confirm; nothing was deleted.",
        )
    try:
        reason = _bounded(fields, "override_reason", "An override reason", MAX_OVERRIDE_REASON)
        with _override(request, reason):
            async with database(request).write() as s:
                await registry.delete_model_version(s, name, version, actor=actor_name(request))
    except MlflowError as exc:
        if exc.status_code >= 500:
            raise
        return _back(request, confirm_page, "error", _refusal(exc))
    return _back(request, model_url(name), "notice", f"Deleted {name} version {version}.")


ROUTE_HANDLERS = [
    promote_version,
    move_version,
    remove_alias,
    edit_model,
    edit_version,
    model_tags,
    version_tags,
    confirm_delete,
    delete_version,
]
