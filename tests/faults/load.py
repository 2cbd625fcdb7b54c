"""Steady enrich traffic over keep-alive connections, and what it saw."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.fixtures.polling import HANG_GUARD_SECONDS


def email(index: int) -> str:
    return f"guest{index}@example.com"


def document(index: int, tier: str) -> dict[str, Any]:
    return {
        "identifiers": {"email": email(index), "crm_id": f"C-{index}"},
        "traits": {"tier": tier},
        "segments": ["loyal"],
        "metrics": {"visits": index},
    }


async def seed(http: httpx.AsyncClient, headers: dict[str, str], count: int, tier: str) -> None:
    for index in range(count):
        response = await http.put(
            f"/v1/profiles/email/{email(index)}", json=document(index, tier), headers=headers
        )
        assert response.status_code in (200, 201), response.text


@dataclass
class Outcome:
    status: int | None  # None: the request failed at the transport level
    seconds: float
    cache: str | None = None
    body: dict[str, Any] | None = None
    error: str | None = None
    at: float = 0.0  # when the answer (or the failure) came: time.monotonic()


@dataclass
class Tally:
    outcomes: list[Outcome] = field(default_factory=list)

    def extend(self, outcomes: Iterable[Outcome]) -> None:
        self.outcomes.extend(outcomes)

    @property
    def errors(self) -> int:
        return sum(1 for o in self.outcomes if o.status != 200)

    @property
    def server_errors(self) -> int:
        return sum(1 for o in self.outcomes if o.status is None or o.status >= 500)

    def percentile_ms(self, fraction: float) -> int:
        latencies = sorted(o.seconds for o in self.outcomes)
        if not latencies:
            return 0
        return round(latencies[min(len(latencies) - 1, int(len(latencies) * fraction))] * 1000)

    @property
    def max_ms(self) -> int:
        return round(max((o.seconds for o in self.outcomes), default=0.0) * 1000)

    def caches(self) -> Counter[str | None]:
        return Counter(o.cache for o in self.outcomes)

    def problems(self, limit: int = 5) -> list[str]:
        bad = [o for o in self.outcomes if o.status != 200]
        return [f"{o.status} {o.error or ''} {o.body}"[:200] for o in bad[:limit]]


async def enrich(
    http: httpx.AsyncClient,
    headers: dict[str, str],
    address: str,
    *,
    fields: list[str] | None = None,
    seconds: float = HANG_GUARD_SECONDS,
) -> Outcome:
    """One enrich call; ``seconds`` only stops a hang (the service's own deadline shows as a
    503, and a busy two-core machine queues requests for seconds)."""
    started = time.perf_counter()
    request: dict[str, Any] = {"identifiers": {"email": address}}
    if fields is not None:
        request["fields"] = fields
    try:
        response = await http.post(
            "/v1/enrich",
            json=request,
            headers=headers,
            timeout=seconds,
        )
    except httpx.HTTPError as exc:
        elapsed = time.perf_counter() - started
        return Outcome(None, elapsed, error=type(exc).__name__, at=time.monotonic())
    elapsed = time.perf_counter() - started
    body = response.json() if response.headers.get("content-type") == "application/json" else None
    return Outcome(
        response.status_code, elapsed, response.headers.get("x-cache"), body, at=time.monotonic()
    )


async def enrich_load(
    http: httpx.AsyncClient,
    headers: dict[str, str],
    addresses: Sequence[str],
    *,
    total: int,
    concurrency: int,
) -> Tally:
    """``total`` enrich requests from ``concurrency`` clients, cycling through ``addresses``."""
    queue = itertools.islice(itertools.cycle(addresses), total)
    tally = Tally()

    async def client() -> None:
        for address in queue:
            tally.outcomes.append(await enrich(http, headers, address))

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return tally
