"""The one fault classifier, fed real errors from the real database (no stand-ins)."""

from __future__ import annotations

import pytest
from sqlalchemy import exc, text

from tracking.core.db import Database
from tracking.core.errors import fault_error


async def test_an_integer_too_wide_for_bigint_is_the_clients_400(database: Database) -> None:
    # The backstop behind the wire's int64 check, for a value that reaches SQL another way.
    # The drivers refuse it before the database sees it: sqlite3 with OverflowError, asyncpg
    # with an "out of int64 range" error SQLAlchemy wraps as a DBAPIError.
    refusal = OverflowError if database.is_sqlite else exc.DBAPIError
    with pytest.raises(refusal) as caught:
        async with database.read() as s:
            await s.execute(text("SELECT CAST(:x AS BIGINT)"), {"x": 10**20})
    answer = fault_error(caught.value)
    assert answer is not None
    assert (answer.status_code, answer.error_code) == (400, "INVALID_PARAMETER_VALUE")


async def test_a_genuine_sql_bug_stays_a_500(database: Database) -> None:
    # SQLite says "no such table" (OperationalError), PostgreSQL "relation does not exist".
    error = exc.OperationalError if database.is_sqlite else exc.ProgrammingError
    with pytest.raises(error) as caught:
        async with database.read() as s:
            await s.execute(text("SELECT no_such_column FROM no_such_table"))
    assert fault_error(caught.value) is None
