"""What a careless or hostile caller can make the HTTP layer of ``enrich serve`` do: header blocks
past the limit are 431 before they are read, slow or silent connections are closed after a
timeout. Real sockets against a real service.

The attack tests run on SQLite only: the protocol answers them before the application (and its
database) is involved. Normal requests through the same protocol run on both backends.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from dataclasses import dataclass

import httpx
import orjson
import pytest

from tests.conftest import Backend
from tests.fixtures.servers import ServiceFactory
from tests.fixtures.service import RecordProperty, Service, Summary, bearer_headers

on_sqlite = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)

# Short timeouts for the tests about them; every wait below is a generous hang guard.
SHORT_TIMEOUTS = {
    "header_timeout_seconds": "1",
    "body_timeout_seconds": "1",
    "keep_alive_seconds": "1",
}
HANG_GUARD = 30.0
CHUNK = 64 * 1024


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict[str, str]:
        document: dict[str, str] = orjson.loads(self.body)
        return document


def parse(raw: bytes) -> Answer:
    """One HTTP answer with a Content-Length, from the bytes a connection received."""
    head, sep, rest = raw.partition(b"\r\n\r\n")
    assert sep, f"no whole answer head in {raw[:200]!r}"
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    assert len(rest) >= length, (headers, rest)
    return Answer(int(status_line.split()[1]), headers, rest[:length])


class Raw:
    """One TCP connection to the service, written and read by hand."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.received = bytearray()
        self.first_bytes = asyncio.Event()  # the server has started answering

    @classmethod
    async def open(cls, service: Service) -> Raw:
        reader, writer = await asyncio.open_connection("127.0.0.1", service.port)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await asyncio.wait_for(self.writer.drain(), HANG_GUARD)

    async def read_until_closed(self, within: float = HANG_GUARD) -> bytes:
        """Everything the server sends until it closes the connection (or resets it)."""

        async def read() -> None:
            while True:
                try:
                    data = await self.reader.read(CHUNK)
                except ConnectionError:
                    return
                if not data:
                    return
                self.received += data
                self.first_bytes.set()

        try:
            await asyncio.wait_for(read(), within)
        except TimeoutError:
            raise AssertionError(
                f"the server kept the connection open for {within} s; "
                f"it sent {bytes(self.received[:300])!r}"
            ) from None
        return bytes(self.received)

    def close(self) -> None:
        self.writer.close()


# A slow caller's pace: a byte this often, well inside the 1 s timeout also on a busy machine,
# so only a deadline for the whole head (not one per read) can stop it.
TRICKLE_SECONDS = 0.1


async def trickle(raw: Raw, first: bytes, byte: bytes) -> None:
    """Send ``first``, then ``byte`` every TRICKLE_SECONDS until the connection is cut."""
    with contextlib.suppress(ConnectionError):
        await raw.send(first)
        while True:
            await asyncio.sleep(TRICKLE_SECONDS)
            await raw.send(byte)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/<pid>/stat, utime and stime)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def request_head(path: str = "/healthz", headers: list[tuple[str, str]] | None = None) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name}: {value}" for name, value in headers or []]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def start(services: ServiceFactory, backend: Backend, **settings: str) -> Service:
    return await services.start(
        backend.database_url, backend.redis_url, redis_prefix=backend.redis_prefix, **settings
    )


async def send_streaming(raw: Raw, head_start: bytes, filler: bytes, total: int) -> int:
    """Send ``head_start``, then ``filler`` until ``total`` bytes or until the server answers
    (or cuts the connection); returns how many bytes went out."""
    sent = 0
    with contextlib.suppress(ConnectionError):
        await raw.send(head_start)
        sent = len(head_start)
        while sent < total and not raw.first_bytes.is_set():
            await raw.send(filler)
            sent += len(filler)
        if sent >= total:
            await raw.send(b"\r\n\r\n")
    return sent


def assert_refused(answer: Answer, status: int, error: str) -> None:
    assert answer.status == status, answer
    assert answer.headers["content-type"] == "application/json"
    assert answer.headers["connection"] == "close"
    document = answer.json()
    assert document["error"] == error
    assert document["detail"]


