"""The one HTTP client per process for Personalize's Interactive Experience API.

``POST {ENRICH_PERSONALIZE_API_URL}/v2/callFlows`` with ``Content-Type`` and ``Accept``
``application/json`` and no Authorization header (the ``clientKey`` in the body names the
tenant), as Sitecore's "Call the Personalize API" page shows. The whole exchange (a pooled
connection, the request, the answer read to its end) runs under one deadline
(``ENRICH_PERSONALIZE_TIMEOUT_MS``). What comes back is either Personalize's answer (status
and JSON bytes, untouched) or a ``RelayFailure`` naming why there is none.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Literal

import httpx
import orjson
import structlog
from prometheus_client import Counter

log = structlog.get_logger(__name__)

CALL_FLOWS_PATH = "/v2/callFlows"
# Personalize's answer is whatever the experience's API response template makes: a page's
# worth of JSON. Anything larger is not read into memory.
MAX_ANSWER_BYTES = 1_048_576
# One pool per process: enough connections for a busy worker, idle ones kept warm (a new TLS
# connection to a regional API costs more than the deadline leaves).
LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=30)

# Why there is no answer from Personalize (the fallback's reason).
Failure = Literal["timeout", "unreachable", "upstream_error", "invalid_answer", "not_configured"]

EXPERIENCE_CALLS = Counter(
    "enrich_experience_calls",
    "Interactive Experience relay calls, by outcome: answered (2xx), refused (4xx, passed on), "
    "or the fallback's reason",
    ["outcome"],
)


class RelayFailure(Exception):
    """Personalize gave no usable answer in time: the fallback is answered instead."""

    def __init__(self, reason: Failure) -> None:
        super().__init__(reason)
        self.reason: Failure = reason


@dataclass(frozen=True)
class Answer:
    """Personalize's answer as it came: its status, its bytes and their media type."""

    status: int
    body: bytes
    media_type: str = "application/json"


def masked(client_key: str) -> str:
    """Enough of a client key to tell two tenants apart in a log line, never the whole key."""
    return client_key[:4] + "..." if len(client_key) > 8 else "..."


class PersonalizeClient:
    """Sends callFlows requests to one regional API over a shared connection pool."""

    def __init__(self, base_url: str, timeout_ms: int) -> None:
        self.base_url = base_url
        self.deadline = timeout_ms / 1000
        self._http = httpx.AsyncClient(
            limits=LIMITS,
            timeout=httpx.Timeout(self.deadline),
            follow_redirects=False,
            headers={"Accept": "application/json", "Content-Type": "application/json"},
        )

    @property
    def configured(self) -> bool:
        return bool(self.base_url)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def call_flows(self, body: bytes, client_key: str) -> Answer:
        """Personalize's answer to ``body``; ``RelayFailure`` when there is none to pass on."""
        if not self.configured:
            EXPERIENCE_CALLS.labels("not_configured").inc()
            raise RelayFailure("not_configured")  # logged once, at start
        try:
            async with asyncio.timeout(self.deadline):
                answer = await self._exchange(body)
        except (TimeoutError, httpx.TimeoutException):
            raise self._failed("timeout", client_key) from None
        except httpx.HTTPError as exc:
            log.warning("experiences.unreachable", error=type(exc).__name__)
            raise self._failed("unreachable", client_key) from None
        if answer.status >= 500 or answer.status < 200 or 300 <= answer.status < 400:
            log.warning("experiences.upstream_error", status=answer.status)
            raise self._failed("upstream_error", client_key)
        if answer.status < 300 and not _is_json(answer.body):
            raise self._failed("invalid_answer", client_key)
        EXPERIENCE_CALLS.labels("answered" if answer.status < 300 else "refused").inc()
        return answer

    async def _exchange(self, body: bytes) -> Answer:
        request = self._http.build_request("POST", self.base_url + CALL_FLOWS_PATH, content=body)
        response = await self._http.send(request, stream=True)
        try:
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > MAX_ANSWER_BYTES:
                    return Answer(200, b"")  # not JSON: the caller gets the fallback
                chunks.append(chunk)
            media_type = response.headers.get("content-type", "application/json")
            return Answer(response.status_code, b"".join(chunks), media_type)
        finally:
            await response.aclose()

    def _failed(self, reason: Failure, client_key: str) -> RelayFailure:
        EXPERIENCE_CALLS.labels(reason).inc()
        log.warning("experiences.fallback", reason=reason, client_key=masked(client_key))
        return RelayFailure(reason)


def _is_json(body: bytes) -> bool:
    try:
        orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    return True
