"""The enrich fast path: a pure ASGI handler in front of FastAPI for well-formed requests.

FastAPI's routing, dependency injection and validation cost more than the whole answer when it
comes from L1 (see the README's benchmark section). This handler serves the common case
directly: a token this process has verified before, with the ``profiles:read`` scope, and a
well-formed JSON body or query. Anything else (a new token, a missing scope, a malformed body,
an invalid identifier type) falls through, unchanged, to the FastAPI route, which answers it
and is what the OpenAPI document describes. Both read the request with ``app.enrich.request``
and answer with ``app.enrich.response``; they share the cache.

An L1 hit is the hot path: it awaits nothing but ``receive`` and ``send`` (its steps are plain
calls), and allocates little more than the answer's headers and messages; bench/fastpath_micro.py
measures it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

import orjson
import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.auth.apikeys import ApiKeyAuth
from app.auth.guard import Guard
from app.auth.tokens import InvalidTokenError, Principal, TokenVerifier
from app.core.certs import CERT_KEY
from app.core.errors import AppError, InternalError, error_body
from app.enrich.cache.store import EnrichCache, Level
from app.enrich.consent import REFUSED_TAILS, refused_in
from app.enrich.fields import Selection
from app.enrich.request import RememberedRequests, Wanted
from app.enrich.response import Header, answer
from app.enrich.views.registry import ViewRegistry
from app.identity.identifiers import Key
from app.platform.logging import request_id_var
from app.platform.middleware import CLIENT_ID_KEY, Access
from app.platform.ratelimit import PENDING, Verdict

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class FastParts:
    """What the fast path needs of the process's parts (app.runtime builds it)."""

    verifier: TokenVerifier
    guard: Guard
    cache: EnrichCache
    phone_region: str
    views: ViewRegistry
    api_keys: ApiKeyAuth | None = None
    api_key_header: bytes = b"x-api-key"  # (lower case, as ASGI gives header names)


class HostApp(Protocol):
    """The application the fast path stands in front of (app.main.EnrichAPI)."""

    fast_parts: FastParts | None


PATH = "/v1/enrich"
SCOPE = "profiles:read"
METHODS = ("POST", "GET")
# The request headers the fast path reads: authorization, content-type, accept-encoding, the
# declared body length (0 when none, past any limit when unreadable), x-request-id, the
# x-forwarded-for values (None when none), and x-correlation-id.
Heads = tuple[bytes, bytes, bytes, int, bytes, list[bytes] | None, bytes]
UNREADABLE_LENGTH = 1 << 62  # (a content-length that is not a number of at most 18 digits)
READ_HEADERS = frozenset(
    (
        b"authorization",
        b"content-type",
        b"accept-encoding",
        b"content-length",
        b"x-request-id",
        b"x-forwarded-for",
        b"x-correlation-id",
    )
)


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
        self.requests = RememberedRequests()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Long: the hot path, whole: an L1 hit makes no call it can do without.
        # Called for http requests to PATH only (see app.main.EnrichAPI).
        started = time.perf_counter() if self.access.recording else 0.0
        parts = self.fastapi_app.fast_parts
        method = scope["method"]
        authorization, content_type, accept_encoding, declared, given_id, forwarded, given_cid = (
            _heads(scope)
        )
        if parts is None or method not in METHODS or declared > self.body_limit:
            await self.app(scope, receive, send)  # (a body declared too long: the stack's 413)
            return
        body = b""
        if method == "POST":
            message = await receive()
            if message["type"] == "http.request" and not message.get("more_body", False):
                body = message.get("body", b"")  # the common case: the whole body at once
            else:
                body, more, other = await _buffer(receive, message, self.body_limit)
                if more or other is not None:  # over the limit, or a disconnect
                    await self.app(scope, _replay(receive, body, more, other), send)
                    return
        principal = _reader(parts, authorization, scope) if len(body) <= self.body_limit else None
        wanted = self._wanted(parts, method, body, content_type, scope) if principal else None
        if principal is None or wanted is None:  # the route answers: 401, 403, 413 or a 4xx
            await self.app(scope, _replay(receive, body, False, None), send)
            return
        # From here on the request is served here: it is this layer's to log and count.
        request_id, correlation_id, id_headers = self.access.ids(given_id, given_cid)
        if forwarded is not None:
            self.access.forward(scope, forwarded)
        status, answered = 200, False
        level: Level | None = None
        why: str | None = None
        try:
            verdict = _admission(parts.guard, principal, scope)
            if verdict is not None:  # refused, or for the shared limiter to decide
                await _settle(parts.guard, verdict, principal.client_id)  # (raises a refusal)
            keys, selection, view = wanted
            # A view named, a client with a default view or purpose (empty dicts' truth else):
            views = parts.views
            if view is not None or views.purposes or (views.defaults and selection.key is None):
                selection = views.selection(view, selection, principal.client_id)  # (4xx)
            entry = parts.cache.l1_hit(keys, selection)
            if entry is not None:
                content, level = entry.body, "hit"
            else:
                content, level = await _looked_up(parts.cache, keys, selection, request_id)
            # A no-consent answer says why on its access line (one compare of its tail).
            if selection.purpose is not None and content.endswith(REFUSED_TAILS):
                why = refused_in(content)
            content, headers = answer(content, level, accept_encoding, entry, parts.cache.l1)
            headers += id_headers
            answered = True
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": content})
        except AppError as exc:  # refused by the guard (403, 429), or unavailable (503)
            status = exc.status_code
            await _send_error(send, exc, id_headers)
        except Exception:
            log.exception("enrich.fast_path_failed")
            status, level = 500, None
            if answered:
                raise  # too late for an error answer: the server closes the connection
            await _send_error(send, InternalError(), id_headers)
        finally:
            if self.access.recording:
                self.access.record(
                    scope, request_id, PATH, status, started, level, correlation_id, why
                )

    def _wanted(
        self, parts: FastParts, method: str, body: bytes, content_type: bytes, scope: Scope
    ) -> Wanted | None:
        """What the request wants (remembered by its bytes), or None for the route to answer."""
        payload = body if method == "POST" else scope.get("query_string", b"")
        return self.requests.get(method, payload, content_type, parts.phone_region)


