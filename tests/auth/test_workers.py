"""Revocation across real worker processes: `enrich serve --workers 2` on PostgreSQL.

Each request goes over a new TCP connection, and the test finds which worker process owns the
server side of it (Linux /proc), so it knows that both workers cached the token before the
revocation and that both refuse it after.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import delete

from app.core.models import Client
from tests.conftest import Backend, ClientMaker, RunningApp
from tests.fixtures.service import children_of, free_port, socket_owner

ENRICH = Path(sys.executable).with_name("enrich")
PROTECTED = "/v1/enrich?email=nobody%40example.com"  # profiles:read
STARTUP_SECONDS = 60


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def workers(self) -> set[int]:
        # uvicorn's workers are the children that listen; a resource tracker may be a child too
        return children_of(self.process.pid)

    async def get_on_new_connection(self, path: str, token: str) -> tuple[int, int | None]:
        """GET over a fresh connection; return the status and the worker pid that served it."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            request = (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
                f"Authorization: Bearer {token}\r\nAccept: application/json\r\n\r\n"
            )
            writer.write(request.encode())
            await writer.drain()
            status_line = await asyncio.wait_for(reader.readline(), 10)
            status = int(status_line.split()[1])
            headers = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            length = 0
            for line in headers.decode("latin-1").split("\r\n"):
                name, _, value = line.partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            await asyncio.wait_for(reader.readexactly(length), 10)
            # the connection is still open (keep-alive): find who holds the other end
            client_port = writer.get_extra_info("sockname")[1]
            owner = socket_owner(self.port, client_port, self.workers())
            return status, owner
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


@pytest.fixture
def server(backend: Backend, tmp_path: Path) -> Iterator[Server]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENRICH_")}
    env.update(
        ENRICH_DATABASE_URL=backend.database_url,
        ENRICH_REDIS_URL=backend.redis_url or "",
        ENRICH_REDIS_PREFIX=backend.redis_prefix,
        ENRICH_PUBLIC_URL=f"http://127.0.0.1:{port}",
        ENRICH_ENVIRONMENT="test",
        ENRICH_LOG_LEVEL="WARNING",
    )
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(ENRICH), "serve", "--workers", "2", "--port", str(port), "--host", "127.0.0.1"],
            env=env,
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield Server(process, port, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


async def wait_until_up(server: Server) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        while time.monotonic() < deadline:
            assert server.process.poll() is None, server.log.read_text()
            with contextlib.suppress(httpx.TransportError):
                if (await http.get("/healthz")).status_code == 200 and len(server.workers()) >= 2:
                    return
            await asyncio.sleep(0.2)
    raise AssertionError("the server did not start:\n" + server.log.read_text())


async def statuses_by_worker(
    server: Server, token: str, *, at_least: int, deadline: float
) -> dict[int, set[int]]:
    """Send requests on new connections until both workers served some (and ``at_least``)."""
    seen: dict[int, set[int]] = {}
    sent = 0
    stop = time.monotonic() + deadline
    while sent < at_least or len(seen) < 2:
        assert time.monotonic() < stop, f"requests did not reach two workers: {seen}"
        # a few at once, so an idle worker gets some of the connections
        results = await asyncio.gather(
            *(server.get_on_new_connection(PROTECTED, token) for _ in range(4))
        )
        for status, owner in results:
            sent += 1
            seen.setdefault(owner if owner is not None else -1, set()).add(status)
    return seen


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
class TestRevocationAcrossWorkerProcesses:
    async def test_a_revoked_token_is_refused_by_every_worker_after_a_second(
        self, server: Server, make_client: ClientMaker
    ) -> None:
        client = await make_client("profiles:read")
        await wait_until_up(server)
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            response = await http.post(
                "/oauth/token",
                data={"grant_type": "client_credentials"},
                auth=(client.client_id, client.client_secret),
            )
            assert response.status_code == 200, response.text
            token = response.json()["access_token"]

            before = await statuses_by_worker(server, token, at_least=8, deadline=20)
            assert all(statuses == {200} for statuses in before.values()), before
            assert len([pid for pid in before if pid > 0]) == 2, before

            revoked = await http.post(
                "/oauth/revoke",
                data={"token": token},
                auth=(client.client_id, client.client_secret),
            )
            assert revoked.status_code == 200

        await asyncio.sleep(1.0)
        after = await statuses_by_worker(server, token, at_least=20, deadline=20)
        assert all(statuses == {401} for statuses in after.values()), after
        assert len([pid for pid in after if pid > 0]) == 2, after

    async def test_a_new_clients_token_works_at_once_and_dies_with_the_client_everywhere(
        self, server: Server, running: RunningApp, make_client: ClientMaker
    ) -> None:
        await wait_until_up(server)
        client = await make_client("profiles:read")  # after the workers' first poll
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            response = await http.post(
                "/oauth/token",
                data={"grant_type": "client_credentials"},
                auth=(client.client_id, client.client_secret),
            )
            assert response.status_code == 200, response.text
            token = response.json()["access_token"]
        # (hang guards: on a busy machine one worker may take every connection for a while)
        before = await statuses_by_worker(server, token, at_least=8, deadline=60)
        assert all(statuses == {200} for statuses in before.values()), before
        assert len([pid for pid in before if pid > 0]) == 2, before

        # Deleted as any SQL would, without disabling it first.
        async with running.runtime.sessionmaker() as session:
            await session.execute(delete(Client).where(Client.client_id == client.client_id))
            await session.commit()
        deadline = time.monotonic() + 30  # promised within a second; generous for a busy box
        while True:
            after = await statuses_by_worker(server, token, at_least=8, deadline=60)
            if all(statuses == {401} for statuses in after.values()):
                break
            assert time.monotonic() < deadline, f"still accepted somewhere: {after}"
            await asyncio.sleep(0.1)
        assert len([pid for pid in after if pid > 0]) == 2, after
