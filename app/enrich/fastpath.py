"""The enrich fast path: a pure ASGI handler in front of FastAPI for well-formed requests.

FastAPI's routing, dependency injection and validation cost more than the whole answer when it
comes from L1 (see the README's benchmark section). This handler serves the common case
directly: a token this process has verified before, with the ``profiles:read`` scope, and a
well-formed JSON body or query. Anything else (a new token, a missing scope, a malformed body,
an invalid identifier type) falls through, unchanged, to the FastAPI route, which answers it
and is what the OpenAPI document describes. Both paths share the cache and the answer code.
"""

from __future__ import annotations

import gzip
import time
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.auth.guard import Guard
from app.auth.tokens import InvalidTokenError, TokenVerifier
from app.core.errors import AppError, InternalError, ServiceUnavailableError
from app.enrich.cache.l1 import Entry, L1Cache
from app.enrich.cache.store import EnrichCache
from app.enrich.fields import Selection, parse_fields
from app.enrich.router import GZIP_MIN_BYTES, accepts_gzip, query_items
from app.enrich.schemas import MAX_IDENTIFIERS
from app.identity.identifiers import Key, lookup_keys
from app.platform.logging import request_id_var
from app.platform.middleware import CLIENT_ID_KEY, Access
from app.platform.ratelimit import PENDING
from app.platform.sizes import DICT_SLOT_BYTES, footprint

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class FastParts:
    """What the fast path needs of the process's parts (app.runtime builds it)."""

    verifier: TokenVerifier
    guard: Guard
    cache: EnrichCache
    phone_region: str


class HostApp(Protocol):
    """The application the fast path stands in front of (app.main.EnrichAPI)."""

    fast_parts: FastParts | None


PATH = "/v1/enrich"
SCOPE = "profiles:read"
REQUEST_MEMBERS = frozenset(("identifiers", "fields"))
# The parsed form of a request is remembered only for a body (or query string) of at most
# this many bytes: Personalize's are 100-400. A larger one, or one padded to look new, is
# parsed every time instead of growing the table.
PARSED_KEY_MAX_BYTES = 1024
# What the remembered requests may hold in all, each counted as its bytes plus its parsed form
# (cleared when full). A typical entry is ~2 KB, so this holds ~8,000 distinct requests.
PARSED_MAX_BYTES = 16 * 1_048_576
_BASE_HEADERS = ((b"content-type", b"application/json"), (b"vary", b"Accept-Encoding"))
# Accept-Encoding values already judged (bounded: cleared when full); only short ones (real
# browsers and HTTP clients send under 100 bytes), so the table stays under 256 KB.
ACCEPT_ENCODINGS_MAX = 1000
ACCEPT_ENCODING_MAX_BYTES = 256
_GZIP_ACCEPTED: dict[bytes, bool] = {}
_GZIPPED = (b"content-encoding", b"gzip")
# The headers every answer from a level starts with (built once).
_HEADERS = {
    level: (*_BASE_HEADERS, (b"x-cache", level.encode())) for level in ("hit", "miss", "stale")
}


