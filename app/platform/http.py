"""uvicorn's httptools protocol with one write per response instead of two, and limits on what a
caller may send before the application sees a request (``app/platform/http_limits.py``).

One write per response
----------------------
uvicorn writes the status line and headers as soon as the application sends
``http.response.start``, then the body in a second ``write``. On a socket with TCP_NODELAY each
write is a system call and a TCP segment of its own, and the client wakes up twice. For an
enrich answer of 1-2 KB served from memory that second write is a large part of the whole
cost (see docs/design.md, the hot path, and docs/benchmarks.md for the figures).

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

import httptools
import structlog
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from app.core.certs import CERT_DER_KEY, CERT_KEY, thumbprint
from app.platform.http_limits import (
    LINGER_BYTES,
    LINGER_SECONDS,
    HttpLimits,
    Refusal,
    body_stalled,
    head_late,
    head_too_large,
    not_http,
    refusal_response,
    too_many_fields,
    url_too_long,
)

log = structlog.get_logger(__name__)


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
    """``HttpToolsProtocol`` writing through a ``CoalescingTransport``, enforcing ``HttpLimits``,
    and closing idle connections a moment after a shutdown begins rather than at once.

    uvicorn closes a kept-alive connection that has no request in progress the moment it
    shuts down. A request its client sent just before (still in the socket, not read yet)
    is then lost with the connection, and the client sees it closed under it. Here such a
    connection stays open for ``IDLE_CLOSE_GRACE_SECONDS`` (uvicorn waits 0.1 s after asking
    its connections to shut down anyway): a request that arrives meanwhile is answered with
    ``Connection: close``, then the connection closes.

    ``enrich serve`` passes the limits from the settings (``functools.partial``: the protocol
    class must stay importable for uvicorn's worker processes).
    """

    # The limits' state in slots: uvicorn's 28 attributes nearly fill the 30 keys CPython
    # shares between instances' dicts, past which every attribute read of the protocol is
    # slower (in a parse benchmark on a busy machine, slots took ~0.5 us a request off).
    __slots__ = (
        "_body_seen",
        "_body_timer",
        "_cert",
        "_dropped",
        "_head_begun",
        "_head_read",
        "_head_timer",
        "_linger_timer",
        "_message_ended",
        "_reading_head",
        "_refused",
        "limits",
    )

    _stopping = False

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        limits: HttpLimits | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = limits or HttpLimits()
        self._reading_head = True  # the next bytes read belong to a request head
        self._head_begun = False  # a head has begun and not ended
        self._message_ended = False  # a request ended during the current parse
        self._head_read = 0  # bytes of the current head read so far, counted per read
        self._body_seen = 0.0  # when a byte of the current body last came
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._linger_timer: asyncio.TimerHandle | None = None
        self._refused = False  # answered by the protocol: the rest is dropped
        self._dropped = 0
        self._cert: str | None = None  # the client certificate's thumbprint (TLS), if any
        self._cert_der: bytes | None = None  # and the certificate

    # -- the connection ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        # The certificate the caller presented when the server terminates TLS: once per
        # connection, into each request's scope (app/core/certs.py).
        tls = transport.get_extra_info("ssl_object")
        if tls is not None and (der := tls.getpeercert(binary_form=True)):
            self._cert, self._cert_der = thumbprint(der), der
        coalescing = CoalescingTransport(transport, self.loop, self.tasks)
        super().connection_made(coalescing)  # type: ignore[arg-type]
        # A caller that connects and sends nothing is closed when a head would have been late.
        self._time_head()

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._head_timer, self._body_timer, self._linger_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = self._linger_timer = None
        super().connection_lost(exc)

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

    # -- reading ----------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        self._unset_keepalive_if_required()
        if self._refused:
            self._drop(len(data))
        elif self._reading_head and self._head_read + len(data) > self.limits.max_header_bytes:
            self._parse_to_limit(data)
        else:
            self._parse(data)

    def _parse_to_limit(self, data: bytes) -> None:
        """Parse a read that takes the head past the limit if the head does not end in it.

        The head may end within the limit with a body (or the next request) after it: parse
        up to the limit, and refuse a head that goes on past it.
        """
        limit = self.limits.max_header_bytes
        view = memoryview(data)
        while self._reading_head and len(view) > limit - self._head_read:
            room = limit - self._head_read
            if not self._parse(view[:room]):
                return
            if self._reading_head and self._head_read >= limit:
                self._refuse(head_too_large(self.limits))
                return
            view = view[room:]
        if view:
            self._parse(view)

    def _parse(self, data: bytes | memoryview) -> bool:
        """Feed the parser, then time what is still to come; False once the connection takes
        no more requests."""
        self._message_ended = False
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            refusal = exc.__context__
            self._refuse(refusal if isinstance(refusal, Refusal) else not_http())
            return False
        except httptools.HttpParserError:
            self._refuse(not_http())
            return False
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return False
        if self._reading_head:
            if not self._message_ended:  # part of a head, or blank lines that begin none
                self._head_read += len(data)
                if self._head_timer is None:
                    self._time_head()
            elif self._head_begun and self._head_timer is None:  # the next request's, begun
                self._time_head()
            # else, the usual case: whole requests, nothing more to wait for
        else:  # within a body
            self._body_seen = self.loop.time()
            if self._body_timer is None:
                timeout = self.limits.body_timeout
                self._body_timer = self.loop.call_later(timeout, self._body_stalled)
        return True

    def _time_head(self) -> None:
        self._head_timer = self.loop.call_later(self.limits.header_timeout, self._head_late)

    # -- parser callbacks -------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_begun = True
        if self._cert is not None:
            self.scope[CERT_KEY] = self._cert  # type: ignore[literal-required]
            self.scope[CERT_DER_KEY] = self._cert_der  # type: ignore[literal-required]

    def on_headers_complete(self) -> None:
        self._reading_head = self._head_begun = False
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        # What the byte count per read does not see (raised, this stops the parser).
        if len(self.url) > self.limits.max_url_bytes:
            raise url_too_long(self.limits)
        if len(self.headers) > self.limits.max_header_fields:
            raise too_many_fields(self.limits)
        if self._message_ended:
            self._check_head_size()
        super().on_headers_complete()
        if self._stopping and self.cycle is not None:
            self.cycle.keep_alive = False

    def _check_head_size(self) -> None:
        """The size of a head that began in the middle of a read, after the end of the request
        before it (pipelining), which the count per read does not see."""
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if size > self.limits.max_header_bytes:
            raise head_too_large(self.limits)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._reading_head = self._message_ended = True
        self._head_read = 0
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
            cycle = self.cycle
            if cycle.response_complete and self.timeout_keep_alive_task is None:
                # Answered before its body ended: the body's bytes stopped uvicorn's idle
                # timeout, and nothing else would start it again.
                self.timeout_keep_alive_task = self.loop.call_later(
                    self.timeout_keep_alive, self.timeout_keep_alive_handler
                )

    # -- timeouts ---------------------------------------------------------------------------

    def _head_late(self) -> None:
        self._head_timer = None
        if self._refused or self.transport.is_closing():
            return
        if self._head_begun:
            self._refuse(head_late(self.limits))
        elif self.cycle is None or self.cycle.response_complete:
            self.transport.close()  # connected (or answered) and sent no request since

    def _body_stalled(self) -> None:
        self._body_timer = None
        if self._reading_head or self._refused or self.transport.is_closing():
            return
        now = self.loop.time()
        if self.flow.read_paused:  # the application has not taken what came yet
            self._body_seen = now
        timeout = self.limits.body_timeout
        waited = now - self._body_seen
        if waited < timeout:
            self._body_timer = self.loop.call_later(timeout - waited, self._body_stalled)
            return
        if self.cycle is not None and not self.cycle.response_started:
            self._answer_and_close(body_stalled(self.limits))
        else:
            self._log_refusal(408, "request_timeout")
            self._refused = True
            self.transport.close()

    # -- refusing ---------------------------------------------------------------------------

    def _refuse(self, refusal: Refusal) -> None:
        """Answer ``refusal`` and close; read nothing more of this connection's requests."""
        if self.cycle is not None and not self.cycle.response_complete:
            # An earlier request on this connection is still being answered (pipelining):
            # it is the last, and the connection closes after its answer.
            self._log_refusal(refusal.status, refusal.error)
            self._refused = True
            self.cycle.keep_alive = False
            return
        self._answer_and_close(refusal)

    def _answer_and_close(self, refusal: Refusal) -> None:
        self._log_refusal(refusal.status, refusal.error)
        self._refused = True
        for timer in (self._head_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = None
        self.transport.write(refusal_response(refusal, self.server_state.default_headers))
        if self.transport.can_write_eof():
            self.transport.write_eof()  # the caller reads the answer, then the end
        self._linger_timer = self.loop.call_later(LINGER_SECONDS, self._close)

    def _drop(self, size: int) -> None:
        self._dropped += size
        if self._dropped > LINGER_BYTES:
            # Enough: what comes now waits in the kernel until the linger ends. Closing now
            # would reset the connection, and a caller still sending might lose the answer.
            self.flow.pause_reading()

    def _close(self) -> None:
        if not self.transport.is_closing():
            self.transport.close()

    def _log_refusal(self, status: int, error: str) -> None:
        client = self.client[0] if self.client else None
        log.warning("http.refused", status=status, error=error, client=client)
