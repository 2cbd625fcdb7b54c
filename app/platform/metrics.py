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

from app.core.replica_reads import ReplicaRouter

# What the access line and the request metrics need of one request, recorded as it ends:
# (ended: perf_counter, seconds, request id, client id, method, route, status, cache, address,
# the caller's X-Correlation-Id, why an enrich answer held no personal data: "denied:marketing").
AccessRecord = tuple[
    float,
    float,
    str,
    "str | None",
    str,
    str,
    int,
    "str | None",
    "str | None",
    "str | None",
    "str | None",
]

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
# A write whose invalidation some worker did not acknowledge in time (it answered anyway).
INVALIDATIONS_UNACKNOWLEDGED = Counter(
    "enrich_invalidations_unacknowledged",
    "Writes answered before every worker acknowledged their cache invalidation",
)
# Summed over every worker process `enrich serve` ever ran (their files stay in the
# multiprocess directory), so a worker replaced after it died or hung adds one.
WORKER_STARTS = Counter("enrich_worker_starts", "Worker processes started")
WORKER_RESTARTS = Counter(
    "enrich_worker_restarts", "Worker processes started to replace one that died or hung"
)
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

DB_READS = Counter(
    "enrich_db_reads",
    "Reads that may use a read replica (enrich misses, profile reads), by where they went: "
    "replica; primary (no replica had replayed what they need, or none was usable); fallback "
    "(a replica failed, the primary answered)",
    ["server"],
)
REPLICA_USABLE = Gauge(
    "enrich_replica_usable",
    "1 while the replica answers and is within ENRICH_DATABASE_REPLICA_MAX_LAG_SECONDS "
    "(0 when any worker's probe finds it is not)",
    ["replica"],
    multiprocess_mode="livemin",
)
REPLICA_BEHIND_BYTES = Gauge(
    "enrich_replica_behind_bytes",
    "WAL bytes the primary had flushed that the replica had not replayed, as last probed "
    "(-1: not known yet)",
    ["replica"],
    multiprocess_mode="livemax",
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
        for _, seconds, _, _, method, route, status, cache, _, _, _ in records:
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


class ReplicaMetrics:
    """The read replicas as metrics: the router's read counts (taken and reset) and what the
    probe last saw of each replica. A source of ``request_metrics``, drained at each flush."""

    def __init__(self, router: ReplicaRouter) -> None:
        self.router = router

    def drain(self) -> None:
        reads = self.router.reads
        for server, count in reads.items():
            if count:
                DB_READS.labels(server).inc(count)
                reads[server] = 0
        probe = self.router.probe
        primary = probe.primary_position
        for replica in probe.replicas:
            REPLICA_USABLE.labels(replica.name).set(1 if replica.usable else 0)
            known = primary is not None and replica.replayed >= 0
            behind = max(0, primary - replica.replayed) if primary is not None and known else -1
            REPLICA_BEHIND_BYTES.labels(replica.name).set(behind)


def sample_pool(engine: AsyncEngine) -> None:
    """Set the pool gauges from this process's engine (summed over workers at scrape time)."""
    pool: Any = engine.pool
    checkedout = getattr(pool, "checkedout", None)
    DB_POOL_IN_USE.set(checkedout() if checkedout is not None else 0)
    # SQLAlchemy does not count waiters; its asyncio queue does (created on first use).
    queue = getattr(getattr(pool, "_pool", None), "__dict__", {}).get("_queue")
    getters = getattr(queue, "_getters", ())
    DB_POOL_WAITING.set(sum(1 for waiter in getters if not waiter.done()))


def count_worker_start(workers: int) -> None:
    """Count this worker's start; a restart when ``workers`` had started already.

    Only ``enrich serve`` (multiprocess mode) replaces workers; its first ``workers`` starts
    are the launch, any later one replaces a worker that died or hung.
    """
    if multiprocess_mode() and _started_workers() >= workers:
        WORKER_RESTARTS.inc()
    WORKER_STARTS.inc()


def _started_workers() -> float:
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    value = registry.get_sample_value("enrich_worker_starts_total")
    return value or 0.0


class MetricsFlusher:
    """Moves the request tallies over every ``FLUSH_SECONDS``; samples the pool each second."""

    def __init__(self, engine: AsyncEngine, workers: int = 1) -> None:
        self.engine = engine
        self.workers = workers
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
        count_worker_start(self.workers)
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
