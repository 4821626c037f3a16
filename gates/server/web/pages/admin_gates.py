"""Administration pages for gate policies (admin only): the gates, each gate's versions and
a diff between two of them, editing (which stores a new policy version), a dry run of the
gate against a model version, and its signing secrets (create and rotate, the secret shown
once in that answer with ``Cache-Control: no-store``; retire).

Routes declare ``ADMIN`` like the gates API's write routes. Editing calls
``gates.policies.service.update_policy`` with the same ``PolicySpec`` the API decodes (unknown
fields refused), so validation, binding checks, versioning and audit are the API's. A dry run
is the gate's own promotion with ``dry_run`` set and the signed-in admin as the caller: it
records a dry-run decision and moves nothing.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import replace
from typing import Any
from urllib.parse import quote

import msgspec
from litestar import Request, Response, get, post

from gates.events.signing import SecretBox
from gates.policies import ports, promotion
from gates.policies import service as policies
from gates.policies.schemas import (
    DecisionOut,
    PolicyRules,
    PolicySpec,
    PolicyVersionOut,
    PromoteRequest,
    SecretOut,
)
from gates.policies.service.records import MAX_ROTATION_GRACE_SECONDS
from gates.server.web.pages.registry_pages import operator_of, version_url
from gates.server.web.render import page, redirect_with_flash, settings_of, with_query
from registry.artifacts.api import RAW_BODY_OPT, STORAGE_STATE_KEY
from tracking.core.auth import ADMIN, actor_name, permission_opt
from tracking.core.clock import now_ms
from tracking.core.errors import InvalidParameter, MlflowError
from tracking.core.http import database

Req = Request[Any, Any, Any]

ADMIN_PAGE = permission_opt(ADMIN)
ADMIN_FORM = permission_opt(ADMIN, **{RAW_BODY_OPT: True})
GATES = "/admin/gates"
MAX_SPEC = 100_000
MAX_VERSION_FIELD = 20
MAX_MODEL_FIELD = 300
MAX_GRACE_HOURS = MAX_ROTATION_GRACE_SECONDS // 3600  # shown to the admin; the service checks


def gate_url(name: str) -> str:
    return f"{GATES}/{quote(name, safe='')}"


def spec_text(model: str, target: str, rules: PolicyRules) -> str:
    """A policy version as the JSON an admin edits: the binding and every rule, defaults
    included (so a field is there to change), keys sorted so diffs line up."""
    body: dict[str, Any] = {"model": model, "target": target}
    for field in PolicyRules.__struct_fields__:
        body[field] = msgspec.to_builtins(getattr(rules, field))
    return json.dumps(body, indent=2, sort_keys=True)


def version_diff(old: PolicyVersionOut, new: PolicyVersionOut) -> list[str]:
    return list(
        difflib.unified_diff(
            spec_text(old.model, old.target, old.rules).splitlines(),
            spec_text(new.model, new.target, new.rules).splitlines(),
            fromfile=f"version {old.version}",
            tofile=f"version {new.version}",
            lineterm="",
        )
    )


@get(GATES, opt=ADMIN_PAGE, include_in_schema=False)
async def gates_page(request: Req) -> Response[Any]:
    token = request.query_params.get("page_token") or None
    async with database(request).read() as s:
        found, next_token = await policies.list_policies(s, None, token, include_disabled=True)
    return page(
        request,
        "admin_gates.html",
        gates=found,
        gate_url=gate_url,
        next_url=with_query(GATES, page_token=next_token) if next_token else None,
    )


def _pick(versions: list[PolicyVersionOut], wanted: str | None) -> PolicyVersionOut | None:
    return next((v for v in versions if v.version == wanted), None)


async def _gate_page(
    request: Req,
    name: str,
    *,
    decision: DecisionOut | None = None,
    new_secret: SecretOut | None = None,
) -> Response[Any]:
    async with database(request).read() as s:
        gate = await policies.get_policy(s, name)
        secrets = await policies.list_secrets(s, name)
        # Newest first; the page shows the latest page of versions (the API pages further).
        versions, more = await policies.list_policy_versions(s, name, None, None)
    q = request.query_params
    old, new = _pick(versions, q.get("from")), _pick(versions, q.get("to"))
    diff_error = None
    if (q.get("from") or q.get("to")) and (old is None or new is None):
        diff_error = "Choose two versions of this gate to compare."
    response = page(
        request,
        "admin_gate.html",
        gate=gate,
        secrets=secrets,
        new_secret=new_secret,
        now=now_ms(),
        max_grace_hours=MAX_GRACE_HOURS,
        versions=versions,
        more_versions=more is not None,
        diff=version_diff(old, new) if old and new else None,
        diff_from=old.version if old else "",
        diff_to=new.version if new else "",
        diff_error=diff_error,
        spec=spec_text(gate.model, gate.target, gate.rules),
        decision=decision,
        operator_of=operator_of,
        version_href=version_url(gate.model, decision.version)
        if decision and decision.version
        else None,
        base=gate_url(gate.name),
    )
    if new_secret is not None:
        # The secret is in this answer only: no cache, no history copy.
        response.headers["Cache-Control"] = "no-store"
    return response


@get(f"{GATES}/{{name:str}}", opt=ADMIN_PAGE, include_in_schema=False)
async def gate_page(request: Req, name: str) -> Response[Any]:
    return await _gate_page(request, name)


async def _text(request: Req, key: str, limit: int) -> str:
    form = await request.form()
    value = form.get(key)
    text = value.strip() if isinstance(value, str) else ""
    if len(text) > limit:
        raise InvalidParameter(f"The {key.replace('_', ' ')} is at most {limit} characters.")
    return text


def _parse_spec(name: str, text: str) -> PolicySpec:
    """The edited JSON as the API's ``PolicySpec`` (unknown fields refused); the gate's name
    comes from the page, never from the text."""
    if not text:
        raise InvalidParameter("The policy is empty; edit the JSON shown.")
    try:
        body = msgspec.json.decode(text.encode())
    except msgspec.DecodeError as exc:
        raise InvalidParameter(f"The policy is not valid JSON: {exc}.") from None
    if not isinstance(body, dict):
        raise InvalidParameter("The policy is a JSON object of its model, target and rules.")
    if "name" in body and body["name"] != name:
        raise InvalidParameter("A gate's name cannot be changed here.")
    body["name"] = name
    try:
        return msgspec.convert(body, type=PolicySpec)
    except msgspec.ValidationError as exc:
        raise InvalidParameter(f"Invalid policy: {exc}.") from None


@post(f"{GATES}/{{name:str}}/edit", opt=ADMIN_FORM, include_in_schema=False, status_code=303)
async def edit_gate(request: Req, name: str) -> Response[Any]:
    back = gate_url(name)
    try:
        spec = _parse_spec(name, await _text(request, "spec", MAX_SPEC))
        async with database(request).write() as s:
            gate, changed = await policies.update_policy(s, spec, actor=actor_name(request))
    except MlflowError as exc:
        if exc.status_code >= 500:
            raise
        return redirect_with_flash(
            request, back, "error", f"Refused: {exc.message} Nothing changed."
        )
    if not changed:
        return redirect_with_flash(
            request, back, "notice", "No change: the gate keeps its version."
        )
    return redirect_with_flash(
        request, back, "notice", f"Saved gate {gate.name} as version {gate.version}."
    )


@post(f"{GATES}/{{name:str}}/dry-run", opt=ADMIN_FORM, include_in_schema=False, status_code=200)
async def dry_run(request: Req, name: str) -> Response[Any]:
    back = gate_url(name)
    try:
        model = await _text(request, "model", MAX_MODEL_FIELD)
        version = await _text(request, "version", MAX_VERSION_FIELD)
        if not model or not version:
            raise InvalidParameter("The registered model and the version to check are required.")
        async with database(request).read() as s:
            gate = await policies.get_policy(s, name)
            applies = await policies.gate_for(s, model, gate.target)
        if applies is None or applies.policy.name != gate.name:
            raise InvalidParameter(
                f"Gate {gate.name} does not guard {model} -> {gate.target} (its models: "
                f"{gate.model}); nothing was checked."
            )
        body = PromoteRequest(model=model, target=gate.target, version=version, dry_run=True)
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
            )
    except MlflowError as exc:
        if exc.status_code >= 500:
            raise
        return redirect_with_flash(request, back, "error", f"Dry run refused: {exc.message}")
    return await _gate_page(request, name, decision=result.decision)


# --- gate secrets --------------------------------------------------------------------------------


def _secret_box(request: Req) -> SecretBox:
    """Sealed at rest under the same key as the gates API seals them."""
    return SecretBox(settings_of(request).webhook_secret_key)


def _grace_seconds(raw: str) -> int | None:
    if not raw:
        return None
    if not raw.isdigit():
        raise InvalidParameter(
            f"The grace period is a whole number of hours from 0 to {MAX_GRACE_HOURS}."
        )
    return int(raw) * 3600  # the service refuses one beyond its bound


@post(f"{GATES}/{{name:str}}/secrets/add", opt=ADMIN_FORM, include_in_schema=False, status_code=200)
async def add_secret(request: Req, name: str) -> Response[Any]:
    try:
        async with database(request).write() as s:
            created = await policies.add_secret(
                s, name, actor=actor_name(request), box=_secret_box(request)
            )
    except MlflowError as exc:
        return _refused(request, name, exc)
    return await _gate_page(request, name, new_secret=created)


@post(
    f"{GATES}/{{name:str}}/secrets/rotate", opt=ADMIN_FORM, include_in_schema=False, status_code=200
)
async def rotate_secret(request: Req, name: str) -> Response[Any]:
    try:
        grace = _grace_seconds(await _text(request, "grace_hours", MAX_VERSION_FIELD))
        async with database(request).write() as s:
            created = await policies.rotate_secret(
                s, name, grace, actor=actor_name(request), box=_secret_box(request)
            )
    except MlflowError as exc:
        return _refused(request, name, exc)
    return await _gate_page(request, name, new_secret=created)


@post(
    f"{GATES}/{{name:str}}/secrets/{{secret_id:str}}/retire",
    opt=ADMIN_FORM,
    include_in_schema=False,
    status_code=303,
)
async def retire_secret(request: Req, name: str, secret_id: str) -> Response[Any]:
    try:
        async with database(request).write() as s:
            await policies.revoke_secret(s, name, secret_id, actor=actor_name(request))
    except MlflowError as exc:
        return _refused(request, name, exc)
    return redirect_with_flash(
        request, gate_url(name), "notice", f"Retired secret {secret_id}: it signs nothing now."
    )


def _refused(request: Req, name: str, exc: MlflowError) -> Response[Any]:
    if exc.status_code >= 500:
        raise exc
    return redirect_with_flash(request, gate_url(name), "error", f"Refused: {exc.message}")


ROUTE_HANDLERS = [
    gates_page,
    gate_page,
    edit_gate,
    dry_run,
    add_secret,
    rotate_secret,
    retire_secret,
]
