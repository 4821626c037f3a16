"""A bearer token is read on the driver, with no ORM session, and nothing about it is kept in
memory: revocations, disabled users and grant changes apply to the very next request."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec

from gates.identity import service as identity
from tests.hot_app import HotApp, hot_app, migrated_database

API = "/api/2.0/mlflow"


async def _token(app: HotApp, username: str, *, admin: bool = False) -> Any:
    async with app.db.write() as s:
        await identity.create_user(s, username, None, is_admin=admin)
        return await identity.create_token(s, username, "ci")


def _auth(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


async def _both_paths(app: HotApp, secret: str) -> tuple[Any, Any]:
    async with app.db.driver_read() as r:
        fast = await identity.verify_token_at_once(r, secret)
    async with app.db.read() as s:
        full = await identity.verify_token(s, secret)
    return fast, full


async def test_a_bearer_request_reads_its_token_without_a_session(
    make_database: Any, tmp_path: Path
) -> None:
    url = await migrated_database(make_database, "tokens")
    async with hot_app(url, tmp_path, auth=True) as app:
        admin = await _token(app, "hot-token-admin", admin=True)
        user = await _token(app, "hot-token-user")
        async with app.db.write() as s:
            await identity.create_grant(s, "hot-token-user", "experiment", "*", "reader", actor="t")
        for created in (admin, user):
            with app.count() as counted:
                response = await app.client.get("/health", headers=_auth(created.secret))
            assert response.status_code == 200, response.text
            assert counted.sessions == 0
            assert len(counted.statements) == 1, counted.statements  # the token, its grants
            # A search route gets a visibility scope from the grants: no session before the
            # handler's own.
            with app.count() as counted:
                response = await app.client.post(
                    f"{API}/experiments/search",
                    json={"max_results": 1},
                    headers=_auth(created.secret),
                )
            assert response.status_code == 200, response.text
            assert counted.sessions == 1


async def test_the_driver_and_session_token_reads_agree_and_nothing_is_cached(
    make_database: Any, tmp_path: Path
) -> None:
    url = await migrated_database(make_database, "tokens-agree")
    async with hot_app(url, tmp_path, auth=True) as app:
        admin = await _token(app, "agree-admin", admin=True)
        user = await _token(app, "agree-user")
        async with app.db.write() as s:
            for pattern, role in (("fraud-*", "editor"), ("exp-7", "reader")):
                await identity.create_grant(s, "agree-user", "experiment", pattern, role, actor="t")
            await identity.create_grant(
                s, "agree-user", "registered_model", "m", "reader", ["Staging"], actor="t"
            )
        for secret in (admin.secret, user.secret, user.secret + "x", "mlg_nonsense", ""):
            fast, full = await _both_paths(app, secret)
            assert msgspec.to_builtins(fast) == msgspec.to_builtins(full), secret
        fast, _ = await _both_paths(app, user.secret)
        assert fast is not None and len(fast.grants) == 3 and not fast.is_admin
        fast, _ = await _both_paths(app, admin.secret)
        assert fast is not None and fast.is_admin and fast.grants == ()

        headers = _auth(user.secret)
        assert (await app.client.get("/health", headers=headers)).status_code == 200
        async with app.db.write() as s:
            await identity.revoke_token(s, user.token.token_id)
        assert (await app.client.get("/health", headers=headers)).status_code == 401
        assert await _both_paths(app, user.secret) == (None, None)

        headers = _auth(admin.secret)
        assert (await app.client.get("/health", headers=headers)).status_code == 200
        async with app.db.write() as s:
            await identity.update_user(s, "agree-admin", disabled=True)
        assert (await app.client.get("/health", headers=headers)).status_code == 401
