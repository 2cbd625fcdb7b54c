"""The limit: a bare ASGI callable that answers fixed bytes (the hot-path bench's yardstick).

It reads the request body like a real endpoint and answers the bytes in ENRICH_BARE_BODY_FILE
(the enrich service's own answer for the same request) with the same headers enrich sends
(a fixed request id of the same length), so both servers move the same bytes: the server's
cost per header (uvicorn checks each one) is the same on both sides of the ratio.
"""

from __future__ import annotations

import os
from pathlib import Path

from starlette.types import Receive, Scope, Send

_path = os.environ.get("ENRICH_BARE_BODY_FILE")
BODY = Path(_path).read_bytes() if _path else b'{"found":false}'
HEADERS = [
    (b"content-type", b"application/json"),
    (b"vary", b"Accept-Encoding"),
    (b"x-cache", b"hit"),
    (b"x-request-id", b"0" * 32),
    (b"content-length", str(len(BODY)).encode()),
]


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})