class EnrichFastPath:
    """The outermost ASGI layer: enrich requests it can serve, end to end; the rest to ``app``.

    It sits outside FastAPI's middleware stack, so it does itself what that stack does for
    every request: the body limit (anything over it falls through and is refused there), the
    caller's address behind trusted proxies, the request id, the access line and metrics
    (``app.platform.middleware.Access``), and a JSON 500 should anything fail.
    """

    def __init__(
        self, app: ASGIApp, fastapi_app: HostApp, *, access: Access, body_limit: int
    ) -> None:
        self.app = app
        self.fastapi_app = fastapi_app
        self.access = access
        self.body_limit = body_limit
        self._parsed: dict[tuple[str, bytes], tuple[tuple[Key, ...], Selection]] = {}
        self._parsed_bytes = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Called for http requests to PATH only (see app.main.EnrichAPI).
        method = scope["method"]
        parts = self.fastapi_app.fast_parts
        if parts is None or method not in ("POST", "GET"):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter() if self.access.recording else 0.0
        authorization = content_type = accept_encoding = given_id = b""
        length: bytes | None = None
        forwarded: list[bytes] = []
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value
            elif name == b"content-type":
                content_type = value
            elif name == b"accept-encoding":
                accept_encoding = value
            elif name == b"content-length":
                length = value
            elif name == b"x-request-id":
                given_id = value
            elif name == b"x-forwarded-for":
                forwarded.append(value)
        if length is not None and (not length.isdigit() or int(length) > self.body_limit):
            await self.app(scope, receive, send)  # the stack answers 413
            return
        body = b""
        if method == "POST":
            message = await receive()
            if message["type"] == "http.request" and not message.get("more_body", False):
                body = message.get("body", b"")  # the common case: the whole body at once
                more, other = False, None
            else:
                body, more, other = await _buffer(receive, message, self.body_limit)
            if more or other is not None or len(body) > self.body_limit:
                # Over the limit, or a disconnect: the stack sees the same messages.
                await self.app(scope, _replay(receive, body, more, other), send)
                return
        try:
            principal = parts.verifier.bearer(authorization)
        except InvalidTokenError:
            principal = None  # the route answers 401
        if principal is None or SCOPE not in principal.scopes:
            await self.app(scope, _replay(receive, body, False, None), send)
            return
        # Normalizing a request is a pure function of its bytes: remember it, so a repeated
        # request (Personalize asks for the same guests all day) skips parsing entirely.
        raw = (method, body if method == "POST" else scope.get("query_string", b""))
        parsed = self._parsed.get(raw)
        if parsed is None:
            parsed = self._parse(parts, method, body, content_type, raw[1])
            if parsed is None:
                # The route renders the 4xx.
                await self.app(scope, _replay(receive, body, False, None), send)
                return
            if len(raw[1]) <= PARSED_KEY_MAX_BYTES:
                self._remember(raw, parsed)
        # From here on the request is served here: it is this layer's to log and count.
        access = self.access
        request_id = access.request_id(given_id)
        if forwarded:
            access.forward(scope, forwarded)
        id_header = (b"x-request-id", request_id.encode("latin-1"))
        status: int = 200
        level: str | None = None  # where the answer came from, for the access line
        answered = False
        try:
            keys, selection = parsed
            # The allowlist and the rate limit; a request that fell through above meets them
            # in the route (require_scope), so none is counted twice.
            scope[CLIENT_ID_KEY] = client_id = principal.client_id
            client = scope.get("client")
            verdict = parts.guard.admit(client_id, client[0] if client else None)
            if verdict is not None:
                if verdict is PENDING:
                    verdict = await parts.guard.admit_later(client_id)
                if isinstance(verdict, AppError):
                    status = verdict.status_code
                    await _send_error(send, verdict, id_header)
                    return
            cache = parts.cache
            entry = cache.l1_hit(keys, selection)
            served_from = "hit"
            if entry is not None:
                answer = entry.body
            else:
                token = request_id_var.set(request_id)  # for what the cache may log
                try:
                    answer, served_from = await cache.answer(keys, selection)
                except ServiceUnavailableError as exc:
                    status = exc.status_code
                    await _send_error(send, exc, id_header)
                    return
                finally:
                    request_id_var.reset(token)
            level = served_from
            start, message = _response(
                answer, served_from, accept_encoding, id_header, entry, cache.l1
            )
            answered = True
            await send(start)
            await send(message)
        except Exception:
            log.exception("enrich.fast_path_failed")
            status, level = 500, None
            if answered:
                raise  # too late for an error answer: the server closes the connection
            await _send_error(send, InternalError(), id_header)
        finally:
            if access.recording:
                access.record(scope, request_id, PATH, status, started, level)

    def _remember(self, raw: tuple[str, bytes], parsed: tuple[tuple[Key, ...], Selection]) -> None:
        size = footprint(raw) + footprint(parsed) + DICT_SLOT_BYTES
        if self._parsed_bytes + size > PARSED_MAX_BYTES:
            self._parsed.clear()
            self._parsed_bytes = 0
        self._parsed[raw] = parsed
        self._parsed_bytes += size

    @staticmethod
    def _parse(
        parts: FastParts, method: str, body: bytes, content_type: bytes, query: bytes
    ) -> tuple[tuple[Key, ...], Selection] | None:
        request = _from_json(body, content_type) if method == "POST" else _from_query(query)
        if request is None:
            return None
        try:
            keys = lookup_keys(request[0], parts.phone_region)
            selection = parse_fields(request[1])
        except AppError:
            return None
        return tuple(keys), selection


