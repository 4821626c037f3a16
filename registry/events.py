"""Hooks the registry calls inside its own transactions, so upper layers can react or veto.

The registry never imports ``gates``. Instead, ``gates`` registers callables here at start-up:

- ``on_registry_event`` listeners receive every :data:`RegistryEvent` together with the session
  of the transaction that made the change, so an outbox row written there commits (or rolls
  back) with the change itself.
- ``before_pointer_move`` guards see a :class:`PointerMove` after the model row is locked and
  before anything is written; raising (e.g. ``PermissionDenied``) vetoes the whole request.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import ClassVar

from sqlalchemy.ext.asyncio import AsyncSession


@dataclass(frozen=True, slots=True)
class ModelVersionCreated:
    kind: ClassVar[str] = "model_version.created"
    name: str
    version: int
    source: str
    storage_location: str
    run_id: str | None
    model_id: str | None
    actor: str
    timestamp: int
    tags: tuple[tuple[str, str], ...] = ()
    description: str | None = None
    # The manifest digest of the version's files (None: no files at registration).
    manifest_digest: str | None = None
    # A prompt version (registry.prompts): MLflow announces it as prompt_version.created.
    is_prompt: bool = False


@dataclass(frozen=True, slots=True)
class ModelVersionDeleted:
    kind: ClassVar[str] = "model_version.deleted"
    name: str
    version: int
    stage: str
    aliases: tuple[str, ...]
    actor: str
    timestamp: int


@dataclass(frozen=True, slots=True)
class StageTransitioned:
    kind: ClassVar[str] = "stage.transitioned"
    name: str
    version: int
    from_stage: str
    to_stage: str
    archived_versions: tuple[int, ...]
    actor: str
    comment: str | None
    timestamp: int


@dataclass(frozen=True, slots=True)
class AliasMoved:
    """An alias was set, moved or deleted (``to_version`` is None when deleted)."""

    kind: ClassVar[str] = "alias.moved"
    name: str
    alias: str
    from_version: int | None
    to_version: int | None
    actor: str
    comment: str | None
    timestamp: int
    is_prompt: bool = False


@dataclass(frozen=True, slots=True)
class RegisteredModelCreated:
    kind: ClassVar[str] = "registered_model.created"
    name: str
    tags: tuple[tuple[str, str], ...]
    description: str | None
    actor: str
    timestamp: int
    is_prompt: bool = False


@dataclass(frozen=True, slots=True)
class RegisteredModelDeleted:
    """A model was deleted; ``pointers`` are the (kind, pointer, version) it still held."""

    kind: ClassVar[str] = "registered_model.deleted"
    name: str
    pointers: tuple[tuple[str, str, int], ...]
    actor: str
    timestamp: int


@dataclass(frozen=True, slots=True)
class ModelVersionTagSet:
    kind: ClassVar[str] = "model_version_tag.set"
    name: str
    version: int
    key: str
    value: str
    timestamp: int
    is_prompt: bool = False


@dataclass(frozen=True, slots=True)
class ModelVersionTagDeleted:
    kind: ClassVar[str] = "model_version_tag.deleted"
    name: str
    version: int
    key: str
    timestamp: int
    is_prompt: bool = False


@dataclass(frozen=True, slots=True)
class RegisteredModelTagSet:
    """A tag of a registered model was set (``value``) or deleted (``value`` is None)."""

    kind: ClassVar[str] = "registered_model_tag.changed"
    name: str
    key: str
    value: str | None
    timestamp: int
    is_prompt: bool = False


RegistryEvent = (
    ModelVersionCreated
    | ModelVersionDeleted
    | StageTransitioned
    | AliasMoved
    | RegisteredModelCreated
    | RegisteredModelDeleted
    | ModelVersionTagSet
    | ModelVersionTagDeleted
    | RegisteredModelTagSet
)


@dataclass(frozen=True, slots=True)
class PointerMove:
    """A proposed change of a stage or alias pointer, shown to guards before it is written.

    ``action`` is 'transition', 'set_alias', 'delete_alias' or 'delete_version'. For stage
    moves ``pointer`` is the target stage and ``from_stage`` the version's current one.
    ``version`` is the version being moved (None when an alias is deleted);
    ``current_version`` is what the pointer resolves to now.
    """

    action: str
    name: str
    pointer_kind: str
    pointer: str
    version: int | None
    current_version: int | None
    actor: str
    comment: str | None = None
    from_stage: str | None = None
    archive_existing_versions: bool = False


EventListener = Callable[[AsyncSession, RegistryEvent], Awaitable[None]]
# A guard vetoes a move by raising; it may return a note (e.g. why an override let the move
# through) that the registry records with the move in the pointer history.
PointerGuard = Callable[[AsyncSession, PointerMove], Awaitable[str | None]]

_listeners: list[EventListener] = []
_guards: list[PointerGuard] = []


def on_registry_event(listener: EventListener) -> EventListener:
    """Register ``listener`` for every registry event (usable as a decorator)."""
    _listeners.append(listener)
    return listener


def before_pointer_move(guard: PointerGuard) -> PointerGuard:
    """Register ``guard``, which may raise to veto a stage or alias move (usable as a decorator)."""
    _guards.append(guard)
    return guard


def remove_hook(hook: EventListener | PointerGuard) -> None:
    if hook in _listeners:
        _listeners.remove(hook)
    if hook in _guards:
        _guards.remove(hook)


@contextmanager
def registered(
    *, listener: EventListener | None = None, guard: PointerGuard | None = None
) -> Iterator[None]:
    """Install hooks for the duration of a block (tests, one-off scripts)."""
    if listener is not None:
        on_registry_event(listener)
    if guard is not None:
        before_pointer_move(guard)
    try:
        yield
    finally:
        for hook in (listener, guard):
            if hook is not None:
                remove_hook(hook)


async def emit(session: AsyncSession, event: RegistryEvent) -> None:
    for listener in list(_listeners):
        await listener(session, event)


async def check_pointer_move(session: AsyncSession, move: PointerMove) -> str | None:
    """Run every guard; the notes they return, joined (None when there are none)."""
    notes = [note for guard in list(_guards) if (note := await guard(session, move))]
    return "; ".join(notes) if notes else None


def with_note(comment: str | None, note: str | None) -> str | None:
    """A move's comment with the guards' note appended."""
    if not note:
        return comment
    return f"{comment} [{note}]" if comment else f"[{note}]"
