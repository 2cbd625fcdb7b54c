"""A bounded load through the balancer: enrich reads and profile writes at a fixed rate.

Open loop: a request starts every ``1 / rate`` seconds whatever the others do (at most
``MAX_IN_FLIGHT`` at once; a start skipped for that is counted, not hidden). Each guest's
``tier`` trait is a number that only grows: a write sets the next one, never while another
write to that guest is in flight, so a read must show at least the number of the last write
answered before it started. A smaller one is a wrong answer (an acknowledged write hidden),
unless the answer declares itself stale (``X-Cache: stale``: the database missed the
deadline and the last copy known is the documented answer).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx

from tests.fixtures.polling import eventually

MAX_IN_FLIGHT = 64
CLIENT_TIMEOUT = 30.0  # hang guard: a request that never comes back fails the count
LOAD_HANG_SECONDS = 600.0  # hang guard: the longest a drill's load may run
PATCH = {"Content-Type": "application/merge-patch+json"}


@dataclass
class Outcome:
    started: float
    ended: float
    kind: str  # "read" or "write"
    guest: str
    status: int | None
    error: str | None  # None, "http 502", "ReadError", ...
    served_by: str | None
    correct: bool = True


@dataclass
class Load:
    url: str
    headers: dict[str, str]
    guests: list[str]
    rate: float = 150.0
    write_every: int = 10
    outcomes: list[Outcome] = field(default_factory=list)
    skipped: int = 0
    acked: dict[str, int] = field(default_factory=dict)
    _writing: set[str] = field(default_factory=set)
    _next: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _stopping: bool = False
    task: asyncio.Task[None] | None = None

    async def prepare(self, http: httpx.AsyncClient) -> None:
        """Every guest exists with tier 0 before the load starts."""
        for guest in self.guests:
            answer = await http.put(
                f"/v1/profiles/crm_id/{guest}", json={"traits": {"tier": 0}}, headers=self.headers
            )
            assert answer.status_code in (200, 201), answer.text
            self.acked[guest] = 0

    async def run(self, seconds: float) -> None:
        """The load for ``seconds`` (or until ``stop``); returns when every request ended."""
        limits = httpx.Limits(max_connections=MAX_IN_FLIGHT, max_keepalive_connections=16)
        async with httpx.AsyncClient(
            base_url=self.url, timeout=CLIENT_TIMEOUT, limits=limits
        ) as http:
            await self.prepare(http)
            tasks: set[asyncio.Task[None]] = set()
            start = time.monotonic()
            for n in itertools.count():
                due = start + n / self.rate
                if self._stopping or due > start + seconds:
                    break
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                if len(tasks) >= MAX_IN_FLIGHT:
                    self.skipped += 1
                    continue
                task = asyncio.create_task(self.one(http, n))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if tasks:
                await asyncio.wait(tasks)

    def stop(self) -> None:
        self._stopping = True

    async def more(self, requests: int, what: str) -> None:
        """Wait until ``requests`` more requests have ended (the load goes on meanwhile)."""
        target = len(self.outcomes) + requests

        def done() -> bool:
            if self.task is not None and self.task.done():
                self.task.result()  # the load failed (its error), or ended too soon
                raise AssertionError(f"the load ended before {what}")
            return len(self.outcomes) >= target

        await eventually(done, what, deadline=LOAD_HANG_SECONDS)

    async def one(self, http: httpx.AsyncClient, n: int) -> None:
        guest = self.guests[n % len(self.guests)]
        if n % self.write_every == 0 and guest not in self._writing:
            await self.write(http, guest)
        else:
            await self.read(http, guest)

    async def write(self, http: httpx.AsyncClient, guest: str) -> None:
        self._writing.add(guest)
        tier = next(self._next)
        started = time.monotonic()
        try:
            answer, error = await self._send(
                http.patch(
                    f"/v1/profiles/crm_id/{guest}",
                    json={"traits": {"tier": tier}},
                    headers={**self.headers, **PATCH},
                )
            )
            if answer is not None and answer.status_code == 200:
                self.acked[guest] = max(self.acked[guest], tier)
            self._record(started, "write", guest, answer, error, correct=True)
        finally:
            self._writing.discard(guest)

    async def read(self, http: httpx.AsyncClient, guest: str) -> None:
        floor = self.acked[guest]
        started = time.monotonic()
        ask = {"identifiers": {"crm_id": guest}}
        answer, error = await self._send(http.post("/v1/enrich", json=ask, headers=self.headers))
        correct = True
        if answer is not None and answer.status_code == 200:
            declared_stale = answer.headers.get("x-cache") == "stale"
            tier = answer.json()["traits"].get("tier")
            correct = declared_stale or (isinstance(tier, int) and tier >= floor)
        self._record(started, "read", guest, answer, error, correct=correct)

    async def _send(self, request: object) -> tuple[httpx.Response | None, str | None]:
        try:
            answer: httpx.Response = await request  # type: ignore[misc]
        except httpx.HTTPError as exc:
            return None, type(exc).__name__
        if not 200 <= answer.status_code < 300:
            return answer, f"http {answer.status_code}"
        return answer, None

    def _record(
        self,
        started: float,
        kind: str,
        guest: str,
        answer: httpx.Response | None,
        error: str | None,
        *,
        correct: bool,
    ) -> None:
        served_by = None if answer is None else answer.headers.get("x-served-by")
        if error is not None and answer is not None and served_by is None:
            error += " (balancer)"  # HAProxy's own answer: no host took the request
        self.outcomes.append(
            Outcome(
                started,
                time.monotonic(),
                kind,
                guest,
                None if answer is None else answer.status_code,
                error,
                served_by,
                correct,
            )
        )

    # -- what a drill reports ----------------------------------------------------------------

    def errors(self, since: float = 0.0, until: float = float("inf")) -> list[Outcome]:
        """Failed requests that started in [since, until]."""
        return [x for x in self.outcomes if x.error and since <= x.started <= until]

    def wrong(self) -> list[Outcome]:
        return [x for x in self.outcomes if not x.correct]

    def error_kinds(self) -> str:
        kinds = Counter(x.error for x in self.outcomes if x.error)
        return ",".join(f"{kind}:{n}".replace(" ", "_") for kind, n in sorted(kinds.items()))

    def served_by(self, since: float = 0.0) -> Counter[str | None]:
        return Counter(x.served_by for x in self.outcomes if x.started >= since and not x.error)

    def figures(self) -> dict[str, int | float | str]:
        spans = [x.ended for x in self.outcomes] + [x.started for x in self.outcomes]
        elapsed = max(spans) - min(spans) if spans else 0.0
        return {
            "requests": len(self.outcomes),
            "writes": len([x for x in self.outcomes if x.kind == "write"]),
            "rps": round(len(self.outcomes) / elapsed, 1) if elapsed else 0.0,
            "skipped": self.skipped,
            "errors": len(self.errors()),
            "error_kinds": self.error_kinds() or "-",
            "wrong_answers": len(self.wrong()),
        }


@contextlib.asynccontextmanager
async def running(load: Load) -> AsyncIterator[Load]:
    """The load in the background while the block runs; stopped (and awaited) after it."""
    task = load.task = asyncio.create_task(load.run(LOAD_HANG_SECONDS))
    try:
        await load.more(len(load.guests) * 4, "the load warms up")
        yield load
    finally:
        load.stop()
        await asyncio.wait_for(task, CLIENT_TIMEOUT * 2)
