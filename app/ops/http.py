"""uvicorn's httptools protocol with one write per response instead of two.

uvicorn writes the status line and headers as soon as the application sends
``http.response.start``, then the body in a second ``write``. On a socket with TCP_NODELAY each
write is a system call and a TCP segment of its own, and the client wakes up twice. For an
enrich answer of 1-2 KB served from memory that second write is a large part of the whole
cost (see the README's Hot path section for the figures).

Here the writes a response makes within one event-loop iteration are joined and handed to the
socket once, at the end of that iteration: under load the answers of every request handled in
an iteration leave back to back, their callers' next requests arrive together and are read in
one wake-up (worth ~20 % of L1-hit throughput over writing each answer at once). When the
server is handling just one request there is nothing to batch with, and the second write sends
both parts at once. Nothing waits longer than the current iteration; closing or aborting the
connection flushes (or drops) what is pending first, in order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sized
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class CoalescingTransport:
    """A transport whose writes within one loop iteration leave as one ``write``."""

    __slots__ = ("_active", "_loop", "_pending", "_transport")

    def __init__(
        self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop, active: Sized
    ) -> None:
        self._transport = transport
        self._loop = loop
        self._active = active  # the requests the server is handling now
        self._pending: list[bytes] | None = None

    def write(self, data: bytes) -> None:
        pending = self._pending
        if pending is None:
            self._pending = [data]
            self._loop.call_soon(self._flush)
        elif len(self._active) > 1:
            pending.append(data)
        else:
            # The only request in the server: nothing to send alongside, so no reason to
            # wait for the end of the iteration (it would cost a lone caller ~15 us).
            self._pending = None
            pending.append(data)
            self._transport.write(b"".join(pending))

    def _flush(self) -> None:
        pending = self._pending
        self._pending = None
        if pending and not self._transport.is_closing():
            self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.write(chunk)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

    def abort(self) -> None:
        self._pending = None
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        pending = self._pending
        extra = sum(len(chunk) for chunk in pending) if pending else 0
        return self._transport.get_write_buffer_size() + extra

    def __getattr__(self, name: str) -> Any:
        # Everything else (is_closing, pause_reading, get_extra_info, ...) is the socket's.
        return getattr(self._transport, name)


# How long an idle kept-alive connection stays open after the server is told to stop.
IDLE_CLOSE_GRACE_SECONDS = 0.05


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` writing through a ``CoalescingTransport``, and closing idle
    connections a moment after a shutdown begins rather than at once.

    uvicorn closes a kept-alive connection that has no request in progress the moment it
    shuts down. A request its client sent just before (still in the socket, not read yet)
    is then lost with the connection, and the client sees it closed under it. Here such a
    connection stays open for ``IDLE_CLOSE_GRACE_SECONDS`` (uvicorn waits 0.1 s after asking
    its connections to shut down anyway): a request that arrives meanwhile is answered with
    ``Connection: close``, then the connection closes.
    """

    _stopping = False

    def shutdown(self) -> None:
        self._stopping = True
        if self.cycle is None or self.cycle.response_complete:
            self.loop.call_later(IDLE_CLOSE_GRACE_SECONDS, self._close_if_idle)
        else:
            self.cycle.keep_alive = False

    def _close_if_idle(self) -> None:
        if self.cycle is None or self.cycle.response_complete:
            if not self.transport.is_closing():
                self.transport.close()
        else:
            self.cycle.keep_alive = False  # a request came in: it closes when answered

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        if self._stopping and self.cycle is not None:
            self.cycle.keep_alive = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        coalescing = CoalescingTransport(transport, self.loop, self.tasks)
        super().connection_made(coalescing)  # type: ignore[arg-type]
