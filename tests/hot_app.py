"""An in-process app on its own fresh database, for tests that count a request's statements
and sessions (the hot paths of tracking.core.driver)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import event

from tracking.core.db import Database

# The first administrator of an app made with ``auth=True``.
HOT_ADMIN = ("hot-admin", "a long enough admin password")


@dataclass
class Counted:
    """Statements sent and ORM sessions opened while a block ran."""

    statements: list[str] = field(default_factory=list)
    sessions: int = 0
    # Every statement sent meanwhile, from any task (a group commit's flush runs in its own).
    all_statements: list[str] = field(default_factory=list)


@dataclass
class HotApp:
    client: httpx.AsyncClient
    db: Database

    @contextlib.contextmanager
    def count(self) -> Iterator[Counted]:
        """Count what this task does (the request runs in it: ASGITransport calls the app
        directly), not what the app's background loops do meanwhile."""
        counted = Counted()
        task = asyncio.current_task()
        engines = {id(e): e.sync_engine for e in (self.db.write_engine, self.db.read_engine)}

        def before(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
            counted.all_statements.append(statement)
            if asyncio.current_task() is task:
                counted.statements.append(statement)

        read, write = self.db.read, self.db.write

        def counting(opener: Any) -> Any:
            def open_session() -> Any:
                if asyncio.current_task() is task:
                    counted.sessions += 1
                return opener()

            return open_session

        for engine in engines.values():
            event.listen(engine, "before_cursor_execute", before)
        self.db.read, self.db.write = counting(read), counting(write)  # type: ignore[method-assign]
        try:
            yield counted
        finally:
            self.db.read, self.db.write = read, write  # type: ignore[method-assign]
            for engine in engines.values():
                event.remove(engine, "before_cursor_execute", before)


async def migrated_database(make_database: Any, label: str) -> str:
    """A fresh database (``make_database``), migrated; returns its URL."""
    from gates.server import migrate

    url: str = make_database(label)
    await asyncio.to_thread(migrate.upgrade, url)
    return url


@contextlib.asynccontextmanager
async def hot_app(url: str, tmp_path: Path, *, auth: bool = False) -> AsyncIterator[HotApp]:
    """An app on the database at ``url``, the client speaking to it in-process; auth off, or
    on with :data:`HOT_ADMIN` as the first administrator.

    Enter it inside the test (its lifespan's task group must end in the task that began it).
    """
    from gates.server.app import create_app
    from tracking.core.settings import Settings

    app = create_app(
        Settings(
            database_url=url,
            artifacts_destination=str(tmp_path / "artifacts"),
            webhook_worker=False,
            approval_sweep_interval=0,
            staging_sweep_interval=0,
            audit_checkpoint_interval=0,
            auth=auth,
            admin_username=HOT_ADMIN[0] if auth else "",
            admin_password=HOT_ADMIN[1] if auth else "",
        )
    )
    async with app.lifespan():
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            yield HotApp(client, app.state["db"])