def _heads(scope: Scope) -> Heads:
    """The request headers the fast path reads (see ``Heads``), in one pass."""
    authorization = content_type = accept_encoding = given_id = correlation = b""
    declared = 0
    forwarded: list[bytes] | None = None
    for name, value in scope["headers"]:
        if name not in READ_HEADERS:
            continue  # (most of a request's headers: one set lookup instead of six compares)
        if name == b"authorization":
            authorization = value
        elif name == b"content-type":
            content_type = value
        elif name == b"accept-encoding":
            accept_encoding = value
        elif name == b"content-length":
            declared = int(value) if value.isdigit() and len(value) < 19 else UNREADABLE_LENGTH
        elif name == b"x-request-id":
            given_id = value
        elif name == b"x-forwarded-for":
            if forwarded is None:
                forwarded = [value]
            else:
                forwarded.append(value)
        elif name == b"x-correlation-id":
            correlation = value
    return authorization, content_type, accept_encoding, declared, given_id, forwarded, correlation


def _reader(parts: FastParts, authorization: bytes, scope: Scope) -> Principal | None:
    """Who calls, if this process verified the token (or, without an Authorization header,
    the API key) before and it may read profiles."""
    try:
        if authorization or parts.api_keys is None:
            principal = parts.verifier.bearer(authorization)
        else:
            principal = _key_holder(parts.api_keys, parts.api_key_header, scope)
    except InvalidTokenError:
        return None  # the route answers 401
    if principal is None or SCOPE not in principal.scopes:
        return None
    if principal.refuses(scope.get(CERT_KEY)):
        return None  # bound to another certificate (RFC 8705): the route answers 401
    return principal


def _key_holder(api_keys: ApiKeyAuth, header: bytes, scope: Scope) -> Principal | None:
    """The client of a verified API key (a header only requests without a token look for)."""
    for name, value in scope["headers"]:
        if name == header:
            return api_keys.cached(value)
    return None


def _admission(guard: Guard, principal: Principal, scope: Scope) -> AppError | Verdict:
    """The allowlist and the rate limit: None to serve, a refusal, or PENDING. A request that
    falls through meets them in the route instead (``require_scope``): none counts twice."""
    scope[CLIENT_ID_KEY] = client_id = principal.client_id
    client = scope.get("client")
    return guard.admit(client_id, client[0] if client else None)


async def _settle(guard: Guard, verdict: AppError | Verdict, client_id: str) -> None:
    """Raise the refusal, once the shared limiter has decided if it had to."""
    if verdict is PENDING:
        verdict = await guard.admit_later(client_id)
    if isinstance(verdict, AppError):
        raise verdict


async def _looked_up(
    cache: EnrichCache, keys: tuple[Key, ...], selection: Selection, request_id: str
) -> tuple[bytes, Level]:
    """The answer past L1 (L2 or the database), with the request id for what the cache logs."""
    token = request_id_var.set(request_id)
    try:
        return await cache.answer(keys, selection)
    finally:
        request_id_var.reset(token)


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


async def _send_error(send: Send, exc: AppError, id_headers: list[Header]) -> None:
    """An error answer, as the app's error handler renders it (app.core.errors)."""
    body = orjson.dumps(error_body(exc.code, exc.message))
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", b"%d" % len(body)),
        *id_headers,
    ]
    for name, value in (exc.headers or {}).items():
        headers.append((name.lower().encode(), value.encode()))
    await send({"type": "http.response.start", "status": exc.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body})
