"""Registry hooks belong to the app that built them: two apps in one process share none."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from gates.audit import service as audit
from gates.events import service as outbox
from gates.events.models import OutboxEvent
from gates.policies import guard
from gates.policies.errors import GatedTarget, LeavingGatedTarget
from gates.policies.guard import GateAuthorisation
from gates.server import migrate
from gates.server.app import create_app
from gates.server.hooks import check_principal_pointer_move
from registry import events
from registry import service as registry
from registry.events import RegistryHooks
from tests.gates.factories import make_gate
from tests.registry.factories import ACTOR, make_model, make_version
from tracking.core.db import Database
from tracking.core.settings import Settings

ADMIN = ("root", "a long enough admin password")
CREATE_MODEL = "/api/2.0/mlflow/registered-models/create"


def _app(make_database: Any, tmp_path: Path, label: str, *, auth: bool) -> Litestar:
    url = make_database(label)
    migrate.upgrade(url)
    return create_app(
        Settings(
            database_url=url,
            artifacts_destination=str(tmp_path / label),
            auth=auth,
            admin_username=ADMIN[0] if auth else "",
            admin_password=ADMIN[1] if auth else "",
            webhook_worker=False,
            approval_sweep_interval=0,
            staging_sweep_interval=0,
            audit_checkpoint_interval=0,
        )
    )


async def _hooks(app: Litestar) -> RegistryHooks:
    """The hooks a session of ``app`` carries (read from the session: no statement runs)."""
    db: Database = app.state["db"]
    async with db.read() as s:
        return events.hooks_of(s)


async def _outbox_count(app: Litestar, event_type: str, name: str) -> int:
    """Counted through a Database of the test's own (the app's runs in its client's loop)."""
    db = Database(app.state["settings"].database_url, pool_size=1)
    stmt = select(func.count()).where(OutboxEvent.type == event_type)
    try:
        async with db.read() as s:
            return int((await s.execute(stmt.where(OutboxEvent.model_name == name))).scalar_one())
    finally:
        await db.dispose()


def _basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@pytest.fixture
def two_apps(make_database: Any, tmp_path: Path) -> tuple[Litestar, Litestar]:
    """One app with authentication and one without, each on its own database."""
    return (
        _app(make_database, tmp_path, "hooks_auth", auth=True),
        _app(make_database, tmp_path, "hooks_open", auth=False),
    )


async def test_two_apps_in_one_process_keep_their_own_hooks(
    two_apps: tuple[Litestar, Litestar], unique: str
) -> None:
    with_auth, without = two_apps
    async with AsyncTestClient(without) as open_client:
        async with AsyncTestClient(with_auth) as auth_client:
            secured, plain = await _hooks(with_auth), await _hooks(without)
            # Each app built its own object, in the documented order; only the app with
            # authentication checks the principal's promote rights on a move.
            assert secured is not plain
            assert secured.guards == (guard.guard_pointer_move, check_principal_pointer_move)
            assert plain.guards == (guard.guard_pointer_move,)
            expected = (outbox.record_registry_event, audit.record_registry_event)
            assert secured.listeners == plain.listeners == expected
            created = await auth_client.post(
                CREATE_MODEL, json={"name": f"a-{unique}"}, headers=_basic(*ADMIN)
            )
            assert created.status_code == 200, created.text
            assert await _outbox_count(with_auth, "registered_model.created", f"a-{unique}") == 1
        # The app with authentication has stopped: the other one keeps all of its hooks, and
        # its changes still reach its outbox in their own transaction.
        assert await _hooks(without) is plain
        created = await open_client.post(CREATE_MODEL, json={"name": f"b-{unique}"})
        assert created.status_code == 200, created.text
        assert await _outbox_count(without, "registered_model.created", f"b-{unique}") == 1


async def test_a_session_opened_outside_an_app_carries_no_hooks(
    database: Database, session: AsyncSession
) -> None:
    """The CLI and scripts open their own Database: nothing reacts, nothing vetoes."""
    async with database.read() as s:
        assert events.hooks_of(s) is events.NO_HOOKS
    assert events.hooks_of(session) is events.NO_HOOKS
    name = await make_model(session)
    found = select(func.count()).where(OutboxEvent.model_name == name)
    assert (await session.execute(found)).scalar_one() == 0


async def test_a_session_with_something_else_under_the_hooks_key_is_refused(
    session: AsyncSession,
) -> None:
    for key in events.session_info(events.NO_HOOKS):
        session.info[key] = [guard.guard_pointer_move]
    with pytest.raises(TypeError, match="not hooks"):
        events.hooks_of(session)


@pytest.mark.usefixtures("app_hooks")
async def test_a_gate_authorisation_lets_through_only_the_move_it_was_issued_for(
    session: AsyncSession,
) -> None:
    """The gate's permission travels with one registry call; it opens no other move."""
    name = await make_model(session)
    await make_gate(session, name, "Production")
    await make_gate(session, name, "@champion")
    one, two = await make_version(session, name), await make_version(session, name)
    wrong = [
        GateAuthorisation(name, "Production", int(two), "d1"),  # another version
        GateAuthorisation(name, "Staging", int(one), "d1"),  # another target
        GateAuthorisation(f"{name}-other", "Production", int(one), "d1"),  # another model
        GateAuthorisation(name, "@champion", int(one), "d1"),  # the alias, not the stage
    ]
    for permit in wrong:
        with pytest.raises(GatedTarget):
            await registry.transition_stage(
                session, name, one, "Production", actor=ACTOR, permit=permit
            )
    with pytest.raises(GatedTarget):
        await registry.set_alias(
            session,
            name,
            "champion",
            one,
            actor=ACTOR,
            permit=GateAuthorisation(name, "Production", int(one), "d1"),
        )
    right = GateAuthorisation(name, "Production", int(one), "d1")
    await registry.transition_stage(session, name, one, "Production", actor=ACTOR, permit=right)
    # Leaving the gated stage is not what the permit was for: a plain move off it is refused.
    with pytest.raises(LeavingGatedTarget):
        await registry.transition_stage(session, name, one, "Archived", actor=ACTOR, permit=right)
    assert (await registry.get_model_version(session, name, one)).current_stage == "Production"
