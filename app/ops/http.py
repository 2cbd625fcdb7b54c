"""uvicorn's httptools protocol with one write per response instead of two.

uvicorn writes the status line and headers as soon as the application sends
``http.response.start``, then the body in a second ``write``. On a socket with TCP_NODELAY each
write is a system call and a TCP segment of its own, and the client wakes up twice. For an
enrich answer of 1-2 KB served from memory that second write is a large part of the whole
cost (see the README's Hot path section for the figures).

Here a write is held back until the next one, which then sends both in one call: the head and
body of an answer leave together, at once. A write nothing follows leaves at the end of the
event-loop iteration it was made in. Closing or aborting the connection flushes (or drops)
what is pending first, in order.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class CoalescingTransport:
    """A transport that holds a write back until the next one, or the end of the iteration.

    An answer is two writes in a row (head, then body): the second sends both at once, with
    no wait. A write with no follower (a streamed response's head) leaves at the end of the
    loop iteration it was made in.
    """

    __slots__ = ("_loop", "_pending", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: bytes | None = None

    def write(self, data: bytes) -> None:
        pending = self._pending
        if pending is None:
            self._pending = bytes(data)
            self._loop.call_soon(self._flush)
        else:
            self._pending = None
            self._transport.write(pending + data)

    def _flush(self) -> None:
        pending = self._pending
        if pending is not None:
            self._pending = None
            if not self._transport.is_closing():
                self._transport.write(pending)

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
        return self._transport.get_write_buffer_size() + (len(pending) if pending else 0)

    def __getattr__(self, name: str) -> Any:
        # Everything else (is_closing, pause_reading, get_extra_info, ...) is the socket's.
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` writing through a ``CoalescingTransport``."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]
