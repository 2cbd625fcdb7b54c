"""An enrich answer as it goes out: status 200, its headers, and gzip when it pays.

Both doors send what ``answer`` makes: the fast path as ASGI messages (adding its request id),
the route as a ``Response`` (``answer_response``; the middleware stack adds the request id).
"""

from __future__ import annotations

import gzip

from fastapi import Response

from app.enrich.cache.l1 import Entry, L1Cache
from app.enrich.cache.store import LEVELS, Level
from app.enrich.request import wants_gzip

Header = tuple[bytes, bytes]

# Below this the gzip header and CPU cost more than the bytes saved.
GZIP_MIN_BYTES = 1000
_BASE_HEADERS = ((b"content-type", b"application/json"), (b"vary", b"Accept-Encoding"))
# The headers every answer of a level starts with (built once: the hot path copies them).
HEADERS: dict[str, tuple[Header, ...]] = {
    level: (*_BASE_HEADERS, (b"x-cache", level.encode())) for level in LEVELS
}
GZIPPED: Header = (b"content-encoding", b"gzip")
# The content-length header of each answer length seen: answers are at most a few KB, so a
# length comes back again and again, and its header is made once (formatting it costs a hit
# ~80 ns). Bounded: lengths past the first LENGTH_HEADERS_MAX are made each time.
LENGTH_HEADERS_MAX = 2048
_LENGTH_HEADERS: dict[int, Header] = {}


def answer(
    body: bytes,
    level: Level,
    accept_encoding: bytes,
    held: Entry | None = None,
    l1: L1Cache | None = None,
) -> tuple[bytes, list[Header]]:
    """The bytes to send and the headers of a 200 answer: gzip-compressed when the caller
    accepts it and the answer is over ``GZIP_MIN_BYTES``.

    ``held``: the entry of ``l1`` the answer came from, which keeps the compressed form for
    the next hit (compressing a 2 KB answer costs more than the rest of a hit).
    """
    if len(body) > GZIP_MIN_BYTES and accept_encoding and wants_gzip(accept_encoding):
        zipped = held.gzipped if held is not None else None
        if zipped is None:
            zipped = gzip.compress(body, compresslevel=5)
            if held is not None and l1 is not None:
                l1.add_gzipped(held, zipped)
        length = _LENGTH_HEADERS.get(len(zipped)) or _length_header(len(zipped))
        return zipped, [*HEADERS[level], GZIPPED, length]
    length = _LENGTH_HEADERS.get(len(body)) or _length_header(len(body))
    return body, [*HEADERS[level], length]


def _length_header(size: int) -> Header:
    header = (b"content-length", b"%d" % size)
    if len(_LENGTH_HEADERS) < LENGTH_HEADERS_MAX:
        _LENGTH_HEADERS[size] = header
    return header


def answer_response(body: bytes, level: Level, accept_encoding: bytes) -> Response:
    """``answer`` as the route returns it."""
    content, headers = answer(body, level, accept_encoding)
    response = Response(content)
    response.raw_headers = headers
    return response
