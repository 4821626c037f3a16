"""Registered models and their aliases: create, rename, delete, search, tags, set/move aliases."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NoReturn

from sqlalchemy.ext.asyncio import AsyncSession

from registry import events, store
from registry.errors import AliasNotFound, RegisteredModelAlreadyExists
from registry.events import MovePermit, PointerMove
from registry.prompts import PROMPT_TAG, NameTakenAcrossKinds, is_prompt_tags
from registry.schemas import (
    CreateRegisteredModel,
    ModelVersionOut,
    RegisteredModelOut,
    SearchRegisteredModels,
    Version,
)
from registry.search import registered_model_search_select
from registry.service.history import history_row
from registry.service.lookups import (
    POINTER_STAGES,
    checked_tags,
    find_model,
    find_version,
    model_is_prompt,
    model_out,
    page_fingerprint,
    render_model,
    version_out,
)
from registry.validation import (
    DEFAULT_SEARCH_MODELS,
    LATEST_ALIAS,
    MAX_SEARCH_MODELS,
    STAGES,
    canonical_stage,
    validate_alias,
    validate_description,
    validate_max_results,
    validate_model_name,
    validate_tag,
)
from tracking.core.auth import ResourceScope
from tracking.core.clock import now_ms
from tracking.core.errors import (
    InvalidParameter,
    MlflowError,
    ResourceAlreadyExists,
    ResourceNotFound,
)
from tracking.core.wire import decode_page_token, encode_page_token

# --- registered models ---------------------------------------------------------------------------


async def create_registered_model(
    s: AsyncSession, req: CreateRegisteredModel, *, actor: str
) -> RegisteredModelOut:
    name = validate_model_name(req.name)
    tags = checked_tags(req.tags)
    description = validate_description(req.description)
    model_id = await store.insert_registered_model(
        s, name=name, user_id=actor, description=description, now=now_ms()
    )
    if model_id is None:
        await _name_taken(s, name, PROMPT_TAG in tags)
    await store.upsert_model_tags(s, model_id, tags)
    await events.emit(
        s,
        events.RegisteredModelCreated(
            name,
            tuple(tags.items()),
            description,
            actor,
            now_ms(),
            is_prompt=is_prompt_tags(tags),
        ),
    )
    return await render_model(s, model_id)


async def _name_taken(s: AsyncSession, name: str, new_is_prompt: bool) -> NoReturn:
    """MLflow's answer to a taken name: a prompt and a model may not share one, and the message
    says which of the two holds it (the prompt tag's presence decides, as in MLflow)."""
    existing = await store.get_model_row(s, name)
    old_is_prompt = (
        existing is not None and await store.model_tag(s, existing.id, PROMPT_TAG) is not None
    )
    if old_is_prompt != new_is_prompt:
        raise NameTakenAcrossKinds(name, new_is_prompt)
    if new_is_prompt:
        raise ResourceAlreadyExists(f"Prompt (name={name}) already exists.")
    raise RegisteredModelAlreadyExists(name)


async def get_registered_model(s: AsyncSession, name: str | None) -> RegisteredModelOut:
    return await render_model(s, (await find_model(s, name)).id)


async def rename_registered_model(
    s: AsyncSession, name: str | None, new_name: str | None
) -> RegisteredModelOut:
    model = await find_model(s, name, lock=True)
    target = validate_model_name(new_name, "new_name")
    if target != model.name and not await store.rename_registered_model(
        s, model.id, target, now_ms()
    ):
        raise RegisteredModelAlreadyExists(target)
    return await render_model(s, model.id)


async def update_registered_model(
    s: AsyncSession, name: str | None, description: str | None
) -> RegisteredModelOut:
    model = await find_model(s, name)
    await store.update_registered_model(
        s,
        model.id,
        description=validate_description(description),
        last_updated_timestamp=now_ms(),
    )
    return await render_model(s, model.id)


async def delete_registered_model(s: AsyncSession, name: str | None, *, actor: str) -> None:
    """Delete a model with its versions, tags and aliases; its history rows are kept."""
    model = await find_model(s, name, lock=True)
    holders = await store.stage_holders(s, model.id)
    aliases = await store.aliases_of_model(s, model.id)
    pointers = [("stage", st, holders[st]) for st in POINTER_STAGES if st in holders]
    pointers += [("alias", alias, version) for alias, version in sorted(aliases.items())]
    notes = [
        await events.check_pointer_move(
            s, PointerMove("delete_model", model.name, kind, pointer, None, version, actor)
        )
        for kind, pointer, version in pointers
    ]
    noted = events.with_note(None, "; ".join(n for n in notes if n) or None)
    now = now_ms()
    await store.insert_pointer_events(
        s,
        [
            history_row(
                model, kind, pointer, version, None, None, "model_deleted", actor, noted, now
            )
            for kind, pointer, version in pointers
        ],
    )
    await store.delete_registered_model(s, model.id)
    await events.emit(s, events.RegisteredModelDeleted(model.name, tuple(pointers), actor, now))


async def search_registered_models(
    s: AsyncSession, req: SearchRegisteredModels, *, scope: ResourceScope | None = None
) -> tuple[list[RegisteredModelOut], str | None]:
    """One page of models; ``scope`` (None: all) keeps the models the caller may read."""
    limit = validate_max_results(req.max_results, DEFAULT_SEARCH_MODELS, MAX_SEARCH_MODELS)
    fingerprint = page_fingerprint("rm", req.filter or "", tuple(req.order_by))
    offset = decode_page_token(req.page_token, fingerprint)
    stmt = registered_model_search_select(req.filter, list(req.order_by), scope)
    ids = await store.search_ids(s, stmt, offset=offset, limit=limit + 1)
    token = encode_page_token(offset + limit, fingerprint) if len(ids) > limit else None
    bundles = await store.load_registered_models(s, ids[:limit])
    return [model_out(b) for b in bundles], token


async def set_registered_model_tag(
    s: AsyncSession, name: str | None, key: str | None, value: str | None
) -> None:
    model = await find_model(s, name)
    checked_key, checked_value = validate_tag(key, value)
    # Like MLflow's server, tags and aliases leave last_updated_timestamp alone.
    await store.upsert_model_tags(s, model.id, {checked_key: checked_value})
    now = now_ms()
    prompt = await model_is_prompt(s, model.id)
    await events.emit(
        s, events.RegisteredModelTagSet(model.name, checked_key, checked_value, now, prompt)
    )


async def delete_registered_model_tag(s: AsyncSession, name: str | None, key: str | None) -> None:
    model = await find_model(s, name)
    if not key:
        raise InvalidParameter("Missing value for required parameter 'key'.")
    if not await store.delete_model_tag(s, model.id, key):
        raise ResourceNotFound(f"No tag with key '{key}' on registered model '{model.name}'")
    now = now_ms()
    await events.emit(
        s,
        events.RegisteredModelTagSet(
            model.name, key, None, now, is_prompt=await model_is_prompt(s, model.id)
        ),
    )


async def get_latest_versions(
    s: AsyncSession, name: str | None, stages: Sequence[str] | None
) -> list[ModelVersionOut]:
    """The highest version in each requested stage (every stage when none is given)."""
    checked = validate_model_name(name)
    try:
        wanted = {canonical_stage(st) for st in stages} if stages else set(STAGES)
    except MlflowError:
        await find_model(s, checked)  # a missing model is reported first, as MLflow does
        raise
    # The model is found by name inside the version query: one read on the hot path of
    # models:/name/<stage>; only an empty answer looks the model up, to tell "no such model".
    found = await store.load_versions(s, store.latest_versions_of_select(checked, wanted))
    if not found:
        await find_model(s, checked)
    return [version_out(b) for b in found]


# --- aliases -------------------------------------------------------------------------------------


async def set_alias(
    s: AsyncSession,
    name: str | None,
    alias: str | None,
    version: Version | None,
    *,
    actor: str,
    comment: str | None = None,
    permit: MovePermit | None = None,
) -> None:
    """Point ``alias`` at ``version`` (creating or moving it), with a history row.

    ``permit`` is what an upper layer making this move itself was allowed (the guards read it).
    """
    checked = validate_alias(alias, setting=True)
    model = await find_model(s, name, lock=True)
    row = await find_version(s, model, version)
    current = await store.get_alias_version(s, model.id, checked)
    note = await events.check_pointer_move(
        s,
        PointerMove(
            "set_alias",
            model.name,
            "alias",
            checked,
            row.version,
            current,
            actor,
            comment,
            permit=permit,
        ),
    )
    comment = events.with_note(comment, note)
    now = now_ms()
    await store.upsert_alias(s, model.id, checked, row.version)
    await store.insert_pointer_events(
        s,
        [
            history_row(
                model,
                "alias",
                checked,
                current,
                row.version,
                row.version,
                "set_alias",
                actor,
                comment,
                now,
            )
        ],
    )
    prompt = await model_is_prompt(s, model.id)
    await events.emit(
        s,
        events.AliasMoved(
            model.name, checked, current, row.version, actor, comment, now, is_prompt=prompt
        ),
    )


async def delete_alias(
    s: AsyncSession,
    name: str | None,
    alias: str | None,
    *,
    actor: str,
    comment: str | None = None,
) -> None:
    """Remove ``alias``; removing one that does not exist is a no-op, as in MLflow."""
    checked = validate_alias(alias)
    model = await find_model(s, name, lock=True)
    current = await store.get_alias_version(s, model.id, checked)
    if current is None:
        return
    note = await events.check_pointer_move(
        s, PointerMove("delete_alias", model.name, "alias", checked, None, current, actor, comment)
    )
    comment = events.with_note(comment, note)
    now = now_ms()
    await store.delete_alias(s, model.id, checked)
    await store.insert_pointer_events(
        s,
        [
            history_row(
                model,
                "alias",
                checked,
                current,
                None,
                current,
                "delete_alias",
                actor,
                comment,
                now,
            )
        ],
    )
    prompt = await model_is_prompt(s, model.id)
    await events.emit(
        s,
        events.AliasMoved(model.name, checked, current, None, actor, comment, now, prompt),
    )


async def get_version_by_alias(
    s: AsyncSession, name: str | None, alias: str | None
) -> ModelVersionOut:
    """The version an alias points at; ``latest`` is the highest version (``models:/n@latest``)."""
    checked = validate_alias(alias)
    model_name = validate_model_name(name)
    model_id = store.model_named(model_name)  # found inside the version query
    if checked.lower() == LATEST_ALIAS:
        found = await store.load_versions(s, store.highest_version_select(model_id))
        if not found:
            model = await find_model(s, model_name)
            raise ResourceNotFound(f"Latest version not found for model {model.name}.")
    else:
        # One statement from alias to version row: a concurrent move is seen before or after.
        found = await store.load_versions(s, store.alias_target_select(model_id, checked))
        if not found:
            model = await find_model(s, model_name)
            raise AliasNotFound(model.name, checked)
    return version_out(found[0])


async def current_holders(
    s: AsyncSession, pairs: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], ModelVersionOut]:
    """The version holding each (model name, target) now: a stage (its highest version, what
    ``models:/name/<stage>`` loads) or ``@alias``. Unknown models and empty pointers are left
    out. A fixed number of queries however many pairs (for list pages)."""
    ids = await store.model_ids_by_names(s, [name for name, _ in pairs])
    stage_models = sorted({ids[n] for n, t in pairs if n in ids and not t.startswith("@")})
    alias_pairs = sorted({(ids[n], t[1:]) for n, t in pairs if n in ids and t.startswith("@")})
    out: dict[tuple[str, str], ModelVersionOut] = {}
    if stage_models:
        for b in await store.load_versions(s, store.latest_versions_select(stage_models)):
            out[(b.row.model_name, b.row.current_stage)] = version_out(b)
    if alias_pairs:
        for b in await store.load_versions(s, store.alias_targets_select(alias_pairs)):
            for alias in b.aliases:
                out[(b.row.model_name, f"@{alias}")] = version_out(b)
    wanted = set(pairs)
    return {key: value for key, value in out.items() if key in wanted}


async def patterns_with_readable_models(
    s: AsyncSession, patterns: Sequence[str], scope: ResourceScope
) -> set[str]:
    """The fnmatch ``patterns`` (gate bindings such as ``fraud-*``) that match at least one
    registered model the caller may read (``scope``), decided in the database."""
    return await store.patterns_with_models(s, list(dict.fromkeys(patterns)), scope)
