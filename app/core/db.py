"""Database engine and sessions, and the request transaction (``SessionDep``)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from app.core.parts import part
from app.core.settings import Settings


def create_engine(
    settings: Settings, database_url: str | None = None, pool_size: int | None = None
) -> AsyncEngine:
    """Build the engine for PostgreSQL (asyncpg) or the embedded SQLite file (``database_url``:
    a replica's, else the primary's).

    Every engine hides the parameters of its statements in errors: an error's text would
    otherwise carry the values (an email, a trait) to wherever it is printed.
    """
    url = make_url(database_url or settings.database_url)
    if settings.is_sqlite:
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, hide_parameters=True, connect_args={"timeout": 15})
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    connect_args = pg_connect_args(settings)
    if settings.database_pgbouncer:
        # PgBouncer hands each transaction to any server connection: a statement prepared on
        # one is unknown on the next, and its name may already be taken there. Nothing is
        # cached, and every statement gets a name of its own.
        connect_args["prepared_statement_cache_size"] = 0
        connect_args["prepared_statement_name_func"] = _statement_name
    engine = create_async_engine(
        url,
        pool_size=pool_size or settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout,
        pool_pre_ping=False,
        connect_args=connect_args,
        hide_parameters=True,
    )
    event.listen(engine.sync_engine, "checkout", _discard_closed)
    return engine


def pg_connect_args(settings: Settings) -> dict[str, Any]:
    """What every asyncpg connection of the service starts with (the lookup pools too)."""
    server_settings = {"application_name": "enrich"}
    # PgBouncer refuses startup parameters it does not know: there, the statement timeout is
    # the role's or the database's (``ALTER ROLE ... SET statement_timeout``).
    if settings.db_statement_timeout_ms and not settings.database_pgbouncer:
        server_settings["statement_timeout"] = str(settings.db_statement_timeout_ms)
    # A connection that cannot be made in time is an outage (503), not a hang.
    args: dict[str, Any] = {"server_settings": server_settings, "timeout": settings.db_pool_timeout}
    if settings.database_pgbouncer:
        args["statement_cache_size"] = 0
    return args


def _statement_name() -> str:
    return f"__enrich_{uuid.uuid4().hex}__"


def _discard_closed(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    # Instead of a pre-ping (a round trip per checkout): asyncpg already knows, without asking,
    # when the server closed a pooled connection (a restart, a crash). Such a connection is
    # replaced now rather than failing the request that drew it; the pool retries the checkout.
    connection = getattr(dbapi_connection, "_connection", None)
    if connection is not None and connection.is_closed():
        raise DisconnectionError("the server closed this pooled connection")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers run beside one writer, which is what several workers need.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=15000")
    cursor.close()


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


SessionMaker = async_sessionmaker[AsyncSession]


async def get_session(
    sessionmaker: Annotated[SessionMaker, Depends(part(async_sessionmaker))],
) -> AsyncIterator[AsyncSession]:
    """One transaction per request: committed before the response is sent, else rolled back."""
    async with sessionmaker() as session:
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise


# scope="function": the commit runs when the endpoint returns, before the response is sent,
# so a client that got its answer can rely on the write (FastAPI's default for dependencies
# with yield is to finish them after the response).
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
