"""Prometheus metrics, correct with several worker processes.

``enrich serve`` points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory before any worker
imports prometheus_client, so every worker writes its samples to memory-mapped files there and
``/metrics``, whichever worker answers it, adds them all up (the library's multiprocess mode).
A single process without that variable (the tests, an embedded run) uses the default registry.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import weakref
from bisect import bisect_left
from collections.abc import Iterable
from typing import Any, Protocol

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from sqlalchemy.ext.asyncio import AsyncEngine

# What the access line and the request metrics need of one request, recorded as it ends:
# (ended: perf_counter, seconds, request id, client id, method, route, status, cache, address).
AccessRecord = tuple[float, float, str, "str | None", str, str, int, "str | None", "str | None"]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# How far behind the requests a scrape may be, and how often (in flushes) the pool is sampled.
FLUSH_SECONDS = 0.25
POOL_EVERY = 4
CONTENT_TYPE = CONTENT_TYPE_LATEST
ROUTE_UNMATCHED = "unmatched"
METHODS = frozenset(("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"))
# Enrich answers take well under a millisecond from L1 and a few from PostgreSQL.
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)

REQUESTS = Counter("enrich_http_requests", "HTTP requests answered", ["route", "method", "status"])
LATENCY = Histogram(
    "enrich_http_request_duration_seconds",
    "Time from the request's arrival to the end of its answer",
    ["route", "method", "status"],
    buckets=LATENCY_BUCKETS,
)
CACHE_ANSWERS = Counter(
    "enrich_cache_answers", "Enrich answers by cache level (the X-Cache header)", ["level"]
)
TOKENS_ISSUED = Counter("enrich_tokens_issued", "Access tokens issued")
TOKENS_REFUSED = Counter(
    "enrich_tokens_refused", "Token requests refused, by OAuth error code", ["reason"]
)
RATE_LIMITED = Counter(
    "enrich_rate_limited_requests", "Requests refused with 429 by the client's rate limit",
    ["client_id"],
)  # fmt: skip
ADDRESS_REFUSED = Counter(
    "enrich_address_refused_requests",
    "Requests refused with 403 because the address is outside the client's allowlist",
    ["client_id"],
)
REDIS_ERRORS = Counter("enrich_redis_errors", "Failed Redis operations, by what failed", ["event"])
DB_POOL_IN_USE = Gauge(
    "enrich_db_pool_in_use",
    "Database connections checked out of the pools (all workers)",
    multiprocess_mode="livesum",
)
DB_POOL_WAITING = Gauge(
    "enrich_db_pool_waiting",
    "Requests waiting for a database connection (all workers)",
    multiprocess_mode="livesum",
)

# The log events that report a failed Redis call (every Redis failure in the code base is
# logged with one of these): counting them here keeps the counter complete without a metrics
# call at each place, see ``count_redis_errors``.
REDIS_FAILURE_EVENTS = frozenset(
    (
        "cache.redis_failed",
        "cache.publish_failed",
        "cache.ack_failed",
        "cache.subscription_lost",
        "cache.subscribe_failed",
        "auth_throttle.unavailable",
        "ratelimit.redis_failed",
    )
)


def count_redis_errors(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
    """A structlog processor: count the log events that report a Redis failure."""
    name = event.get("event")
    if name in REDIS_FAILURE_EVENTS:
        REDIS_ERRORS.labels(name).inc()
    return event


class Drainable(Protocol):
    def drain(self) -> None: ...


class _Tally:
    __slots__ = ("buckets", "count", "total")

    def __init__(self) -> None:
        self.count = 0
        self.total = 0.0
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)  # the last one is +Inf


class RequestMetrics:
    """Counts requests in plain Python and hands the sums to prometheus_client in batches.

    In multiprocess mode every increment of a prometheus_client value is a write to a
    memory-mapped file under a lock, four of them per request (count, sum, bucket, cache
    level): about as much as the rest of the access path. Here a request costs a dictionary
    lookup and three additions, done for a batch of requests at a time (``observe_all``, from
    ``app.platform.middleware.Access``); ``flush`` (every ``FLUSH_SECONDS``, and before each scrape)
    drains those batches and moves the sums over, so a scrape is at most that far behind.
    """

    def __init__(self) -> None:
        self._tallies: dict[tuple[str, str, int], _Tally] = {}
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._cache = {"hit": 0, "miss": 0, "stale": 0}
        self._cache_children = {level: CACHE_ANSWERS.labels(level) for level in self._cache}
        self._sources: weakref.WeakSet[Drainable] = weakref.WeakSet()

    def add_source(self, source: Drainable) -> None:
        """Something holding requests not observed yet: drained before every flush."""
        self._sources.add(source)

    def observe_all(self, records: Iterable[AccessRecord]) -> None:
        tallies = self._tallies
        levels = self._cache
        for _, seconds, _, _, method, route, status, cache, _ in records:
            if method not in METHODS:
                method = "OTHER"  # the label set stays bounded whatever a caller sends
            key = (route, method, status)
            tally = tallies.get(key)
            if tally is None:
                tally = tallies[key] = _Tally()
            tally.count += 1
            tally.total += seconds
            tally.buckets[bisect_left(LATENCY_BUCKETS, seconds)] += 1
            if cache is not None and cache in levels:
                levels[cache] += 1

    def flush(self) -> None:
        for source in list(self._sources):
            source.drain()
        tallies, self._tallies = self._tallies, {}
        for key, tally in tallies.items():
            counter, histogram = self._children_for(key)
            counter.inc(tally.count)
            histogram._sum.inc(tally.total)
            for index, count in enumerate(tally.buckets):
                if count:
                    histogram._buckets[index].inc(count)
        for level, count in self._cache.items():
            if count:
                self._cache_children[level].inc(count)
                self._cache[level] = 0

    def _children_for(self, key: tuple[str, str, int]) -> tuple[Any, Any]:
        children = self._children.get(key)
        if children is None:
            route, method, status = key
            labels = (route, method, str(status))
            children = (REQUESTS.labels(*labels), LATENCY.labels(*labels))
            self._children[key] = children
        return children


request_metrics = RequestMetrics()


def sample_pool(engine: AsyncEngine) -> None:
    """Set the pool gauges from this process's engine (summed over workers at scrape time)."""
    pool: Any = engine.pool
    checkedout = getattr(pool, "checkedout", None)
    DB_POOL_IN_USE.set(checkedout() if checkedout is not None else 0)
    # SQLAlchemy does not count waiters; its asyncio queue does (created on first use).
    queue = getattr(getattr(pool, "_pool", None), "__dict__", {}).get("_queue")
    getters = getattr(queue, "_getters", ())
    DB_POOL_WAITING.set(sum(1 for waiter in getters if not waiter.done()))


class MetricsFlusher:
    """Moves the request tallies over every ``FLUSH_SECONDS``; samples the pool each second."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        rounds = 0
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            with contextlib.suppress(Exception):
                request_metrics.flush()
                rounds += 1
                if rounds % POOL_EVERY == 0:
                    sample_pool(self.engine)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="metrics-flusher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        request_metrics.flush()
        if multiprocess_mode():
            # This worker's gauges leave the sums (counters stay: they count what happened).
            multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


def multiprocess_mode() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


def render() -> bytes:
    """The exposition text: every worker's samples in multiprocess mode, else this process's."""
    request_metrics.flush()
    if multiprocess_mode():
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest(REGISTRY)
