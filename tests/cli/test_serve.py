"""`enrich serve` with several worker processes on PostgreSQL + Redis: metrics summed across
workers, one rate limit shared by all of them, a graceful SIGTERM, and the settings it logs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Awaitable
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from app.auth.clients import ClientService
from app.cli.serve import effective_settings
from app.core.db import create_engine, create_sessionmaker
from app.core.settings import Settings
from tests.conftest import Backend
from tests.fixtures.polling import HANG_GUARD_SECONDS, eventually
from tests.fixtures.servers import ServiceFactory
from tests.fixtures.service import (
    ENRICH,
    RawResponse,
    Service,
    create_client,
    free_port,
    service_env,
    socket_owner,
    worker_processes,
)

on_postgres = pytest.mark.parametrize("backend", ["postgres"], indirect=True)

GUEST = "/v1/enrich?email=nobody%40example.com"
DRAIN_SECONDS = 5


async def token_headers(service: Service, client: tuple[str, str]) -> dict[str, str]:
    async with httpx.AsyncClient(base_url=service.base_url, timeout=10) as http:
        response = await http.post(
            "/oauth/token", data={"grant_type": "client_credentials"}, auth=client
        )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


async def start(services: ServiceFactory, backend: Backend, **settings: str) -> Service:
    return await services.start(
        backend.database_url,
        backend.redis_url,
        workers=2,
        redis_prefix=backend.redis_prefix,
        **settings,
    )


async def spread(
    service: Service, path: str, headers: dict[str, str], count: int, parallel: int = 4
) -> list[RawResponse]:
    """``count`` requests over new connections, ``parallel`` at a time (both workers get some)."""
    answers: list[RawResponse] = []
    while len(answers) < count:
        batch = min(parallel, count - len(answers))
        answers += await asyncio.gather(
            *(service.request_on_new_connection("GET", path, headers=headers) for _ in range(batch))
        )
    return answers


class KeepAlive:
    """One kept-alive connection to the service, and the worker process that holds it."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, worker: int
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.worker = worker

    async def get(self, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str]]:
        lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await self.writer.drain()
        head = (await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 10)).decode()
        status_line, *header_lines = head.strip().split("\r\n")
        answer = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            answer[name.strip().lower()] = value.strip()
        await self.reader.readexactly(int(answer.get("content-length", "0")))
        return int(status_line.split()[1]), answer

    def close(self) -> None:
        self.writer.close()


async def connections_to_both_workers(service: Service, count: int) -> list[KeepAlive]:
    """``count`` kept-alive connections, opened until both workers hold some."""
    opened: list[KeepAlive] = []
    for _ in range(count * 10):
        reader, writer = await asyncio.open_connection("127.0.0.1", service.port)
        # A first request makes sure the worker has accepted it before we look for it.
        probe = KeepAlive(reader, writer, 0)
        await probe.get("/healthz", {})
        owner = socket_owner(
            service.port, writer.get_extra_info("sockname")[1], service.worker_pids()
        )
        assert owner is not None
        opened.append(KeepAlive(reader, writer, owner))
        workers = {c.worker for c in opened}
        if len(opened) >= count and len(workers) == 2:
            return opened
    raise AssertionError(f"connections did not reach both workers: {workers}")


def metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


@on_postgres
class TestMetricsAcrossWorkers:
    async def test_every_workers_requests_are_summed(
        self, backend: Backend, services: ServiceFactory
    ) -> None:
        service = await start(services, backend)
        headers = await token_headers(
            service, await create_client(backend.database_url, "profiles:read")
        )
        labels = {"route": "/v1/enrich", "method": "GET", "status": "200"}
        answers: list[RawResponse] = []
        deadline = time.monotonic() + HANG_GUARD_SECONDS
        while len(answers) < 40 or len({a.worker for a in answers} - {None}) < 2:
            assert time.monotonic() < deadline, {a.worker for a in answers}
            answers += await spread(service, GUEST, headers, 4)
        assert {a.status for a in answers} == {200}
        sent = len(answers)

        async def counted(http: httpx.AsyncClient) -> bool:
            text = (await http.get("/metrics")).text
            return (
                metric(text, "enrich_http_requests_total", **labels) == sent
                and metric(text, "enrich_http_request_duration_seconds_count", **labels) == sent
                and metric(text, "enrich_cache_answers_total") == sent
                and metric(text, "enrich_tokens_issued_total") == 1
            )

        async with httpx.AsyncClient(base_url=service.base_url) as http:
            # Each worker hands its tallies over every 0.25 s: wait for the sum to reach the
            # count (a wrong sum never does), then whichever worker answers a scrape reports
            # every worker's requests.
            await eventually(lambda: counted(http), "every worker's requests in /metrics")
            assert [await counted(http) for _ in range(4)] == [True] * 4


