"""A dead token is refused by every worker of `enrich serve --workers 2`, and stays refused.

Each worker process has verified the token and serves it on its fast path (it answered it in
three rounds, each after the last; which worker answered is read from /proc). Then the token
dies: revoked through /oauth/revoke (answered by one of the workers), or its client disabled
with `enrich clients disable` (answered by none). Every worker learns it from the database
in the background; the promise is "within a second". Requests on new connections go on until
every worker has refused the token, and a worker that refused it must go on refusing it. The
deadline only guards against a hang: the time each worker took is reported, not asserted.
Another client's token is served everywhere all along. In-process:
tests/enrich/test_fastpath_guards.py.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import httpx
import pytest

from tests.fixtures.polling import HANG_GUARD_SECONDS
from tests.fixtures.servers import PrivatePostgres, PrivateRedis, ServiceFactory
from tests.fixtures.service import RawResponse, RecordProperty, Service, Summary, create_client
from tests.fixtures.workers import run_beside, until_every_worker

WORKERS = 2
QUESTION = {"email": "jane@example.com"}

Client = tuple[str, str]  # (client_id, client_secret)
Call = Callable[[], Awaitable[RawResponse]]


async def fetch_token(service: Service, client: Client) -> dict[str, str]:
    async with httpx.AsyncClient(base_url=service.base_url, timeout=10) as http:
        response = await http.post(
            "/oauth/token", data={"grant_type": "client_credentials"}, auth=client
        )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


async def revoke(service: Service, client: Client, headers: dict[str, str]) -> None:
    async with httpx.AsyncClient(base_url=service.base_url, timeout=10) as http:
        token = headers["Authorization"].removeprefix("Bearer ")
        response = await http.post("/oauth/revoke", data={"token": token}, auth=client)
    assert response.status_code == 200, response.text


async def disable(service: Service, client: Client, _: dict[str, str]) -> None:
    done = await run_beside(service, "clients", "disable", client[0])
    assert done.returncode == 0, done.stdout + done.stderr


KILLS = {"revoked": revoke, "client-disabled": disable}


def asking(service: Service, headers: dict[str, str]) -> Call:
    return lambda: service.enrich_on_new_connection(headers, QUESTION)


def refused(answer: RawResponse) -> bool:
    return answer.status == 401 and 'error="invalid_token"' in answer.headers.get(
        "www-authenticate", ""
    )


async def on_every_worker_rounds(service: Service, call: Call, rounds: int) -> None:
    """``rounds`` times, each after the last, until every worker answered 200."""
    for _ in range(rounds):
        answers = await service.on_every_worker(call, per_worker=1)
        assert all(answer.status == 200 for answer in answers), [a.status for a in answers]


class TestADeadTokenOnEveryWorker:
    @pytest.mark.parametrize("how", sorted(KILLS))
    async def test_every_worker_refuses_it_and_goes_on_refusing_it(
        self,
        private_pg: PrivatePostgres,
        private_redis: PrivateRedis,
        services: ServiceFactory,
        record_property: RecordProperty,
        how: str,
    ) -> None:
        database = private_pg.create_database()
        service = await services.start(database, private_redis.url, workers=WORKERS)
        client = await create_client(database, "profiles:read")
        other = await create_client(database, "profiles:read")
        token = await fetch_token(service, client)
        kept = await fetch_token(service, other)
        # Verified by the route, then served by the fast path, then known by its header.
        await on_every_worker_rounds(service, asking(service, token), 3)
        await on_every_worker_rounds(service, asking(service, kept), 3)

        await KILLS[how](service, client, token)
        since = time.monotonic()  # the change is committed: its answer or exit came after
        took = await until_every_worker(
            service, asking(service, token), refused, since=since, within=HANG_GUARD_SECONDS
        )

        after = await service.on_every_worker(asking(service, token), per_worker=2)
        assert all(refused(answer) for answer in after), [a.status for a in after]
        await on_every_worker_rounds(service, asking(service, kept), 1)
        Summary(
            f"e2e: token {how}",
            {
                "workers": len(took),
                "slowest_s": max(took.values()),
                "fastest_s": min(took.values()),
            },
        ).report(record_property)
