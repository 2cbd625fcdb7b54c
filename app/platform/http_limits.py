"""What a caller may send before the application sees its request, and the answers that refuse
more (used by the protocol of ``app/platform/http.py``).

httptools has no limit of its own on a request head, and it joins the pieces of a header that
arrives in several reads by copying (``+=``): a 64 MB header line cost ~3 CPU seconds, growing
faster than its length. The protocol counts the bytes of a head as they are read, and never
feeds the parser past the limit: a longer head is answered 431, more header fields than allowed
431, a longer URL 414, all with the service's JSON error and ``Connection: close``. A head must
be whole within a timeout of its first byte (or of the connection, for a caller that sends
nothing), and a body may not stall longer than another: uvicorn only times out idle kept-alive
connections between requests (``timeout_keep_alive``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE

# After a refusal the connection is half-closed and what the caller still sends is read and
# dropped, so a caller that sends its whole request before it reads gets the answer rather
# than a reset: up to LINGER_BYTES, then nothing more is read; after LINGER_SECONDS (or when
# the caller closes) the connection closes.
LINGER_SECONDS = 2.0
LINGER_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """What a caller may send before the application sees its request (settings ``ENRICH_*``)."""

    max_header_bytes: int = 16_384  # request line, header fields and the blank line
    max_header_fields: int = 100
    max_url_bytes: int = 8192
    header_timeout: float = 10.0  # seconds from a head's first byte (or the connection) to its end
    body_timeout: float = 10.0  # seconds a body may go without a byte while it is awaited


class Refusal(Exception):
    """A request answered by the protocol itself, after which the connection closes.

    Raised in a parser callback it stops httptools at once (it comes back as the
    ``__context__`` of ``HttpParserCallbackError``).
    """

    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail


def not_http() -> Refusal:
    return Refusal(400, "bad_request", "The request is not valid HTTP/1.1.")


def head_too_large(limits: HttpLimits) -> Refusal:
    detail = f"The request head is larger than {limits.max_header_bytes} bytes."
    return Refusal(431, "request_header_fields_too_large", detail)


def too_many_fields(limits: HttpLimits) -> Refusal:
    detail = f"The request has more than {limits.max_header_fields} header fields."
    return Refusal(431, "request_header_fields_too_large", detail)


def url_too_long(limits: HttpLimits) -> Refusal:
    detail = f"The request's URL is longer than {limits.max_url_bytes} bytes."
    return Refusal(414, "uri_too_long", detail)


def head_late(limits: HttpLimits) -> Refusal:
    detail = f"The request head did not arrive within {limits.header_timeout:g} seconds."
    return Refusal(408, "request_timeout", detail)


def body_stalled(limits: HttpLimits) -> Refusal:
    detail = f"The request body stalled: nothing came for {limits.body_timeout:g} seconds."
    return Refusal(408, "request_timeout", detail)


def refusal_response(refusal: Refusal, default_headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    """The whole answer to a refused request: the JSON error, then ``Connection: close``."""
    body = orjson.dumps({"error": refusal.error, "detail": refusal.detail})
    content = [STATUS_LINE[refusal.status]]
    for name, value in default_headers:
        content.extend([name, b": ", value, b"\r\n"])
    content.extend(
        [
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n",
            body,
        ]
    )
    return b"".join(content)
