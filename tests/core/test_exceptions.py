"""Database errors map to the documented answers whichever driver raised them, raw or wrapped
by SQLAlchemy, and what a log line says about one never holds the statement's values.

The errors are real: PostgreSQL raises each SQLSTATE (a DO block), SQLite its own codes.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.db import create_engine
from app.core.errors import ConflictError, ServiceUnavailableError, database_answer
from app.core.settings import Settings
from app.platform.logging import exception_fields

EMAIL = "leak.canary.4711@example.com"

# SQLSTATE -> the answer: 503 (with Retry-After) when the database cannot serve now or another
# transaction was in the way, 409 when a concurrent write took the key, None (a bug: 500).
CASES = [
    ("57014", "QueryCanceledError", 503),  # statement timeout
    ("55P03", "LockNotAvailableError", 503),  # lock timeout
    ("40P01", "DeadlockDetectedError", 503),
    ("40001", "SerializationError", 503),
    ("53300", "TooManyConnectionsError", 503),
    ("57P01", "AdminShutdownError", 503),
    ("57P03", "CannotConnectNowError", 503),
    ("08006", "ConnectionFailureError", 503),
    ("23505", "UniqueViolationError", 409),
    ("23503", "ForeignKeyViolationError", 409),
    ("23502", "NotNullViolationError", None),
    ("22P02", "InvalidTextRepresentationError", None),
    ("P0001", "RaiseError", None),
]
STATUS = {ServiceUnavailableError: 503, ConflictError: 409}


def raising(sqlstate: str) -> str:
    # The message holds a value, as PostgreSQL's own messages may.
    return f"DO $$ BEGIN RAISE EXCEPTION 'value %', '{EMAIL}' USING ERRCODE = '{sqlstate}'; END $$"


def status_of(exc: BaseException) -> int | None:
    answer = database_answer(exc)
    if answer is None:
        return None
    assert isinstance(answer, ServiceUnavailableError | ConflictError)
    if answer.status_code == 503:
        assert answer.headers is not None
        assert answer.headers["Retry-After"].isdigit()
    return answer.status_code


def assert_fields_without_values(exc: BaseException, error: str, sqlstate: str) -> None:
    fields = exception_fields(exc)
    assert fields["error"] == error
    assert fields["sqlstate"] == sqlstate
    assert EMAIL not in repr(fields)


@pytest.fixture
async def pg_connection(pg_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(pg_url, timeout=10)
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture
async def pg_engine(pg_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(Settings(_env_file=None, database_url=pg_url))  # type: ignore[call-arg]
    try:
        yield engine
    finally:
        await engine.dispose()


class TestPostgresErrors:
    @pytest.mark.parametrize(("sqlstate", "error", "status"), CASES)
    async def test_raw_asyncpg_errors(
        self, pg_connection: asyncpg.Connection, sqlstate: str, error: str, status: int | None
    ) -> None:
        with pytest.raises(asyncpg.PostgresError) as raised:
            await pg_connection.execute(raising(sqlstate))
        assert type(raised.value).__name__ == error
        assert status_of(raised.value) == status
        assert_fields_without_values(raised.value, error, sqlstate)

    @pytest.mark.parametrize(("sqlstate", "error", "status"), CASES)
    async def test_errors_wrapped_by_sqlalchemy(
        self, pg_engine: AsyncEngine, sqlstate: str, error: str, status: int | None
    ) -> None:
        with pytest.raises(sa_exc.DBAPIError) as raised:
            async with pg_engine.connect() as connection:
                await connection.execute(text(raising(sqlstate)))
        assert status_of(raised.value) == status
        assert_fields_without_values(raised.value, error, sqlstate)

    async def test_the_engine_hides_parameters_from_the_error_text(
        self, pg_engine: AsyncEngine
    ) -> None:
        with pytest.raises(sa_exc.DBAPIError) as raised:
            async with pg_engine.connect() as connection:
                await connection.execute(
                    text("SELECT 1 / (length(:email) - :n)"), {"email": EMAIL, "n": len(EMAIL)}
                )
        assert EMAIL not in str(raised.value)
        assert status_of(raised.value) is None  # division by zero: a bug

    async def test_a_closed_connection_is_503(self, pg_connection: asyncpg.Connection) -> None:
        await pg_connection.close()
        with pytest.raises(asyncpg.InterfaceError) as raised:
            await pg_connection.execute("SELECT 1")
        assert status_of(raised.value) == 503

    async def test_a_bad_argument_is_a_bug_not_an_outage(
        self, pg_connection: asyncpg.Connection
    ) -> None:
        with pytest.raises(asyncpg.DataError) as raised:
            await pg_connection.execute("SELECT $1::int", EMAIL)
        assert status_of(raised.value) is None
        assert EMAIL not in repr(exception_fields(raised.value))

    def test_an_unreachable_server_is_503(self) -> None:
        assert status_of(ConnectionRefusedError(111, "refused")) == 503
        assert status_of(TimeoutError()) == 503
        assert status_of(sa_exc.TimeoutError("QueuePool limit reached")) == 503


@pytest.fixture
def sqlite_path(tmp_path: Path) -> Path:
    path = tmp_path / "errors.db"
    connection = sqlite3.connect(path)
    try:
        connection.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, email TEXT NOT NULL)")
    finally:
        connection.close()
    return path


def sqlite_error(path: Path, *statements: str) -> sqlite3.Error:
    """What the last statement raises on a second connection, the first one holding a write
    lock."""
    holder = sqlite3.connect(path, timeout=0, isolation_level=None)
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        *first, last = statements
        for statement in first:
            holder.execute(statement)
        holder.execute("COMMIT")
        if last.startswith("BEGIN"):
            holder.execute("BEGIN IMMEDIATE")
        with pytest.raises(sqlite3.Error) as raised:
            other.execute(last)
        return raised.value
    finally:
        holder.close()
        other.close()


def wrapped(error: sqlite3.Error) -> sa_exc.DBAPIError:
    """The error as SQLAlchemy raises it, statement and parameters included."""
    return sa_exc.DBAPIError.instance(
        "INSERT INTO t (email) VALUES (?)", (EMAIL,), error, sqlite3.Error
    )


class TestSqliteErrors:
    def test_database_is_locked_is_503(self, sqlite_path: Path) -> None:
        error = sqlite_error(sqlite_path, "SELECT 1", "BEGIN IMMEDIATE")
        assert "locked" in str(error)
        for exc in (error, wrapped(error)):
            assert status_of(exc) == 503
            assert_fields_without_values(exc, "OperationalError", "SQLITE_BUSY")

    def test_a_taken_key_is_409(self, sqlite_path: Path) -> None:
        insert = f"INSERT INTO t VALUES (1, '{EMAIL}')"
        error = sqlite_error(sqlite_path, insert, insert)
        for exc in (error, wrapped(error)):
            assert status_of(exc) == 409
            assert_fields_without_values(exc, "IntegrityError", "SQLITE_CONSTRAINT_PRIMARYKEY")

    def test_a_refused_value_is_a_bug(self, sqlite_path: Path) -> None:
        error = sqlite_error(sqlite_path, "SELECT 1", "INSERT INTO t VALUES (2, NULL)")
        for exc in (error, wrapped(error)):
            assert status_of(exc) is None
            assert_fields_without_values(exc, "IntegrityError", "SQLITE_CONSTRAINT_NOTNULL")
