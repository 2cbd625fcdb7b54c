"""A circuit breaker, so a dead or hung Redis is not waited on by every request."""

from __future__ import annotations

import time
from collections.abc import Callable

import redis.exceptions

# What says Redis is down or hung: the connection failed or timed out (redis-py's own
# errors, and the OSError/TimeoutError of app.platform.redis_pipe and asyncio.timeout), or a
# cluster's slot is not served for now. Anything else (a value that cannot be encoded, a
# command Redis refused) is about one request.
OUTAGES = (
    OSError,
    TimeoutError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    # A Redis Cluster with a slot nobody serves (a master failing over) or being moved.
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
    redis.exceptions.SlotNotCoveredError,
)


def is_outage(exc: BaseException) -> bool:
    """Whether ``exc`` counts against Redis (a connection error or a timeout)."""
    return isinstance(exc, OUTAGES)


class CircuitBreaker:
    """Closed until ``threshold`` failures in a row; then open for ``reset_seconds``.

    After that one call is let through (half-open): success closes the circuit, failure opens
    it again. ``clock`` is ``time.monotonic`` but in tests.
    """

    def __init__(
        self,
        threshold: int = 3,
        reset_seconds: float = 2.0,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold = threshold
        self.reset_seconds = reset_seconds
        self.failures = 0
        self.opened_at: float | None = None
        self._clock = clock

    @property
    def is_open(self) -> bool:
        return self.opened_at is not None

    def allow(self) -> bool:
        if self.opened_at is None:
            return True
        now = self._clock()
        if now - self.opened_at >= self.reset_seconds:
            self.opened_at = now  # half-open: one probe per period
            return True
        return False

    def success(self) -> None:
        self.failures = 0
        self.opened_at = None

    def failure(self) -> None:
        self.failures += 1
        if self.failures >= self.threshold:
            self.opened_at = self._clock()
