"""SIGTERM under load: every request already sent is answered; nobody sees a reset.

20 keep-alive clients call enrich in a loop, and three writes are held inside the server (the
test locks the table they need) when the process gets SIGTERM. Every request sent before the
signal must complete with a 2xx; the held writes finish once the lock goes. Requests sent
after it may be refused (the listener is closed) or find their connection closed: they are
counted apart. Two ways to stop are checked: at once (no drain period: uvicorn closes the
listener immediately), and with a drain period armed by a readiness probe (the service keeps
serving, /readyz says 503, then stops).
"""

from __future__ import annotations

import asyncio
import signal
import time
from dataclasses import dataclass, field

import asyncpg
import httpx
import pytest

from tests.faults.load import document, email, enrich_load, seed
from tests.fixtures.polling import eventually
from tests.fixtures.servers import (
    PrivatePostgres,
    PrivateRedis,
    ServiceFactory,
)
from tests.fixtures.service import (
    RecordProperty,
    Summary,
    bearer_headers,
)

CLIENTS = 20
PROFILES = 50
HELD_WRITES = 3
HOLD_AFTER_SIGTERM = 0.5  # the writes are still held this long after the signal
DRAIN_SECONDS = 3.0
# Requests sent this long after the signal must all be served in the drain mode: the service
# drains for DRAIN_SECONDS from when it handles the signal, later still on a busy machine, and
# the margin covers a request that waits in the socket before a busy worker reads it.
SURELY_DRAINING_SECONDS = 1.0
AFTER_SIGTERM_SECONDS = DRAIN_SECONDS + 1.0


@dataclass
class Sent:
    kind: str
    sent_at: float  # when the request was written (if it never was, when it was begun)
    status: int | None = None
    error: str | None = None
    done_at: float | None = None


@dataclass
class Recorder:
    sent: list[Sent] = field(default_factory=list)
    sigterm_at: float | None = None

    def before(self) -> list[Sent]:
        assert self.sigterm_at is not None
        return [s for s in self.sent if s.sent_at < self.sigterm_at]

    def after(self) -> list[Sent]:
        assert self.sigterm_at is not None
        return [s for s in self.sent if s.sent_at >= self.sigterm_at]

    async def call(self, kind: str, request: httpx.Request, http: httpx.AsyncClient) -> Sent:
        record = Sent(kind, time.monotonic())
        self.sent.append(record)

        async def written(event: str, _info: dict[str, object]) -> None:
            # "Sent" is when the whole request is in the socket: the client's own event loop
            # may get there well after it began (20 clients, a busy machine).
            if event == "http11.send_request_body.complete":
                record.sent_at = time.monotonic()

        request.extensions["trace"] = written
        try:
            response = await http.send(request)
            record.status = response.status_code
        except httpx.HTTPError as exc:
            record.error = type(exc).__name__
        record.done_at = time.monotonic()
        return record


async def enrich_client(
    base_url: str, headers: dict[str, str], number: int, recorder: Recorder
) -> None:
    """One caller on one keep-alive connection, until its requests fail or time is up."""
    async with httpx.AsyncClient(
        base_url=base_url, timeout=30, limits=httpx.Limits(max_connections=1)
    ) as http:
        index = number
        while True:
            index = (index + 1) % PROFILES
            request = http.build_request(
                "POST", "/v1/enrich", json={"identifiers": {"email": email(index)}}, headers=headers
            )
            record = await recorder.call("enrich", request, http)
            stop_at = recorder.sigterm_at
            if stop_at is not None and (
                record.error or time.monotonic() > stop_at + AFTER_SIGTERM_SECONDS
            ):
                return


async def held_write(
    base_url: str, headers: dict[str, str], index: int, recorder: Recorder
) -> Sent:
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        request = http.build_request(
            "PUT",
            f"/v1/profiles/email/{email(index)}",
            json=document(index, "held"),
            headers=headers,
        )
        return await recorder.call("write", request, http)


async def waiting_on_locks(admin: asyncpg.Connection) -> int:
    count: int = await admin.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
    )
    return count


async def readiness_turns_off(base_url: str) -> None:
    """/readyz says 503 once the signal is handled (the drain keeps the service up till then)."""
    async with httpx.AsyncClient(base_url=base_url, timeout=5) as http:

        async def draining() -> bool:
            status = (await http.get("/readyz")).status_code
            assert status in (200, 503), status
            return status == 503

        await eventually(draining, "/readyz saying 503 after SIGTERM")


