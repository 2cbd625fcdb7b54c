"""One write per response: the coalescing transport under uvicorn's protocol."""

from __future__ import annotations

import asyncio

import httpx

from app.platform.http import CoalescingTransport
from tests.conftest import Backend
from tests.fixtures.servers import ServiceFactory

PATHS = (b"healthz", b"openapi.json", b"healthz")


class RecordingTransport:
    """Stands for the socket's transport: what was written, in which calls."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False
        self.aborted = False
        self.buffered = 0

    def write(self, data: bytes) -> None:
        assert not self.closed
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = self.closed = True

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def get_extra_info(self, name: str) -> str:
        return f"info:{name}"


def wrap(requests: int = 2) -> tuple[CoalescingTransport, RecordingTransport]:
    """A transport under a server handling ``requests`` requests at the moment."""
    inner = RecordingTransport()
    active = list(range(requests))
    transport = CoalescingTransport(inner, asyncio.get_running_loop(), active)  # type: ignore[arg-type]
    return transport, inner


async def test_headers_and_body_written_together_leave_in_one_write() -> None:
    transport, inner = wrap()
    transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    transport.write(b"{}")
    assert inner.writes == []  # not before the end of this iteration
    await asyncio.sleep(0)
    assert inner.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]


async def test_the_only_request_in_the_server_sends_both_parts_at_once() -> None:
    transport, inner = wrap(requests=1)
    transport.write(b"head")
    assert inner.writes == []
    transport.write(b"body")
    assert inner.writes == [b"headbody"]  # nothing to batch with: no wait
    await asyncio.sleep(0)
    assert inner.writes == [b"headbody"]


async def test_writes_in_later_iterations_follow_in_order() -> None:
    transport, inner = wrap()
    transport.write(b"a")
    await asyncio.sleep(0)
    transport.write(b"b")
    transport.writelines([b"c", b"d"])
    await asyncio.sleep(0)
    assert inner.writes == [b"a", b"bcd"]


async def test_close_sends_what_is_pending_first_and_abort_drops_it() -> None:
    transport, inner = wrap()
    transport.write(b"last words")
    transport.close()
    assert inner.writes == [b"last words"]
    assert inner.closed
    await asyncio.sleep(0)
    assert inner.writes == [b"last words"]  # the scheduled flush finds nothing left

    transport, inner = wrap()
    transport.write(b"never")
    transport.abort()
    await asyncio.sleep(0)
    assert inner.writes == []
    assert inner.aborted


async def test_the_rest_of_the_transport_is_the_sockets() -> None:
    transport, inner = wrap()
    inner.buffered = 10
    transport.write(b"12345")
    assert transport.get_write_buffer_size() == 15
    assert transport.get_extra_info("peername") == "info:peername"
    assert transport.is_closing() is False


async def test_enrich_serve_answers_pipelined_and_large_responses_whole(
    services: ServiceFactory, backend: Backend
) -> None:
    service = await services.start(
        backend.database_url, backend.redis_url, redis_prefix=backend.redis_prefix
    )
    async with httpx.AsyncClient(base_url=service.base_url, timeout=10) as http:
        document = await http.get("/openapi.json")  # ~100 KB: more than one socket write
        answers = [await http.get("/healthz") for _ in range(20)]  # one kept-alive connection
    assert document.status_code == 200
    assert document.json()["paths"]["/v1/enrich"]
    assert {answer.status_code for answer in answers} == {200}
    host, port = service.base_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        # Three requests in one packet: three whole answers, in order.
        writer.write(b"".join(b"GET /%s HTTP/1.1\r\nHost: x\r\n\r\n" % p for p in PATHS))
        await writer.drain()
        for path in PATHS:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            assert head.startswith(b"HTTP/1.1 200 "), (path, head)
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            body = await asyncio.wait_for(reader.readexactly(length), 10)
            assert body.startswith(b"{"), (path, body[:80])
    finally:
        writer.close()
