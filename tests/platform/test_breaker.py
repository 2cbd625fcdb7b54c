"""The circuit breaker before Redis: a dead Redis costs a few calls, then one probe a period."""

from __future__ import annotations

import pytest
import redis.exceptions

from app.platform.breaker import CircuitBreaker, is_outage
from tests.fixtures.clock import Clock


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def breaker(clock: Clock) -> CircuitBreaker:
    return CircuitBreaker(threshold=3, reset_seconds=2.0, clock=clock)


def fail(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        breaker.failure()


class TestCircuitBreaker:
    def test_a_new_breaker_lets_calls_through(self, breaker: CircuitBreaker) -> None:
        assert not breaker.is_open
        assert all(breaker.allow() for _ in range(10))

    def test_fewer_failures_than_the_threshold_keep_it_closed(
        self, breaker: CircuitBreaker
    ) -> None:
        fail(breaker, 2)
        assert not breaker.is_open
        assert breaker.allow()

    def test_a_success_between_failures_starts_the_count_again(
        self, breaker: CircuitBreaker
    ) -> None:
        fail(breaker, 2)
        breaker.success()
        fail(breaker, 2)
        assert not breaker.is_open  # four failures, never three in a row

    def test_the_threshold_in_a_row_opens_it_and_calls_are_refused(
        self, breaker: CircuitBreaker, clock: Clock
    ) -> None:
        fail(breaker, 3)
        assert breaker.is_open
        assert not breaker.allow()
        clock.advance(1.999)
        assert not breaker.allow()  # still within the reset period

    def test_after_the_reset_period_one_probe_goes_through(
        self, breaker: CircuitBreaker, clock: Clock
    ) -> None:
        fail(breaker, 3)
        clock.advance(2.0)
        assert breaker.allow()
        assert not breaker.allow()  # one probe a period, not every caller at once
        clock.advance(2.0)
        assert breaker.allow()  # the probe never answered: another one, a period later

    def test_a_probe_that_succeeds_closes_it(self, breaker: CircuitBreaker, clock: Clock) -> None:
        fail(breaker, 3)
        clock.advance(2.0)
        assert breaker.allow()
        breaker.success()
        assert not breaker.is_open
        assert all(breaker.allow() for _ in range(10))
        fail(breaker, 2)
        assert not breaker.is_open  # the count started again at zero

    def test_a_probe_that_fails_opens_it_for_another_period(
        self, breaker: CircuitBreaker, clock: Clock
    ) -> None:
        fail(breaker, 3)
        clock.advance(2.0)
        assert breaker.allow()
        breaker.failure()
        assert breaker.is_open
        clock.advance(1.0)
        assert not breaker.allow()
        clock.advance(1.0)
        assert breaker.allow()


class TestIsOutage:
    @pytest.mark.parametrize(
        "exc",
        [
            ConnectionRefusedError(),
            OSError("unreachable"),
            TimeoutError(),
            redis.exceptions.ConnectionError("lost"),
            redis.exceptions.TimeoutError("slow"),
        ],
    )
    def test_connection_errors_and_timeouts_count_against_redis(self, exc: Exception) -> None:
        assert is_outage(exc)

    @pytest.mark.parametrize(
        "exc",
        [
            redis.exceptions.ResponseError("WRONGTYPE"),
            redis.exceptions.DataError("cannot encode"),
            ValueError("bad value"),
        ],
    )
    def test_an_error_about_one_request_does_not(self, exc: Exception) -> None:
        assert not is_outage(exc)