@pytest.mark.parametrize("mode", ["at-once", "drain"])
class TestSigtermUnderLoad:
    async def test_requests_already_sent_are_answered_and_none_sees_a_reset(
        self,
        mode: str,
        private_pg: PrivatePostgres,
        private_redis: PrivateRedis,
        services: ServiceFactory,
        record_property: RecordProperty,
    ) -> None:
        database = private_pg.create_database()
        drain = DRAIN_SECONDS if mode == "drain" else 0.0
        service = await services.start(
            database,
            private_redis.url,
            shutdown_drain_seconds=str(drain),
            rate_limit_enabled="false",
            # The held writes wait on the test's table lock for the whole drain: on a loaded
            # machine that passes the default 2 s statement timeout, which is not under test.
            db_statement_timeout_ms="30000",
        )
        headers = await bearer_headers(service, database)
        async with httpx.AsyncClient(base_url=service.base_url, timeout=10) as http:
            await seed(http, headers, PROFILES, "v1")
            everyone = [email(i) for i in range(PROFILES)]
            await enrich_load(http, headers, everyone, total=PROFILES, concurrency=1)
            if mode == "drain":
                # A load balancer watches readiness: that arms the drain period.
                assert (await http.get("/readyz")).status_code == 200

        recorder = Recorder()
        clients = [
            asyncio.create_task(enrich_client(service.base_url, headers, n, recorder))
            for n in range(CLIENTS)
        ]
        admin = await asyncpg.connect(database.replace("postgresql+asyncpg", "postgresql"))
        try:
            lock = admin.transaction()
            await lock.start()
            await admin.execute("LOCK TABLE identifiers IN ACCESS EXCLUSIVE MODE")
            held = [
                asyncio.create_task(held_write(service.base_url, headers, 1000 + n, recorder))
                for n in range(HELD_WRITES)
            ]
            checker = await asyncpg.connect(database.replace("postgresql+asyncpg", "postgresql"))
            try:

                async def inside() -> bool:
                    return await waiting_on_locks(checker) >= HELD_WRITES

                await eventually(inside, "the held writes waiting in the database")
            finally:
                await checker.close()
            await asyncio.sleep(0.2)  # steady load around the signal

            recorder.sigterm_at = time.monotonic()
            service.terminate()
            if mode == "drain":
                await readiness_turns_off(service.base_url)
            await asyncio.sleep(HOLD_AFTER_SIGTERM)
            await lock.rollback()
        finally:
            await admin.close()
        held_records = await asyncio.gather(*held)
        await asyncio.gather(*clients)
        assert service.process is not None
        exit_code = await asyncio.to_thread(service.process.wait, 30)
        stopped_after = time.monotonic() - recorder.sigterm_at

        before, after = recorder.before(), recorder.after()
        in_flight = [s for s in before if s.done_at is not None and s.done_at > recorder.sigterm_at]
        failed_before = [s for s in before if s.status is None or s.status >= 300]
        during_drain = [
            s for s in after if drain and s.sent_at < recorder.sigterm_at + SURELY_DRAINING_SECONDS
        ]
        summary = Summary(
            f"faults: sigterm-{mode}",
            {
                "requests": len(recorder.sent),
                "in_flight_at_sigterm": len(in_flight),
                "held_writes_completed": sum(1 for s in held_records if s.status in (200, 201)),
                "errors": len(failed_before),
                "resets": sum(1 for s in before if s.error),
                "after_sigterm_served": sum(1 for s in after if s.status == 200),
                # a new connection to the closed listener
                "after_sigterm_refused": sum(1 for s in after if s.error == "ConnectError"),
                # a kept-alive connection the server closed as it was being reused
                "after_sigterm_closed": sum(
                    1 for s in after if s.error and s.error != "ConnectError"
                ),
                "exit_code": exit_code,
                "stopped_s": round(stopped_after, 2),
            },
        )
        summary.report(record_property)
        assert failed_before == [], failed_before[:5]
        assert summary.figures["held_writes_completed"] == HELD_WRITES, held_records
        assert summary.figures["in_flight_at_sigterm"] >= HELD_WRITES
        # uvicorn raises the signal again once it has shut down gracefully
        assert exit_code in (0, -signal.SIGTERM), service.log_text()
        assert "Traceback" not in service.log_text()
        if mode == "drain":
            assert during_drain, "no request was sent during the drain period"
            assert all(s.status == 200 for s in during_drain), during_drain[:5]
