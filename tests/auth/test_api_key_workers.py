"""API-key revocation across real worker processes: `enrich serve --workers 2` on PostgreSQL.

Each request goes over a new TCP connection and says which worker answered it, so the test
knows that every worker served the key (and so remembered it) before it was revoked, and that
every worker refuses it after: each learns of the revocation from its own poll.
"""

from __future__ import annotations

import time

import pytest

from app.auth.apikey_admin import ApiKeyService
from tests.auth.test_workers import WORKERS
from tests.conftest import Backend, ClientMaker, RunningApp
from tests.fixtures.polling import HANG_GUARD_SECONDS
from tests.fixtures.servers import ServiceFactory
from tests.fixtures.service import RecordProperty, Service
from tests.fixtures.workers import until_every_worker

PROTECTED = "/v1/enrich?email=nobody%40example.com"  # profiles:read, the fast path


@pytest.fixture
async def server(backend: Backend, services: ServiceFactory) -> Service:
    return await services.start(
        backend.database_url,
        backend.redis_url,
        workers=WORKERS,
        redis_prefix=backend.redis_prefix,
        # Every refusal below counts as a failed sign-in; past the default ten a client is
        # locked out (429). This test is about revocation, so the lockout stays out of reach.
        auth_max_failures_per_client="10000",
        auth_max_failures_per_address="10000",
    )


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_a_revoked_key_is_refused_by_every_worker(
    server: Service,
    running: RunningApp,
    make_client: ClientMaker,
    record_property: RecordProperty,
) -> None:
    client = await make_client("profiles:read")
    async with running.runtime.sessionmaker() as session:
        key, plain, _ = await ApiKeyService(session).create(client.client_id)
        await session.commit()

    def asking():  # type: ignore[no-untyped-def]
        return server.request_on_new_connection("GET", PROTECTED, headers={"X-API-Key": plain})

    served = await server.on_every_worker(asking, per_worker=4, within=HANG_GUARD_SECONDS)
    assert [a.status for a in served] == [200] * len(served), served

    async with running.runtime.sessionmaker() as session:
        await ApiKeyService(session).revoke(key.key_id)  # as the CLI does: no worker is told
        await session.commit()
    took = await until_every_worker(
        server, asking, lambda a: a.status == 401, since=time.monotonic(), within=HANG_GUARD_SECONDS
    )
    record_property("slowest_worker_s", round(max(took.values()), 3))
    after = await server.on_every_worker(asking, within=HANG_GUARD_SECONDS)
    assert [a.status for a in after] == [401] * len(after), after
