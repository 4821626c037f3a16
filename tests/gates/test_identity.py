"""Identity service and rules: users, tokens, grants, throttling, and the grant rules that SQL
searches and single-object checks must agree on."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from gates.identity import service
from gates.identity.credentials import hash_token
from gates.identity.errors import (
    GrantAlreadyExists,
    LastAdministrator,
    NoAdministrator,
    UserAlreadyExists,
)
from gates.identity.policy import (
    GrantRule,
    allows,
    canonical_target,
    normalise_targets,
    target_allowed,
    visible_scope,
)
from tracking.core.auth import glob_matches
from tracking.core.errors import InvalidParameter
from tracking.models import Experiment
from tracking.search.sql import scope_predicate

PASSWORD = "a-long-enough-password"
THROTTLE = service.ThrottlePolicy(max_failures=3, window_seconds=60)


def _name(prefix: str = "u") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def make_user(
    session: AsyncSession, *, admin: bool = False, password: str | None = PASSWORD
) -> str:
    name = _name()
    await service.create_user(session, name, password, is_admin=admin)
    return name


# --- users ---------------------------------------------------------------------------------------


async def test_passwords_are_stored_as_argon2_hashes(session: AsyncSession) -> None:
    name = await make_user(session)
    outcome = await service.authenticate_basic(session, name, PASSWORD, "c", THROTTLE)
    assert outcome.principal is not None and outcome.principal.name == name
    from gates.identity.store import get_user

    row = await get_user(session, name)
    assert row.password_hash.startswith("$argon2id$") and PASSWORD not in row.password_hash
    wrong = await service.authenticate_basic(session, name, "not-the-password", "c", THROTTLE)
    assert wrong.principal is None


async def test_user_names_are_unique_and_validated(session: AsyncSession) -> None:
    name = await make_user(session)
    with pytest.raises(UserAlreadyExists):
        await service.create_user(session, name, PASSWORD)
    for bad in ("", " x", "a/b", "x" * 300, "-lead"):
        with pytest.raises(InvalidParameter):
            await service.create_user(session, bad, PASSWORD)
    with pytest.raises(InvalidParameter):
        await service.create_user(session, _name(), "short")


async def test_token_only_users_cannot_sign_in_with_a_password(session: AsyncSession) -> None:
    name = await make_user(session, password=None)
    outcome = await service.authenticate_basic(session, name, "", "c", THROTTLE)
    assert outcome.principal is None


async def test_the_last_active_admin_stays(session: AsyncSession) -> None:
    from gates.identity import store

    admins = await store.count_active_admins(session)
    name = await make_user(session, admin=True)
    if admins == 0:
        with pytest.raises(LastAdministrator):
            await service.update_user(session, name, disabled=True)
        with pytest.raises(LastAdministrator):
            await service.delete_user(session, name)
    second = await make_user(session, admin=True)
    await service.update_user(session, name, is_admin=False)
    assert (await service.get_user(session, second)).is_admin


async def test_ensure_admin_creates_once_and_never_from_nothing(session: AsyncSession) -> None:
    from gates.identity import store

    if await store.any_active_admin(session):
        assert await service.ensure_admin(session, "", "") is False
        return
    with pytest.raises(NoAdministrator):
        await service.ensure_admin(session, "", "")
    with pytest.raises(NoAdministrator):
        await service.ensure_admin(session, "root", "short")
    name = _name("root")
    assert await service.ensure_admin(session, name, PASSWORD) is True
    assert await service.ensure_admin(session, name, PASSWORD) is False


# --- tokens --------------------------------------------------------------------------------------


async def test_tokens_are_stored_hashed_and_verified(session: AsyncSession) -> None:
    name = await make_user(session)
    created = await service.create_token(session, name, "ci")
    from gates.identity.models import ApiToken

    stored = (await session.execute(select(ApiToken.secret_hash, ApiToken.prefix))).all()
    assert (hash_token(created.secret), created.token.prefix) in {tuple(r) for r in stored}
    assert all(created.secret not in r[0] for r in stored)
    principal = await service.verify_token(session, created.secret)
    assert principal is not None and principal.kind == "token" and principal.name == name
    assert await service.verify_token(session, created.secret + "x") is None
    await service.revoke_token(session, created.token.token_id)
    assert await service.verify_token(session, created.secret) is None


async def test_expired_tokens_and_disabled_users_do_not_verify(session: AsyncSession) -> None:
    name = await make_user(session)
    with pytest.raises(InvalidParameter):
        await service.create_token(session, name, "past", expires_at=1)
    created = await service.create_token(session, name, "ok")
    await service.update_user(session, name, disabled=True)
    assert await service.verify_token(session, created.secret) is None


async def test_a_token_verifies_with_its_grants_in_one_statement(session: AsyncSession) -> None:
    from tests.registry.test_query_counts import count_queries

    name = await make_user(session)
    created = await service.create_token(session, name, "ci")
    for pattern, role in (("fraud-*", "editor"), ("exp-7", "reader")):
        await service.create_grant(session, name, "experiment", pattern, role, actor="t")
    await service.create_grant(session, name, "registered_model", "m", "reader", actor="t")
    with count_queries(session) as statements:
        principal = await service.verify_token(session, created.secret)
    assert len(statements) == 1, statements  # authentication runs on every request
    assert principal is not None and not principal.is_admin
    assert principal.grants == await service.grant_rules(session, principal.user_id)
    assert {(g.resource_type, g.pattern, g.role) for g in principal.grants} == {
        ("experiment", "fraud-*", "editor"),
        ("experiment", "exp-7", "reader"),
        ("registered_model", "m", "reader"),
    }
    bare = await service.create_token(session, await make_user(session), "none")
    assert (await service.verify_token(session, bare.secret)).grants == ()  # type: ignore[union-attr]
    admin = await service.create_token(session, await make_user(session, admin=True), "adm")
    found = await service.verify_token(session, admin.secret)
    assert found is not None and found.is_admin and found.grants == ()
    # Nothing is cached: a revocation or a disabled user counts from the next request.
    await service.update_user(session, name, disabled=True)
    assert await service.verify_token(session, created.secret) is None


# --- grants --------------------------------------------------------------------------------------


async def test_grants_validate_roles_patterns_and_targets(session: AsyncSession) -> None:
    name = await make_user(session)
    grant = await service.create_grant(
        session,
        name,
        "registered_model",
        "fraud-*",
        "approver",
        ["staging", "@candidate"],
        actor="t",
    )
    assert grant.targets == ["Staging", "@candidate"]
    with pytest.raises(GrantAlreadyExists):
        await service.create_grant(
            session, name, "registered_model", "fraud-*", "reader", actor="t"
        )
    for kwargs in (
        {"resource_type": "experiment", "pattern": "x", "role": "owner"},
        {"resource_type": "dataset", "pattern": "x", "role": "reader"},
        {"resource_type": "experiment", "pattern": " x", "role": "reader"},
        {"resource_type": "experiment", "pattern": "9" * 30, "role": "reader"},
        {"resource_type": "experiment", "pattern": "x", "role": "approver", "targets": ["Staging"]},
        {
            "resource_type": "registered_model",
            "pattern": "x",
            "role": "approver",
            "targets": ["Prod"],
        },
        {
            "resource_type": "registered_model",
            "pattern": "x",
            "role": "approver",
            "targets": ["@a b"],
        },
    ):
        with pytest.raises(InvalidParameter):
            await service.create_grant(session, name, actor="t", **kwargs)  # type: ignore[arg-type]


def test_roles_order_actions() -> None:
    rules = [GrantRule("registered_model", "fraud-*", "editor")]
    assert allows(rules, "registered_model", "fraud-x", None, "read")
    assert allows(rules, "registered_model", "fraud-x", None, "edit")
    assert not allows(rules, "registered_model", "fraud-x", None, "promote", "Staging")
    assert not allows(rules, "registered_model", "fraud-x", None, "delete")
    assert not allows(rules, "registered_model", "other", None, "read")
    assert not allows(rules, "experiment", "fraud-x", None, "read")


def test_promotion_targets_allow_only_what_they_list() -> None:
    rules = [GrantRule("registered_model", "*", "approver", ("Staging", "@candidate", "@rc-*"))]
    for target, ok in [
        ("Staging", True),
        ("Production", False),
        ("@candidate", True),
        ("@champion", False),
        ("@rc-7", True),
        ("@candidate2", False),
        (None, False),
    ]:
        assert allows(rules, "registered_model", "m", None, "promote", target) is ok, target
    assert target_allowed(None, "Production")
    assert canonical_target("PRODUCTION") == "Production"
    assert canonical_target("@x*") is None
    assert normalise_targets(["none", "ARCHIVED"]) == ("None", "Archived")


def test_unknown_objects_match_only_the_star_pattern() -> None:
    assert not allows(
        [GrantRule("experiment", "team-*", "admin")], "experiment", None, None, "read"
    )
    assert allows([GrantRule("experiment", "*", "reader")], "experiment", None, None, "read")
    assert allows([GrantRule("experiment", "7", "reader")], "experiment", "seven", 7, "read")
    assert not allows([GrantRule("experiment", "7", "reader")], "experiment", "7", 70, "read")


# --- SQL and Python agree on grant globs -----------------------------------------------------

TRICKY = [
    "fraud-a",
    "fraud_a",
    "fraud%a",
    "Fraud-a",
    "fraud-[a]",
    "fraud\\a",
    "fraud-",
    "fraud*x",
    "f",
    "ünï-1",
]
GLOBS = [
    "fraud-*",
    "fraud_*",
    "fraud%*",
    "fraud?a",
    "*a",
    "fraud-[*",
    "fraud\\*",
    "*",
    "f",
    "ünï-?",
    "fraud[*]x",
]


async def test_visibility_scopes_filter_exactly_like_single_checks(session: AsyncSession) -> None:
    suffix = uuid.uuid4().hex[:6]
    ids = {}
    for name in TRICKY:
        exp = Experiment(
            name=f"{name}.{suffix}",
            artifact_location="x",
            lifecycle_stage="active",
            creation_time=1,
            last_update_time=1,
        )
        session.add(exp)
        await session.flush()
        ids[exp.name] = exp.experiment_id
    for glob in GLOBS:
        pattern = f"{glob}.{suffix}" if glob != "*" else glob
        scope = visible_scope([GrantRule("experiment", pattern, "reader")], "experiment")
        stmt = select(Experiment.name).where(
            Experiment.experiment_id.in_(list(ids.values())),
            scope_predicate(scope, Experiment.name, Experiment.experiment_id),
        )
        in_sql = set((await session.execute(stmt)).scalars())
        in_python = {n for n in ids if pattern == "*" or glob_matches(pattern, n)}
        assert in_sql == in_python, pattern


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pattern=st.text(alphabet="ab*?%_[]\\-", max_size=8),
    text=st.text(alphabet="ab%_[]\\-*?", max_size=8),
)
def test_glob_matching_treats_only_star_and_question_mark_as_special(
    pattern: str, text: str
) -> None:
    import fnmatch
    import re

    translated = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    assert glob_matches(pattern, text) == (re.fullmatch(translated, text, re.DOTALL) is not None)
    if not any(c in pattern for c in "[]"):
        assert glob_matches(pattern, text) == fnmatch.fnmatchcase(text, pattern)


# --- throttling ----------------------------------------------------------------------------------


async def test_failed_logins_are_counted_per_name_and_client(session: AsyncSession) -> None:
    name = await make_user(session)
    for expected in (None, None, 60):
        retry = await service.record_login_failure(session, name, "10.0.0.1", THROTTLE)
        assert retry is None if expected is None else 0 < retry <= expected
    with pytest.raises(service.LoginThrottled):
        await service.authenticate_basic(session, name, PASSWORD, "10.0.0.1", THROTTLE)
    ok = await service.authenticate_basic(session, name, PASSWORD, "10.0.0.2", THROTTLE)
    assert ok.principal is not None and ok.had_failures is False
    await service.clear_login_failures(session, name, "10.0.0.1")
    again = await service.authenticate_basic(session, name, PASSWORD, "10.0.0.1", THROTTLE)
    assert again.principal is not None
