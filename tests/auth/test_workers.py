"""Revocation across real worker processes: `enrich serve --workers 2` on PostgreSQL.

Each request goes over a new TCP connection and says which worker process answered it
(tests/fixtures/service.py), so a test knows that every worker served the token before it died
and that every worker refuses it after, and goes on refusing it. Each worker learns of the
death from its own poll: the tests wait for every worker with a deadline that only guards
against a hang, and report the time the slowest took (what bounds it is the poll's period:
tests/auth/test_revocation.py ``TestThePoll``).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import httpx
import pytest
from sqlalchemy import delete

from app.core.models import Client
from tests.conftest import Backend, ClientMaker, OAuthClient, RunningApp
from tests.fixtures.callers import bearer, fetch_token, revoke
from tests.fixtures.polling import HANG_GUARD_SECONDS
from tests.fixtures.servers import ServiceFactory
from tests.fixtures.service import RawResponse, RecordProperty, Service
from tests.fixtures.workers import until_every_worker

PROTECTED = "/v1/enrich?email=nobody%40example.com"  # profiles:read
WORKERS = 2
# Requests each worker answers before the token dies, so that each has verified and cached it.
ANSWERS_BEFORE = 4

Call = Callable[[], Awaitable[RawResponse]]


@pytest.fixture
async def server(backend: Backend, services: ServiceFactory) -> Service:
    return await services.start(
        backend.database_url,
        backend.redis_url,
        workers=WORKERS,
        redis_prefix=backend.redis_prefix,
    )


def asking(server: Service, token: str) -> Call:
    return lambda: server.request_on_new_connection("GET", PROTECTED, headers=bearer(token))


async def token_from(server: Service, client: OAuthClient) -> str:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as http:
        return await fetch_token(http, client)


async def assert_served_by_every_worker(server: Service, token: str) -> None:
    answers = await server.on_every_worker(
        asking(server, token), per_worker=ANSWERS_BEFORE, within=HANG_GUARD_SECONDS
    )
    assert [a.status for a in answers] == [200] * len(answers), answers


async def assert_refused_by_every_worker(
    server: Service, token: str, since: float, record_property: RecordProperty
) -> None:
    """Wait until every worker refuses ``token`` (and none serves it again once it refused)."""
    took = await until_every_worker(
        server,
        asking(server, token),
        lambda answer: answer.status == 401,
        since=since,
        within=HANG_GUARD_SECONDS,
    )
    record_property("slowest_worker_s", round(max(took.values()), 3))
    after = await server.on_every_worker(asking(server, token), within=HANG_GUARD_SECONDS)
    assert [a.status for a in after] == [401] * len(after), after


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
class TestRevocationAcrossWorkerProcesses:
    async def test_a_revoked_token_is_refused_by_every_worker(
        self, server: Service, make_client: ClientMaker, record_property: RecordProperty
    ) -> None:
        client = await make_client("profiles:read")
        token = await token_from(server, client)
        await assert_served_by_every_worker(server, token)

        async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as http:
            assert (await revoke(http, client, token)).status_code == 200
        await assert_refused_by_every_worker(server, token, time.monotonic(), record_property)

    async def test_a_new_clients_token_works_at_once_and_dies_with_the_client_everywhere(
        self,
        server: Service,
        running: RunningApp,
        make_client: ClientMaker,
        record_property: RecordProperty,
    ) -> None:
        client = await make_client("profiles:read")  # after the workers' first poll
        token = await token_from(server, client)
        await assert_served_by_every_worker(server, token)

        # Deleted as any SQL would, without disabling it first.
        async with running.runtime.sessionmaker() as session:
            await session.execute(delete(Client).where(Client.client_id == client.client_id))
            await session.commit()
        await assert_refused_by_every_worker(server, token, time.monotonic(), record_property)