@on_sqlite
class TestHeaderLimits:
    async def test_a_64_kb_header_is_431_json_and_the_connection_closes(
        self, services: ServiceFactory, backend: Backend
    ) -> None:
        service = await start(services, backend)
        raw = await Raw.open(service)
        try:
            await raw.send(request_head(headers=[("X-Big", "a" * CHUNK)]))
            answer = parse(await raw.read_until_closed())
        finally:
            raw.close()
        assert_refused(answer, 431, "request_header_fields_too_large")
        assert "16384" in answer.json()["detail"]

    async def test_a_head_of_exactly_the_limit_passes_and_one_byte_more_is_431(
        self, services: ServiceFactory, backend: Backend
    ) -> None:
        service = await start(services, backend, max_header_bytes="4096")

        def head_of(size: int) -> bytes:
            bare = request_head(headers=[("Connection", "close"), ("X-Pad", "")])
            return request_head(
                headers=[("Connection", "close"), ("X-Pad", "p" * (size - len(bare)))]
            )

        assert len(head_of(4096)) == 4096
        assert parse(await one_request(service, head_of(4096))).status == 200
        refused = parse(await one_request(service, head_of(4097)))
        assert_refused(refused, 431, "request_header_fields_too_large")
        assert "4096" in refused.json()["detail"]

    async def test_a_64_mb_header_is_refused_before_it_is_read(
        self, services: ServiceFactory, backend: Backend, record_property: RecordProperty
    ) -> None:
        service = await start(services, backend)
        assert service.process is not None
        worker = service.process.pid  # one worker: uvicorn serves in its main process
        before = cpu_seconds(worker)
        total = 64 * 1024 * 1024
        raw = await Raw.open(service)
        try:
            reading = asyncio.create_task(raw.read_until_closed())
            head_start = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: "
            sent = await send_streaming(raw, head_start, b"a" * CHUNK, total)
            answer = parse(await reading)
        finally:
            raw.close()
        used = cpu_seconds(worker) - before
        figures = {"sent_mb": sent / 2**20, "worker_cpu_s": used}
        Summary("http.header_64mb", figures).report(record_property)
        assert_refused(answer, 431, "request_header_fields_too_large")
        # Answered early: what went out before is what the kernel buffers hold (a few MB on
        # loopback), not the 64 MB. Reading it all cost ~3 CPU seconds before the limit.
        assert sent < total // 4, sent
        assert used < 1.0, used

    async def test_100_000_header_fields_are_431(
        self, services: ServiceFactory, backend: Backend
    ) -> None:
        service = await start(services, backend)
        fields = b"".join(b"X-F%d: v\r\n" % i for i in range(100_000))
        raw = await Raw.open(service)
        try:
            reading = asyncio.create_task(raw.read_until_closed())
            with contextlib.suppress(ConnectionError):
                await raw.send(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                for offset in range(0, len(fields), CHUNK):
                    if raw.first_bytes.is_set():
                        break
                    await raw.send(fields[offset : offset + CHUNK])
            answer = parse(await reading)
        finally:
            raw.close()
        assert_refused(answer, 431, "request_header_fields_too_large")

    async def test_more_fields_than_the_limit_are_431_even_when_short(
        self, services: ServiceFactory, backend: Backend
    ) -> None:
        service = await start(services, backend, max_header_fields="20")
        at_limit = [(f"X-F{i}", "v") for i in range(18)]  # with Host and Connection: 20
        within = parse(await one_request(service, request_head(headers=at_limit), close=True))
        assert within.status == 200
        refused = parse(
            await one_request(service, request_head(headers=[*at_limit, ("X", "y"), ("Y", "z")]))
        )
        assert_refused(refused, 431, "request_header_fields_too_large")
        assert "20" in refused.json()["detail"]

    async def test_an_overlong_url_is_414(self, services: ServiceFactory, backend: Backend) -> None:
        service = await start(services, backend)
        path = "/v1/enrich?email=" + "a" * 9000
        answer = parse(await one_request(service, request_head(path)))
        assert_refused(answer, 414, "uri_too_long")

    async def test_a_malformed_request_is_400_json(
        self, services: ServiceFactory, backend: Backend
    ) -> None:
        service = await start(services, backend)
        answer = parse(await one_request(service, b"GET /healthz HTTP/1.1\r\nBad Header\r\n\r\n"))
        assert_refused(answer, 400, "bad_request")


async def one_request(service: Service, data: bytes, *, close: bool = False) -> bytes:
    """Everything the service sends back for ``data`` on a new connection, until it closes it
    (``close``: the request asks it to close after the answer)."""
    if close:
        data = data.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1)
    raw = await Raw.open(service)
    try:
        await raw.send(data)
        return await raw.read_until_closed()
    finally:
        raw.close()


