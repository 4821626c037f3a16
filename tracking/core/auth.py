"""Declaring: what a route needs, and who the request's principal is, as every layer sees it.

One of four homes of authentication (README, "Where authentication lives"). This kernel module
declares; ``gates/identity/`` decides (users, tokens, grants, passwords, session records);
``gates/server/security.py`` enforces (the middleware and the global guard);
``gates/server/web/session.py`` carries browser sessions (cookies, CSRF).

Who is asking is decided once per request by the shell's authentication middleware, which puts
a :class:`Principal` into the ASGI scope (and binds it to the running task for in-transaction
hooks). Handlers only read it: :func:`current_principal` and :func:`actor_name`.

What a route needs is declared next to the route, in its Litestar ``opt``::

    @post("/runs/log-metric", opt={"permission": Permission("run", "edit", ("run_id", "run_uuid"))})

The shell's global guard refuses any route without a declaration (fail closed), so a route
nobody mapped to a rule can never be reached: the hole behind MLflow's own auth CVEs. The
visibility scopes and glob rules here are what search queries filter by, in every domain.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Literal

# --- principals ------------------------------------------------------------------------------

PrincipalKind = Literal["user", "token"]
# Recorded as the actor of writes when authentication is off (MLflow's behaviour: no identity).
ANONYMOUS = "anonymous"

PRINCIPAL_SCOPE_KEY = "mlgate.principal"
# An actor authenticated inside a handler (a gate secret's signature), for the access line.
ACCESS_ACTOR_SCOPE_KEY = "mlgate.access_actor"
VISIBILITY_SCOPE_KEY = "mlgate.visibility"


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: a user who sent a password, or one of the user's API tokens.

    ``grants`` holds the gates layer's grant rules, loaded with the principal; lower layers
    treat them as opaque.
    """

    user_id: int
    name: str
    is_admin: bool
    kind: PrincipalKind
    token_id: int | None = None
    token_name: str | None = None
    grants: tuple[Any, ...] = field(default=(), compare=False)


_bound: ContextVar[Principal | None] = ContextVar("mlgate_principal", default=None)


def current_principal(connection: Any) -> Principal | None:
    """The request's principal; None when authentication is off or the route is public."""
    found = connection.scope.get(PRINCIPAL_SCOPE_KEY)
    return found if isinstance(found, Principal) else None


def actor_name(connection: Any) -> str:
    """Who a write is recorded as: the authenticated user's name, else ``anonymous``."""
    principal = current_principal(connection)
    return principal.name if principal is not None else ANONYMOUS


def bound_principal() -> Principal | None:
    """The principal of the request running in this task (for hooks that see no request)."""
    return _bound.get()


@contextmanager
def bind_principal(principal: Principal | None) -> Iterator[None]:
    token = _bound.set(principal)
    try:
        yield
    finally:
        _bound.reset(token)


# --- permission declarations -------------------------------------------------------------------

Resource = Literal[
    "experiment",
    "run",
    "logged_model",
    "registered_model",
    "model_version",
    "artifact",
    "admin",
    "authenticated",
    "public",
]
Action = Literal["read", "create", "edit", "delete", "manage", "promote"]


@dataclass(frozen=True, slots=True)
class Permission:
    """What a route needs, and where in the request the resource it acts on is named.

    - ``resource``: the kind of object the route touches. ``public`` needs nothing,
      ``authenticated`` any principal, ``admin`` an administrator.
    - ``action``: read < create/edit < promote; delete and manage need an admin grant.
    - ``locator``: field names tried in order: a path parameter, else the query string (GET)
      or the JSON body (other methods). ``metrics[].model_id`` walks a list. ``by_name``
      says an experiment is named rather than numbered.
    - ``default``: the value a handler assumes when the field is absent (``runs/create``
      defaults to experiment ``0``).
    - ``target``: for ``promote``, the body field naming the stage or alias being moved.
    - ``by_uri``: the located value is a ``models:/`` URI; the check applies to its model.
    - ``sources``: also require read access to the runs and logged models a model version's
      ``source`` (with ``run_id``/``model_id``) names.
    - ``filtered``: a search or list route: allowed for any principal, and its results are
      filtered inside the query by what the principal may read.
    - ``optional``: for checks in ``also``: skipped when the locator finds nothing.
    - ``also``: further checks the same request must pass (e.g. a rename needs create
      rights on the new name; registering a version needs read rights on its source).
    """

    resource: Resource
    action: Action = "read"
    locator: str | tuple[str, ...] | None = None
    by_name: bool = False
    default: str | None = None
    target: Literal["stage", "alias"] | None = None
    by_uri: bool = False
    sources: bool = False
    filtered: bool = False
    optional: bool = False
    also: tuple[Permission, ...] = ()

    @property
    def locators(self) -> tuple[str, ...]:
        if self.locator is None:
            return ()
        return (self.locator,) if isinstance(self.locator, str) else self.locator


PUBLIC = Permission("public")
AUTHENTICATED = Permission("authenticated")
ADMIN = Permission("admin")


def permission_opt(permission: Permission, **extra: Any) -> dict[str, Any]:
    """A route's ``opt`` mapping carrying its permission declaration."""
    return {"permission": permission, **extra}


# --- visibility scopes -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ResourceScope:
    """The experiments or registered models a principal may see, for filtering searches.

    ``everything`` short-cuts the rest. Otherwise an object is visible when its name is in
    ``names``, its numeric id in ``ids`` (experiments) or its name matches a glob of
    ``patterns`` (``*`` any run of characters, ``?`` one character, nothing else special).
    """

    everything: bool = False
    names: frozenset[str] = frozenset()
    ids: frozenset[int] = frozenset()
    patterns: tuple[str, ...] = ()

    @property
    def is_empty(self) -> bool:
        return not (self.everything or self.names or self.ids or self.patterns)


EVERYTHING = ResourceScope(everything=True)


def visibility(connection: Any, resource: str) -> ResourceScope | None:
    """The scope a search route must filter by; None means no filter (auth off or admin)."""
    scopes = connection.scope.get(VISIBILITY_SCOPE_KEY)
    if not scopes:
        return None
    found = scopes.get(resource)
    return found if isinstance(found, ResourceScope) else None


def set_visibility(scope: dict[str, Any], resource: str, resource_scope: ResourceScope) -> None:
    scope.setdefault(VISIBILITY_SCOPE_KEY, {})[resource] = resource_scope


GLOB_CHARS = frozenset("*?")


def is_glob(pattern: str) -> bool:
    return any(ch in GLOB_CHARS for ch in pattern)


@cache
def _glob_regex(pattern: str) -> re.Pattern[str]:
    parts = [".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern]
    return re.compile("".join(parts), re.DOTALL)


def glob_matches(pattern: str, text: str) -> bool:
    """``*``/``?`` glob matching, case-sensitive, with no other special characters.

    The SQL side (``tracking.search.sql.glob_match``) implements the same rules, so a search
    never shows what a single-object check would refuse.
    """
    return _glob_regex(pattern).fullmatch(text) is not None