async def _buffer(
    receive: Receive, message: Message, limit: int
) -> tuple[bytes, bool, Message | None]:
    """Read the rest of a body that did not come in one ``message``, until it ends or passes
    ``limit``: the bytes read, whether more is to come, and the message that stopped the
    reading if it was not a body (a disconnect)."""
    if message["type"] != "http.request":
        return b"", False, message
    body = message.get("body", b"")
    more = message.get("more_body", False)
    chunks = [body]
    size = len(body)
    while more and size <= limit:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks), False, message
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        more = message.get("more_body", False)
    return b"".join(chunks), more, None


def _replay(receive: Receive, body: bytes, more: bool, other: Message | None) -> Receive:
    """A ``receive`` that hands over again what ``_buffer`` read, then what follows."""
    pending: list[Message] = []
    if body or other is None:
        pending.append({"type": "http.request", "body": body, "more_body": more})
    if other is not None:
        pending.append(other)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay


def _from_json(body: bytes, content_type: bytes) -> tuple[dict[str, Any], Any] | None:
    if not content_type.split(b";")[0].strip().lower() == b"application/json":
        return None
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(document, dict) or not document.keys() <= REQUEST_MEMBERS:
        return None
    identifiers = document.get("identifiers")
    fields = document.get("fields")
    if not isinstance(identifiers, dict) or len(identifiers) > MAX_IDENTIFIERS:
        return None
    if not (
        fields is None
        or isinstance(fields, str)
        or (isinstance(fields, list) and all(isinstance(f, str) for f in fields))
    ):
        return None
    return identifiers, fields


def _from_query(query_string: bytes) -> tuple[dict[str, Any], Any] | None:
    identifiers: dict[str, str] = {}
    fields: list[str] = []
    try:
        pairs = query_items(query_string)
    except ValueError:
        return None
    for name, value in pairs:
        if name.strip().lower() == "fields":
            fields.append(value)
        else:
            identifiers.setdefault(name, value)
    if len(identifiers) > MAX_IDENTIFIERS:
        return None
    # Repeated `fields` parameters are joined, as the route does (one string, one limit).
    return identifiers, ",".join(fields) if fields else None


def _wants_gzip(accept_encoding: bytes) -> bool:
    """``accepts_gzip``, remembered per header value (callers send the same one every time)."""
    wanted = _GZIP_ACCEPTED.get(accept_encoding)
    if wanted is None:
        wanted = accepts_gzip(accept_encoding.decode("latin-1"))
        if len(accept_encoding) <= ACCEPT_ENCODING_MAX_BYTES:
            if len(_GZIP_ACCEPTED) >= ACCEPT_ENCODINGS_MAX:
                _GZIP_ACCEPTED.clear()
            _GZIP_ACCEPTED[accept_encoding] = wanted
    return wanted


def _response(
    body: bytes,
    level: str,
    accept_encoding: bytes,
    id_header: tuple[bytes, bytes],
    entry: Entry | None = None,
    l1: L1Cache | None = None,
) -> tuple[Message, Message]:
    """The two ASGI messages of an answer (``entry``: the entry of ``l1`` it came from, which
    keeps its compressed form)."""
    if len(body) > GZIP_MIN_BYTES and accept_encoding and _wants_gzip(accept_encoding):
        zipped = entry.gzipped if entry is not None else None
        if zipped is None:
            zipped = gzip.compress(body, compresslevel=5)
            if entry is not None and l1 is not None:
                l1.add_gzipped(entry, zipped)
        body = zipped
        headers = [*_HEADERS[level], id_header, _GZIPPED, (b"content-length", b"%d" % len(body))]
    else:
        headers = [*_HEADERS[level], id_header, (b"content-length", b"%d" % len(body))]
    return (
        {"type": "http.response.start", "status": 200, "headers": headers},
        {"type": "http.response.body", "body": body},
    )


async def _send_error(send: Send, exc: AppError, id_header: tuple[bytes, bytes]) -> None:
    body = orjson.dumps({"error": exc.code, "detail": exc.message})
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", b"%d" % len(body)),
        id_header,
    ]
    for name, value in (exc.headers or {}).items():
        headers.append((name.lower().encode(), value.encode()))
    await send({"type": "http.response.start", "status": exc.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body})