class TestNormalRequests:
    async def test_8_kb_of_headers_and_the_enrich_fast_path_still_work(
        self, services: ServiceFactory, backend: Backend
    ) -> None:
        service = await start(services, backend)
        auth = await bearer_headers(service, backend.database_url)
        extra = {f"X-Trace-{i}": "t" * 200 for i in range(40)}  # ~8.6 KB
        async with httpx.AsyncClient(base_url=service.base_url, timeout=10) as http:
            health = await http.get("/healthz", headers=extra)
            # The same kept-alive connection: the second answer is an L1 hit.
            enrich = [
                await http.get("/v1/enrich?email=nobody%40example.com", headers={**auth, **extra})
                for _ in range(3)
            ]
            posted = await http.post(
                "/v1/enrich", json={"identifiers": {"email": "nobody@example.com"}}, headers=auth
            )
        assert health.status_code == 200
        assert [answer.status_code for answer in enrich] == [200, 200, 200]
        assert enrich[-1].json() == enrich[0].json()
        assert posted.status_code == 200


@on_sqlite
class TestSlowConnections:
    async def test_a_slowloris_is_answered_408_and_closed_after_the_header_timeout(
        self, services: ServiceFactory, backend: Backend
    ) -> None:
        service = await start(services, backend, **SHORT_TIMEOUTS)
        # A header byte every TRICKLE_SECONDS; and, after a request, blank lines (which begin
        # none).
        head = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "
        slow, blank = await Raw.open(service), await Raw.open(service)
        senders = [
            asyncio.create_task(trickle(slow, head, b"a")),
            asyncio.create_task(trickle(blank, request_head(), b"\r\n")),
        ]
        try:
            started = time.monotonic()
            received = await slow.read_until_closed()
            waited = time.monotonic() - started
            answered = await blank.read_until_closed()
        finally:
            for sender in senders:
                sender.cancel()
            slow.close()
            blank.close()
        assert_refused(parse(received), 408, "request_timeout")
        assert waited >= 0.9  # not before the timeout (1 s here; the timer starts after `started`)
        assert parse(answered).status == 200

    async def test_a_body_that_stalls_is_closed(
        self, services: ServiceFactory, backend: Backend
    ) -> None:
        service = await start(services, backend, **SHORT_TIMEOUTS)
        raw = await Raw.open(service)
        try:
            await raw.send(
                b"POST /oauth/token HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/x-www-form-urlencoded\r\n"
                b"Content-Length: 1000\r\n\r\ngrant_type=client_"
            )
            received = await raw.read_until_closed()
        finally:
            raw.close()
        assert_refused(parse(received), 408, "request_timeout")
        async with httpx.AsyncClient(base_url=service.base_url, timeout=10) as http:
            assert (await http.get("/healthz")).status_code == 200
        log = service.log_text()
        assert "Traceback" not in log, log

    async def test_64_idle_connections_are_closed(
        self, services: ServiceFactory, backend: Backend
    ) -> None:
        service = await start(services, backend, **SHORT_TIMEOUTS)
        silent = [await Raw.open(service) for _ in range(32)]  # connect, send nothing
        answered = []  # one request, then idle on a kept-alive connection
        for _ in range(32):
            raw = await Raw.open(service)
            await raw.send(request_head())
            answered.append(raw)
        try:
            received = await asyncio.gather(*(raw.read_until_closed() for raw in silent + answered))
        finally:
            for raw in silent + answered:
                raw.close()
        assert set(received[:32]) == {b""}  # nothing was asked, nothing is answered
        assert {parse(data).status for data in received[32:]} == {200}
        async with httpx.AsyncClient(base_url=service.base_url, timeout=10) as http:
            assert (await http.get("/healthz")).status_code == 200
