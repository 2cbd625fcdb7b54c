"""Shared fixtures: the app on each backend, an HTTP client, OAuth clients and tokens.

Every app test runs twice: on the embedded default (SQLite + in-process cache) and on the
machine's PostgreSQL + Redis, each in a database of the run's own.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import io
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from fastapi import FastAPI

from app.core.settings import Settings
from app.main import create_app
from app.runtime import Runtime
from tests.fixtures.callers import EVERY_SCOPE, OAuthClient, fetch_token, make_client_on
from tests.fixtures.databases import (
    REDIS_URL,
    check_redis,
    create_pg_database,
    create_sqlite_database,
    drop_pg_database,
    flush_prefix_at,
    truncate_all,
)
from tests.fixtures.redis_cluster import redis_cluster  # noqa: F401  (fixture, session-wide)
from tests.fixtures.service import (
    RELAXED_DB_POOL_TIMEOUT_SECONDS,
    RELAXED_DEADLINE_MS,
    RELAXED_REDIS_TIMEOUT_SECONDS,
    RELAXED_STATEMENT_TIMEOUT_MS,
)

BACKENDS = ["sqlite", "postgres"]
T = TypeVar("T")


def run_sync(coro: Awaitable[T]) -> T:
    """Run a coroutine to completion on a private loop (sync fixtures sit outside the test loop)."""
    result: list[T] = []

    def target() -> None:
        result.append(asyncio.run(coro))  # type: ignore[arg-type]

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(target).result()
    return result[0]


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    url = run_sync(create_pg_database())
    try:
        yield url
    finally:
        run_sync(drop_pg_database(url))


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return run_sync(create_sqlite_database(tmp_path_factory.mktemp("sqlite")))


@pytest.fixture(scope="session")
def redis_key_prefix() -> Iterator[str]:
    prefix = run_sync(check_redis())
    try:
        yield prefix
    finally:
        run_sync(flush_prefix_at(REDIS_URL, prefix))


@dataclass
class Backend:
    name: str
    database_url: str
    redis_url: str | None
    redis_prefix: str

    def settings(self, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "environment": "test",
            "database_url": self.database_url,
            "redis_url": self.redis_url,
            "redis_prefix": self.redis_prefix,
            "public_url": "http://testserver",
            "log_level": "WARNING",
            # Generous timeouts, as for the services (tests/fixtures/service.py says why); the
            # tests of a deadline or a timeout set their own.
            "deadline_ms": RELAXED_DEADLINE_MS,
            "db_pool_timeout": RELAXED_DB_POOL_TIMEOUT_SECONDS,
            "db_statement_timeout_ms": RELAXED_STATEMENT_TIMEOUT_MS,
            "redis_connect_timeout": RELAXED_REDIS_TIMEOUT_SECONDS,
            "redis_socket_timeout": RELAXED_REDIS_TIMEOUT_SECONDS,
        }
        values.update(overrides)
        return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    if request.param == "postgres":
        url = request.getfixturevalue("pg_url")
        prefix = request.getfixturevalue("redis_key_prefix")
        chosen = Backend("postgres", url, REDIS_URL, prefix)
    else:
        chosen = Backend("sqlite", request.getfixturevalue("sqlite_url"), None, "unused:")
    yield chosen
    run_sync(truncate_all(chosen.database_url))
    if chosen.redis_url:
        run_sync(flush_prefix_at(chosen.redis_url, chosen.redis_prefix))


@dataclass
class RunningApp:
    app: FastAPI
    runtime: Runtime
    http: httpx.AsyncClient


async def start_app(settings: Settings) -> AsyncIterator[RunningApp]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield RunningApp(app, app.state.runtime, http)


AppFactory = Callable[..., Awaitable[RunningApp]]


@pytest.fixture
async def app_factory(backend: Backend) -> AsyncIterator[AppFactory]:
    """Start app instances (each one is like a separate worker process) on the backend."""
    stack: list[AsyncIterator[RunningApp]] = []

    async def factory(**overrides: Any) -> RunningApp:
        gen = start_app(backend.settings(**overrides))
        stack.append(gen)
        return await gen.__anext__()

    yield factory
    for gen in reversed(stack):
        await close_app(gen)


# An app that has not closed by then hangs (a hang guard: a loaded run once waited for ever
# in this teardown); the failure shows what every task was waiting on.
CLOSE_HANG_SECONDS = 120


async def close_app(gen: AsyncIterator[RunningApp]) -> None:
    try:
        async with asyncio.timeout(CLOSE_HANG_SECONDS):
            await gen.aclose()  # type: ignore[attr-defined]  # (an async generator)
    except TimeoutError:
        stacks = io.StringIO()
        for task in asyncio.all_tasks():
            task.print_stack(file=stacks)
        raise AssertionError(f"the app did not close:\n{stacks.getvalue()}") from None


@pytest.fixture
async def running(app_factory: AppFactory) -> RunningApp:
    return await app_factory()


@pytest.fixture
def http(running: RunningApp) -> httpx.AsyncClient:
    return running.http


ClientMaker = Callable[..., Awaitable[OAuthClient]]


@pytest.fixture
def make_client(running: RunningApp) -> ClientMaker:
    async def maker(
        scopes: str = EVERY_SCOPE,
        *,
        name: str = "test",
        client_id: str | None = None,
        secret: str | None = None,
    ) -> OAuthClient:
        return await make_client_on(running, scopes, name=name, client_id=client_id, secret=secret)

    return maker


TokenMaker = Callable[..., Awaitable[str]]


@pytest.fixture
def token_for(make_client: ClientMaker, http: httpx.AsyncClient) -> TokenMaker:
    async def maker(scopes: str = EVERY_SCOPE) -> str:
        return await fetch_token(http, await make_client(scopes))

    return maker


@pytest.fixture
def tmp_dir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
async def headers(token_for: TokenMaker) -> dict[str, str]:
    """Authorization for a client with every profile and event scope."""
    token = await token_for("profiles:read profiles:write events:write")
    return {"Authorization": f"Bearer {token}"}
