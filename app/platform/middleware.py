"""Pure ASGI middleware (no BaseHTTPMiddleware on the request path)."""

from __future__ import annotations

import asyncio
import itertools
import secrets
import time

import orjson
import structlog
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.addresses import FORWARDED_KEY, NetworkSet, forwarded_client
from app.core.errors import AppError, BodyTooLargeError, InternalError, database_answer
from app.platform.logging import (
    FLUSH_SECONDS,
    AccessLog,
    correlation_id_var,
    exception_fields,
    request_id_var,
)
from app.platform.metrics import ROUTE_UNMATCHED, AccessRecord, RequestMetrics

# A response header (name, value).
Header = tuple[bytes, bytes]

# Where a request's authenticated client_id is left for the access line.
CLIENT_ID_KEY = "enrich.client_id"
# Why an enrich answer held no personal data, for the access line (set by the enrich route).
CONSENT_KEY = "enrich.consent"


class BodyLimitMiddleware:
    """Refuse bodies over the limit with 413, before they are buffered.

    A declared Content-Length over the limit is refused at once; a chunked body is counted as
    it arrives and refused as soon as it passes the limit.
    """

    def __init__(self, app: ASGIApp, default_limit: int, limits: dict[str, int]) -> None:
        self.app = app
        self.default_limit = default_limit
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limits.get(scope["path"], self.default_limit)
        for name, value in scope["headers"]:
            if name == b"content-length":
                if not value.isdigit() or int(value) > limit:
                    await _too_large(send, limit)
                    return
                break
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLargeError(limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLargeError:
            if started:
                raise
            await _too_large(send, limit)
        except ClientDisconnect:
            pass  # the caller left (or stalled and was cut) mid-body: nobody to answer


async def _too_large(send: Send, limit: int) -> None:
    body = orjson.dumps(
        {"error": "payload_too_large", "detail": f"request body exceeds {limit} bytes"}
    )
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


log = structlog.get_logger(__name__)


async def answer_unhandled(exc: Exception, scope: Scope, send: Send, *, started: bool) -> None:
    """Answer an exception no handler took, and log it as one line.

    A database error gets its documented answer (``database_answer``: 503 with Retry-After,
    409); anything else is a bug: 500. The line names the error's type, SQLSTATE and frames,
    the request id, method and route; never the error's text (a statement's values). The
    exception goes no further: the server would log it again, text and all.
    """
    fields = exception_fields(exc)
    where = {"method": scope.get("method"), "route": route_template(scope)}
    answer: AppError | None = database_answer(exc)
    if answer is None:
        log.error("request.failed", **where, **fields)
        answer = InternalError()
    else:
        del fields["frames"]  # expected: the type says it
        event = "database.unavailable" if answer.status_code == 503 else "database.conflict"
        log.warning(event, **where, **fields)
    if started:
        return  # too late for an answer: the server closes the connection
    body = orjson.dumps({"error": answer.code, "detail": answer.message})
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    headers += [(k.lower().encode(), v.encode()) for k, v in (answer.headers or {}).items()]
    await send({"type": "http.response.start", "status": answer.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def route_template(scope: Scope) -> str:
    """The matched route's template (set by the router), for logs and metrics."""
    route = scope.get("route")
    if route is None:
        return ROUTE_UNMATCHED
    template: str = getattr(route, "path_format", ROUTE_UNMATCHED)
    return template


# Request ids: random per process, then counted (32 hex digits). They need to be unique, not
# secret, and uuid4 reads the system's entropy source for every request.
_ID_PREFIX = secrets.token_hex(10)
_ids = itertools.count(1)
# The longest request or correlation id taken from a caller (longer ones are cut).
ID_MAX = 128


# Requests recorded before their access lines and metrics are made (in one go): a batch is
# drained when it is this big, or FLUSH_SECONDS after its first request.
RECORD_BATCH = 64


class Access:
    """What every request owes the logs and metrics: its caller's address, a request id, and
    after the answer one access line and the request metrics. Shared by ``AccessMiddleware``
    and the enrich fast path (which runs outside the middleware stack).

    A request only appends a tuple to a list (``record``); lines and metrics are made for a
    batch at a time (``drain``), which costs an L1 hit a third of what doing it per request
    did (docs/design.md, hot path). A batch waits at most FLUSH_SECONDS, and a scrape of /metrics
    and the end of the process drain it first.
    """

    def __init__(
        self,
        *,
        trusted_proxies: NetworkSet,
        access_log: AccessLog | None,
        metrics: RequestMetrics | None,
    ) -> None:
        self.trusted = trusted_proxies
        self.access_log = access_log
        self.metrics = metrics
        self.recording = access_log is not None or metrics is not None
        self._records: list[AccessRecord] = []
        # Readable development lines are written at once, in order with everything else.
        self._batch = 1 if access_log is not None and not access_log.json else RECORD_BATCH
        self._timer: asyncio.TimerHandle | None = None
        if metrics is not None:
            metrics.add_source(self)

    @staticmethod
    def request_id(given: bytes, correlation: str | None = None) -> str:
        """The caller's X-Request-ID when it is usable, else its X-Correlation-Id (already
        checked by ``correlation_id``), else a new one."""
        if given:
            candidate = given.decode("latin-1")[:ID_MAX]
            if candidate.isprintable():
                return candidate
        if correlation:
            return correlation
        return "%s%012x" % (_ID_PREFIX, next(_ids))  # noqa: UP031 (faster than an f-string)

    @classmethod
    def ids(cls, given: bytes, correlation: bytes) -> tuple[str, str | None, list[Header]]:
        """The request id, the correlation id (None when none usable came) and the headers that
        echo them, from the request's X-Request-ID and X-Correlation-Id."""
        correlation_id = cls.correlation_id(correlation) if correlation else None
        request_id = cls.request_id(given, correlation_id)
        headers = [(b"x-request-id", request_id.encode("latin-1"))]
        if correlation_id is not None:
            headers.append((b"x-correlation-id", correlation_id.encode("latin-1")))
        return request_id, correlation_id, headers

    @staticmethod
    def correlation_id(given: bytes) -> str | None:
        """The caller's X-Correlation-Id when it is usable (cut to ID_MAX characters, printable),
        else None: it is neither echoed nor logged."""
        if given:
            candidate = given.decode("latin-1")[:ID_MAX]
            if candidate.isprintable():
                return candidate
        return None

    def forward(self, scope: Scope, forwarded: list[bytes]) -> None:
        """Replace ``scope["client"]`` with the caller behind a trusted proxy, if any."""
        client = scope.get("client")
        if forwarded and self.trusted and client and client[0] in self.trusted:
            header = b",".join(forwarded).decode("latin-1")
            scope["client"] = (forwarded_client(client[0], header, self.trusted), client[1])
            scope[FORWARDED_KEY] = True

    def record(
        self,
        scope: Scope,
        request_id: str,
        template: str,
        status: int,
        started: float,
        cache: str | None,
        correlation_id: str | None = None,
        consent: str | None = None,
    ) -> None:
        ended = time.perf_counter()
        address = scope.get("client")
        records = self._records
        records.append(
            (
                ended,
                ended - started,
                request_id,
                scope.get(CLIENT_ID_KEY),
                scope["method"],
                template,
                status,
                cache,
                address[0] if address else None,
                correlation_id,
                consent,
            )
        )
        if len(records) >= self._batch:
            self.drain()  # the timer, if armed, finds the next batch
        elif self._timer is None:
            try:
                self._timer = asyncio.get_running_loop().call_later(FLUSH_SECONDS, self._tick)
            except RuntimeError:  # no event loop: now
                self.drain()

    def _tick(self) -> None:
        self._timer = None
        self.drain()

    def drain(self) -> None:
        """Make the access lines and metrics of the requests recorded so far."""
        records = self._records
        if not records:
            return
        self._records = []
        if self.metrics is not None:
            self.metrics.observe_all(records)
        if self.access_log is not None:
            self.access_log.write_all(records)


class AccessMiddleware:
    """The caller's address and the request id; then the access line and metrics.

    - ``X-Forwarded-For`` is read only when the connection comes from a trusted proxy; the
      caller's address then replaces ``scope["client"]``, so everything downstream (allowlists,
      the token endpoint's lockout) sees the same address.
    - ``X-Request-ID`` is taken from the request (or made up), bound for the logs and echoed.
      Without one, an ``X-Correlation-Id`` (what Personalize sends) is the request id; it is
      echoed as itself too, and named on the access line, the logs and the audit.
    - After the answer: one access line and the request metrics, labelled by route template
      (``scope["route"]``, set by the router).
    """

    def __init__(self, app: ASGIApp, *, access: Access) -> None:
        self.app = app
        self.access = access
        self.access_log = access.access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan" and self.access_log is not None:
                await self.app(scope, receive, self._flushing_at_shutdown(send))
                return
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        given = correlation = b""
        forwarded: list[bytes] = []
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                given = value
            elif name == b"x-forwarded-for":
                forwarded.append(value)
            elif name == b"x-correlation-id":
                correlation = value
        access = self.access
        request_id, correlation_id, id_headers = access.ids(given, correlation)
        access.forward(scope, forwarded)
        token = request_id_var.set(request_id)
        correlated = correlation_id_var.set(correlation_id or "")
        status = 500  # until an answer says otherwise
        started_response = False
        cache: str | None = None

        async def send_with_id(message: Message) -> None:
            nonlocal status, cache, started_response
            if message["type"] == "http.response.start":
                started_response = True
                status = message["status"]
                headers = message.get("headers", [])
                for name, value in headers:
                    if name == b"x-cache":
                        cache = value.decode("latin-1")
                message["headers"] = [*headers, *id_headers]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            await answer_unhandled(exc, scope, send_with_id, started=started_response)
        finally:
            request_id_var.reset(token)
            correlation_id_var.reset(correlated)
            if access.recording:
                template = route_template(scope)
                consent = scope.get(CONSENT_KEY)
                access.record(
                    scope, request_id, template, status, started, cache, correlation_id, consent
                )

    def _flushing_at_shutdown(self, send: Send) -> Send:
        access = self.access

        async def send_and_flush(message: Message) -> None:
            if message["type"].startswith("lifespan.shutdown"):
                access.drain()  # the last lines before the process ends
            await send(message)

        return send_and_flush
