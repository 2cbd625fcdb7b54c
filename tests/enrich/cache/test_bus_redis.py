"""The invalidation bus on a shared Redis: scoped to its deployment, opaque to strangers.

(Its messages and states on their own, without Redis: tests/enrich/cache/test_bus.py.)

Redis pub/sub ignores database numbers, so every client of the server can subscribe to a
deployment's channel, and another deployment with the same prefix would share it. These tests
stand next to the app such a stranger: a pattern subscriber that reads every channel, a
subscriber that never acknowledges, and a second deployment in another database.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis.asyncio as redis
from redis.asyncio.connection import parse_url

from app.enrich.cache.remote import RemoteInvalidator, invalidation_channel
from tests.conftest import AppFactory, Backend, RunningApp, run_sync, start_app
from tests.fixtures.databases import (
    REDIS_URL,
    create_sqlite_database,
    flush_prefix_at,
    truncate_all,
)
from tests.fixtures.polling import eventually

# Long, so that a write that waits for a stranger's acknowledgement is unmistakable (the
# members each write waited for are recorded: see ``record_waits``).
ACK_MS = 5000


@pytest.fixture
def backend(pg_url: str, redis_key_prefix: str) -> Iterator[Backend]:
    """PostgreSQL and Redis only: the channel exists only with Redis."""
    chosen = Backend("postgres", pg_url, REDIS_URL, redis_key_prefix)
    yield chosen
    run_sync(truncate_all(chosen.database_url))
    run_sync(flush_prefix_at(REDIS_URL, redis_key_prefix))


def other_database_url() -> str:
    """The test Redis with another database number."""
    db = int(parse_url(REDIS_URL).get("db", 0))
    return f"{REDIS_URL.rsplit('/', 1)[0]}/{(db + 1) % 16}"


async def write_headers(app: RunningApp) -> dict[str, str]:
    from app.auth.clients import ClientService

    async with app.runtime.sessionmaker() as session:
        client, secret = await ClientService(session).create(
            "bus-test", "profiles:read profiles:write"
        )
        await session.commit()
    response = await app.http.post(
        "/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=(client.client_id, secret),
    )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


class Stranger:
    """A raw Redis client on every channel (and on ``channels``) that never acknowledges."""

    def __init__(self, *channels: str) -> None:
        self.client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
        self.pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        self.channels = channels
        self.messages: list[dict[str, Any]] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Stranger:
        await self.pubsub.psubscribe("*")
        if self.channels:
            await self.pubsub.subscribe(*self.channels)
        self._task = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        while True:
            message = await self.pubsub.get_message(timeout=1.0)
            if message is not None:
                self.messages.append(message)

    async def __aexit__(self, *_: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self.pubsub.aclose()  # type: ignore[no-untyped-call]
        await self.client.aclose()


def record_waits(app: RunningApp) -> list[list[bytes]]:
    """For each write of ``app`` from now on, the members its invalidation waited for (those
    registered and not yet acknowledged when its message went out): what holds a write up,
    read from the bus itself rather than from how long the write took."""
    bus = app.runtime.enrich_cache.bus
    unacknowledged = bus._unacknowledged
    waits: list[list[bytes]] = []

    async def recording(**kwargs: Any) -> Any:
        members = await unacknowledged(**kwargs)
        waits.append(list(members))
        return members

    bus._unacknowledged = recording  # type: ignore[assignment]
    return waits


class TestChannelScope:
    async def test_no_identifier_crosses_the_channel_in_clear(self, running: RunningApp) -> None:
        headers = await write_headers(running)
        email = f"guest-{uuid.uuid4().hex[:8]}@example.com"
        phone_digits = "4155550" + str(uuid.uuid4().int % 900 + 100)
        crm_id = f"CRM-{uuid.uuid4().hex[:8]}"
        channel = invalidation_channel(running.runtime.settings)
        async with Stranger(channel) as stranger:
            put = await running.http.put(
                f"/v1/profiles/email/{email}",
                json={"identifiers": {"phone": f"+1 {phone_digits}", "crm_id": crm_id}},
                headers=headers,
            )
            assert put.status_code == 201, put.text
            patch = await running.http.patch(
                f"/v1/profiles/crm_id/{crm_id}",
                content=b'{"traits": {"tier": "gold"}}',
                headers={**headers, "Content-Type": "application/merge-patch+json"},
            )
            assert patch.status_code == 200, patch.text
            erase = await running.http.delete(f"/v1/profiles/email/{email}", headers=headers)
            assert erase.status_code == 204

            def ours() -> list[dict[str, Any]]:
                return [m for m in stranger.messages if m["channel"] == channel.encode()]

            # Each write told the workers (heard by the pattern and the plain subscription).
            await eventually(lambda: len(ours()) >= 3 * 2, "the stranger heard the writes")
        for message in stranger.messages:
            data = message["data"]
            for secret in (email, phone_digits, crm_id):
                assert secret.encode() not in data, (message["channel"], data)

    async def test_a_subscriber_that_never_acknowledges_does_not_slow_writes(
        self, app_factory: AppFactory
    ) -> None:
        app = await app_factory(cache_invalidation_ack_ms=ACK_MS)
        headers = await write_headers(app)
        settings = app.runtime.settings
        old_name = f"{settings.redis_prefix}enrich:invalidate"
        waits = record_waits(app)
        async with Stranger(invalidation_channel(settings), old_name):
            for n in range(3):
                response = await app.http.put(
                    "/v1/profiles/crm_id/C-1", json={"traits": {"n": n}}, headers=headers
                )
                assert response.status_code in (200, 201), response.text
        assert waits == [[]] * 3  # the stranger is no member: no write waited for it

    async def test_another_deployment_in_another_database_neither_hears_nor_slows_writes(
        self, app_factory: AppFactory, backend: Backend, tmp_path: Any
    ) -> None:
        """Same Redis, same prefix, database 0 and 1: two deployments, two channels."""
        ours = await app_factory(cache_invalidation_ack_ms=ACK_MS)
        other_url = other_database_url()
        other_settings = Backend(
            "other",
            await create_sqlite_database(tmp_path),
            other_url,
            backend.redis_prefix,
        ).settings(cache_invalidation_ack_ms=ACK_MS)
        theirs_gen: AsyncIterator[RunningApp] = start_app(other_settings)
        theirs = await theirs_gen.__anext__()
        try:
            their_headers = await write_headers(theirs)
            ask = {"identifiers": {"email": "shared@example.com"}}
            for _ in range(2):
                answer = await theirs.http.post("/v1/enrich", json=ask, headers=their_headers)
                assert answer.status_code == 200
            their_l1 = theirs.runtime.enrich_cache.l1
            assert len(their_l1) == 1

            waits = record_waits(ours)
            response = await ours.http.put(
                "/v1/profiles/email/shared@example.com",
                json={"traits": {"tier": "gold"}},
                headers=await write_headers(ours),
            )
            assert response.status_code == 201, response.text
            # Our write was answered after every worker that heard it dropped its entries:
            # the other deployment kept its own, and did not hold our write up either.
            assert len(their_l1) == 1
            assert theirs.runtime.enrich_cache.bus.listening
            assert waits == [[]]
        finally:
            await theirs_gen.aclose()
            await flush_prefix_at(other_url, backend.redis_prefix)


class TestDelivery:
    async def test_a_write_drops_the_entries_of_every_worker_before_it_is_answered(
        self, app_factory: AppFactory
    ) -> None:
        writer = await app_factory()
        reader = await app_factory()
        headers = await write_headers(writer)
        email = "jane@example.com"
        put = await writer.http.put(f"/v1/profiles/email/{email}", json={}, headers=headers)
        assert put.status_code == 201
        ask = {"identifiers": {"email": email}}
        for _ in range(2):
            answer = await reader.http.post("/v1/enrich", json=ask, headers=headers)
            assert answer.json()["found"]
        assert len(reader.runtime.enrich_cache.l1) == 1
        await writer.http.put(
            f"/v1/profiles/email/{email}", json={"traits": {"tier": "gold"}}, headers=headers
        )
        assert len(reader.runtime.enrich_cache.l1) == 0
        answer = await reader.http.post("/v1/enrich", json=ask, headers=headers)
        assert answer.json()["traits"] == {"tier": "gold"}

    async def test_a_malformed_message_on_the_channel_is_ignored(self, running: RunningApp) -> None:
        """A stranger can publish on the channel; it must not make the workers deaf."""
        headers = await write_headers(running)
        ask = {"identifiers": {"email": "jane@example.com"}}
        for _ in range(2):
            await running.http.post("/v1/enrich", json=ask, headers=headers)
        settings = running.runtime.settings
        assert len(running.runtime.enrich_cache.l1) == 1
        stranger = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
        remote = RemoteInvalidator(settings.model_copy(update={"cache_invalidation_ack_ms": 2000}))
        try:
            for junk in (b"not json", b'{"id": 1}', b"[]", b'{"id": "x", "keys": 5}'):
                await stranger.publish(invalidation_channel(settings), junk)
            # Handled in order after the junk: once it is acknowledged, so is the junk.
            await remote.invalidate([("crm_id", "someone-else")])
        finally:
            await remote.close()
            await stranger.aclose()
        bus = running.runtime.enrich_cache.bus
        assert bus.listening
        assert len(running.runtime.enrich_cache.l1) == 1


class TestABusyListener:
    async def test_a_worker_that_has_not_handled_a_write_yet_does_not_answer_from_l1(
        self, app_factory: AppFactory
    ) -> None:
        """A worker whose listener has not got round to a message (its event loop busy, a
        slow connection) does not acknowledge it; the write is answered after the ack timeout
        all the same, and that worker must not answer the old entry from L1 meanwhile."""
        writer = await app_factory()
        reader = await app_factory()
        headers = await write_headers(writer)
        email = "busy@example.com"
        put = await writer.http.put(f"/v1/profiles/email/{email}", json={}, headers=headers)
        assert put.status_code == 201
        ask = {"identifiers": {"email": email}}
        for _ in range(2):
            await reader.http.post("/v1/enrich", json=ask, headers=headers)
        assert reader.runtime.enrich_cache.bus.hears_now()
        assert len(reader.runtime.enrich_cache.l1) == 1
        bus = reader.runtime.enrich_cache.bus
        handle, turn = bus._handle, asyncio.Event()

        async def stuck(message: dict[str, Any] | None, pings: Any) -> None:
            if message is not None and message["type"] in ("message", "smessage"):
                await turn.wait()  # the listener's next turn, when the test says
            await handle(message, pings)

        bus._handle = stuck  # type: ignore[method-assign]
        patch = await writer.http.put(
            f"/v1/profiles/email/{email}", json={"traits": {"tier": "gold"}}, headers=headers
        )
        assert patch.status_code == 200
        assert len(reader.runtime.enrich_cache.l1) == 1  # not handled: still there
        answer = await reader.http.post("/v1/enrich", json=ask, headers=headers)
        assert answer.json()["traits"] == {"tier": "gold"}
        assert answer.headers["x-cache"] == "miss"
        turn.set()
        await eventually(bus.hears_now, "the listener catches up")
        answer = await reader.http.post("/v1/enrich", json=ask, headers=headers)
        assert answer.json()["traits"] == {"tier": "gold"}


class TestMembership:
    async def test_a_worker_that_stopped_does_not_hold_writes_up(
        self, app_factory: AppFactory, backend: Backend
    ) -> None:
        writer = await app_factory(cache_invalidation_ack_ms=ACK_MS)
        gone_gen = start_app(backend.settings(cache_invalidation_ack_ms=ACK_MS))
        gone = await gone_gen.__anext__()
        assert gone.runtime.enrich_cache.bus.listening
        await gone_gen.aclose()
        waits = record_waits(writer)
        response = await writer.http.put(
            "/v1/profiles/crm_id/C-1", json={}, headers=await write_headers(writer)
        )
        assert response.status_code == 201
        assert waits == [[]]  # the stopped worker left the members: nobody to wait for

    async def test_a_worker_whose_registration_lapses_stops_answering_from_l1(
        self, running: RunningApp
    ) -> None:
        """Writers stop waiting for a member whose registration lapsed: it must not answer
        from an L1 that may have missed their invalidations, until it is registered again."""
        bus = running.runtime.enrich_cache.bus
        assert bus.listening
        register = bus._register_script

        async def unreachable(**_: Any) -> None:
            raise redis.ConnectionError("registration refused")

        bus._register_script = unreachable  # type: ignore[assignment]
        await eventually(lambda: not bus.listening, "the worker went deaf")
        bus._register_script = register
        await eventually(lambda: bus.listening, "the worker listens again")
