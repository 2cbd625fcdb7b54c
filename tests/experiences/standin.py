"""A local stand-in for Personalize's Interactive Experience API (``POST /v2/callFlows``).

A raw asyncio HTTP/1.1 server on a port the OS picks: it checks each request the way Sitecore
documents the API ("Personalize API Flow execution", "Call the Personalize API"): JSON body
(415 otherwise), the attributes ``clientKey``, ``channel``, ``language``, ``currencyCode``,
``pointOfSale`` and ``friendlyId``, exactly one of ``browserId``, ``email`` or ``identifiers``
(``{"provider", "id"}``), ``params`` an object; a refusal is a 400 in the shape of its generic
errors. It answers like an experience's API response template would: a small JSON document
that depends on the request, so a test can tell the answer came through unchanged.

``mode`` chooses the answer: ``ok``, ``slow`` (waits until ``release()``), ``error`` (503),
``not_json`` (a 200 with HTML). An unknown ``friendlyId`` (``no_such_experience``) is a 404.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

REQUIRED = ("clientKey", "channel", "language", "currencyCode", "pointOfSale", "friendlyId")
GUEST_IDS = ("browserId", "email", "identifiers")
REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 415: "Unsupported Media Type"}


def refusal(status: int, message: str) -> tuple[int, bytes, str]:
    body = {"status": status, "code": status, "message": message, "moreInfoUrl": None}
    return status, orjson.dumps(body), "application/json"


def check(headers: dict[str, str], body: bytes) -> str | None:
    """Why Personalize would refuse this request, or None."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return "body is not JSON"
    if not isinstance(document, dict):
        return "body is not an object"
    missing = [name for name in REQUIRED if not isinstance(document.get(name), str)]
    if missing:
        return f"missing {', '.join(missing)}"
    given = [name for name in GUEST_IDS if name in document]
    if len(given) != 1:
        return "exactly one of browserId, email or identifiers"
    identifiers = document.get("identifiers")
    if identifiers is not None and (
        not isinstance(identifiers, dict) or set(identifiers) != {"provider", "id"}
    ):
        return "identifiers must be {provider, id}"
    if "params" in document and not isinstance(document["params"], dict):
        return "params must be an object"
    if document["channel"] != document["channel"].upper():
        return "channel must be upper case"
    return None


class CallFlowsStandIn:
    def __init__(self) -> None:
        self.mode = "ok"
        self.received: list[dict[str, Any]] = []
        self.refused: list[str] = []
        self.connections = 0
        self._release = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._handlers: dict[asyncio.Task[None], asyncio.StreamWriter] = {}
        self.url = ""

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    def release(self) -> None:
        self._release.set()

    async def close(self) -> None:
        self.release()
        assert self._server is not None
        self._server.close()
        # Closing each connection ends its handler (its next read sees the end of the stream).
        for writer in list(self._handlers.values()):
            writer.close()
        async with asyncio.timeout(30):  # a hang guard
            await asyncio.gather(*self._handlers, return_exceptions=True)
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers[task] = writer
        self.connections += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                method, path, headers = parse_head(head)
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                status, payload, media = await self._answer(method, path, headers, body)
                writer.write(
                    f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\n"
                    f"Content-Type: {media}\r\nContent-Length: {len(payload)}\r\n\r\n".encode()
                    + payload
                )
                await writer.drain()
        finally:
            self._handlers.pop(task, None)
            writer.close()

    async def _answer(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, bytes, str]:
        if method != "POST" or path != "/v2/callFlows":
            return refusal(404, f"no {method} {path}")
        if headers.get("content-type", "").split(";")[0].strip() != "application/json":
            self.refused.append("content type")
            return refusal(415, "Content-Type must be application/json")
        why = check(headers, body)
        if why is not None:
            self.refused.append(why)
            return refusal(400, why)
        document = orjson.loads(body)
        self.received.append(document)
        if document["friendlyId"] == "no_such_experience":
            return refusal(404, "no live experience with this friendlyId")
        if self.mode == "slow":
            await self._release.wait()
        if self.mode == "error":
            return 503, b'{"status": 503, "message": "unavailable"}', "application/json"
        if self.mode == "not_json":
            return 200, b"<html>maintenance</html>", "text/html"
        guest = document.get("params", {}).get("enrich", {})
        answer = {
            "experience": document["friendlyId"],
            "offer": "gold-banner" if guest.get("traits", {}).get("tier") == "gold" else "default",
            "known": guest.get("found"),
        }
        return 200, orjson.dumps(answer), "application/json"


def parse_head(head: bytes) -> tuple[str, str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    return method, path, headers
