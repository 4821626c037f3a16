"""Hooks the registry calls inside its own transactions, so upper layers can react or veto.

The registry never imports ``gates``. It defines the hook protocol here, and the composition
root builds one :class:`RegistryHooks` per app from what ``gates`` implements; every session the
app opens carries it (:func:`hooks_of`):

- listeners receive every :data:`RegistryEvent` together with the session of the transaction
  that made the change, so an outbox row written there commits (or rolls back) with the change
  itself.
- guards see a :class:`PointerMove` after the model row is locked and before anything is
  written; raising (e.g. ``PermissionDenied``) vetoes the whole request. A move an upper layer
  makes itself carries that layer's :class:`MovePermit`, which only its own guard reads.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import ClassVar, Protocol

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
    # What the caller that makes this move was permitted to do (see MovePermit), else None.
    permit: MovePermit | None = None


class MovePermit(Protocol):
    """An upper layer's permission for one exact pointer move, made by the code that issues it.

    The registry only carries it, from the call that makes the move (``permit=``) to the guards
    on :attr:`PointerMove.permit`; it grants nothing by itself. The guard that knows the
    permit's concrete type decides whether it covers the move it is shown.
    """

    def covers(self, move: PointerMove) -> bool: ...


EventListener = Callable[[AsyncSession, RegistryEvent], Awaitable[None]]
# A guard vetoes a move by raising; it may return a note (e.g. why an override let the move
# through) that the registry records with the move in the pointer history.
PointerGuard = Callable[[AsyncSession, PointerMove], Awaitable[str | None]]


@dataclass(frozen=True, slots=True)
class RegistryHooks:
    """The listeners and guards one app gives the registry, in the order they run.

    The composition root builds one per app and hands it to every session the app opens
    (:func:`session_info`); the registry finds it with :func:`hooks_of`. Listeners run in
    order, each inside the change's transaction; guards run in order and the first to raise
    vetoes the move. Nothing here is shared between apps in one process.
    """

    listeners: tuple[EventListener, ...] = ()
    guards: tuple[PointerGuard, ...] = ()

    async def emit(self, session: AsyncSession, event: RegistryEvent) -> None:
        for listener in self.listeners:
            await listener(session, event)

    async def check_pointer_move(self, session: AsyncSession, move: PointerMove) -> str | None:
        """Run every guard; the notes they return, joined (None when there are none)."""
        notes = [note for guard in self.guards if (note := await guard(session, move))]
        return "; ".join(notes) if notes else None


# A session opened outside an app (the CLI's, a service test's) carries no hooks unless it is
# given some: nothing reacts to its changes and nothing vetoes its moves.
NO_HOOKS = RegistryHooks()
_SESSION_KEY = "registry.hooks"


def session_info(hooks: RegistryHooks) -> dict[str, object]:
    """The ``Session.info`` entries that give every session of a sessionmaker ``hooks``."""
    return {_SESSION_KEY: hooks}


def attach_hooks(session: AsyncSession, hooks: RegistryHooks) -> None:
    """Give one session ``hooks`` (a session made without a sessionmaker, as tests make)."""
    session.info[_SESSION_KEY] = hooks


def hooks_of(session: AsyncSession) -> RegistryHooks:
    """The hooks of the app that opened ``session`` (:data:`NO_HOOKS` when none)."""
    hooks = session.info.get(_SESSION_KEY, NO_HOOKS)
    if not isinstance(hooks, RegistryHooks):
        raise TypeError(f"session.info[{_SESSION_KEY!r}] is {type(hooks).__name__}, not hooks")
    return hooks


async def emit(session: AsyncSession, event: RegistryEvent) -> None:
    """Hand ``event`` to the listeners of the session's app."""
    await hooks_of(session).emit(session, event)


async def check_pointer_move(session: AsyncSession, move: PointerMove) -> str | None:
    """Show ``move`` to the guards of the session's app; their notes, joined (or None)."""
    return await hooks_of(session).check_pointer_move(session, move)


def with_note(comment: str | None, note: str | None) -> str | None:
    """A move's comment with the guards' note appended."""
    if not note:
        return comment
    return f"{comment} [{note}]" if comment else f"[{note}]"