@on_postgres
class TestRateLimitAcrossWorkers:
    async def test_one_bucket_for_all_workers(
        self, backend: Backend, services: ServiceFactory
    ) -> None:
        # A token every 1000 s: the test sees the burst and nothing of the refill (whose
        # arithmetic is tests/platform/test_ratelimit.py's), so the count is exact.
        rps, burst = 0.001, 100
        client = await create_client(backend.database_url, "profiles:read")
        engine = create_engine(Settings(_env_file=None, database_url=backend.database_url))  # type: ignore[call-arg]
        try:
            async with create_sessionmaker(engine)() as session:
                await ClientService(session).limit(client[0], rps, burst)
                await session.commit()
        finally:
            await engine.dispose()
        # A slow Redis answer would send a worker to its own bucket for a second (as it
        # should, but then the count is not the shared bucket's): time is not under test.
        service = await start(services, backend, redis_socket_timeout="10")
        headers = await token_headers(service, client)
        connections = await connections_to_both_workers(service, 8)

        first = connections[0].worker
        busy = [c for c in connections if c.worker == first]
        idle = [c for c in connections if c.worker != first]

        async def admitted_until_refused(connection: KeepAlive) -> int:
            """Requests until this connection's worker refuses one: a worker that refused
            has found the bucket empty, and admits nothing for the next 1000 s."""
            admitted = 0
            while True:
                status, answer_headers = await connection.get(GUEST, headers)
                if status != 200:
                    assert status == 429
                    assert answer_headers["ratelimit-limit"] == "0.001"
                    return admitted
                admitted += 1

        try:
            async with asyncio.timeout(HANG_GUARD_SECONDS):
                # One worker takes all the traffic, then the other gets some: the first had
                # the whole burst (not its share), and the second has nothing left to give.
                by_busy = await asyncio.gather(*(admitted_until_refused(c) for c in busy))
                by_idle = await asyncio.gather(*(admitted_until_refused(c) for c in idle))
        finally:
            for connection in connections:
                connection.close()
        assert sum(by_busy) == burst, by_busy
        assert by_idle == [0] * len(idle)
        assert "ratelimit.redis_failed" not in service.log_text()


@on_postgres
class TestGracefulShutdown:
    async def test_sigterm_turns_readiness_off_then_drains(
        self, backend: Backend, services: ServiceFactory
    ) -> None:
        # The drain is long enough for the checks below on a busy machine; how long it
        # takes to notice the signal is uvicorn's (its supervisor passes signals on every
        # 0.5 s), so the checks poll.
        service = await start(services, backend, shutdown_drain_seconds=str(DRAIN_SECONDS))
        headers = await token_headers(
            service, await create_client(backend.database_url, "profiles:read")
        )

        def readiness() -> Awaitable[RawResponse]:
            return service.request_on_new_connection("GET", "/readyz")

        # A load balancer probes every worker in time (which arms the drain period).
        ready = await service.on_every_worker(readiness, per_worker=1)
        assert {a.status for a in ready} == {200}
        service.terminate()
        during = await service.on_every_worker(
            readiness, per_worker=1, until=lambda mine: mine[-1].status == 503
        )
        draining = [a for a in during if a.status == 503]
        assert {json.loads(a.body)["status"] for a in draining} == {"draining"}
        served = await spread(service, GUEST, headers, 8)
        assert {a.status for a in served} == {200}  # still serving while the LB notices
        assert service.process is not None
        assert service.process.poll() is None
        stopped = await asyncio.to_thread(service.process.wait, DRAIN_SECONDS + 30)
        assert stopped is not None
        log = service.log_text()
        assert "shutdown.draining" in log


@on_postgres
class TestServeCommand:
    async def test_workers_come_from_the_settings_and_the_settings_are_logged_masked(
        self, backend: Backend, tmp_path: Path
    ) -> None:
        port = free_port()
        password = "hunter2-not-for-logs"
        # PostgreSQL trusts local connections here: the password is carried but not needed.
        database_url = backend.database_url.replace("postgres@", f"postgres:{password}@")
        env = service_env(
            {
                "ENRICH_DATABASE_URL": database_url,
                "ENRICH_REDIS_URL": backend.redis_url or "",
                "ENRICH_REDIS_PREFIX": backend.redis_prefix,
                "ENRICH_WORKERS": "2",
                "ENRICH_LOG_LEVEL": "INFO",
                "ENRICH_LOG_FORMAT": "json",
                "ENRICH_PUBLIC_URL": f"http://127.0.0.1:{port}",
            }
        )
        log = tmp_path / "serve.log"
        process = spawn([str(ENRICH), "serve", "--port", str(port)], env, tmp_path, log)
        try:
            deadline = time.monotonic() + 60
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                while True:
                    assert process.poll() is None, log.read_text()
                    assert time.monotonic() < deadline, log.read_text()
                    with contextlib.suppress(httpx.TransportError):
                        if (await http.get("/healthz")).status_code == 200:
                            break
                    await asyncio.sleep(0.2)
            # uvicorn starts the workers one after the other: wait for the second (a third
            # would never make two).
            await eventually(lambda: len(worker_processes(process.pid)) == 2, "two workers")
            text = log.read_text()
            starting = next(
                json.loads(line) for line in text.splitlines() if '"serve.starting"' in line
            )
            assert starting["workers"] == 2
            shown = starting["settings"]
            assert shown["database_url"].startswith("postgresql+asyncpg://postgres:***@")
            assert shown["workers"] == 2
            assert shown["rate_limit_rps"] == 1000.0
            assert password not in text
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)


def spawn(command: list[str], env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            command, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


class TestEffectiveSettings:
    def test_secrets_are_masked(self) -> None:
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            database_url="postgresql://app:db-pass-123@db:5432/enrich",
            redis_url=SecretStr("redis://:redis-pass-456@cache:6379/0"),
        )
        shown = json.dumps(effective_settings(settings), default=str)
        assert "db-pass-123" not in shown
        assert "redis-pass-456" not in shown
        assert "postgresql+asyncpg://app:***@db:5432/enrich" in shown
        assert "redis://:***@cache:6379/0" in shown
