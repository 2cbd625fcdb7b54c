"""Per-client rate limits: token buckets shared by every worker, without a round trip per request.

Each client's bucket lives in Redis (one hash, updated by a Lua script on Redis's clock, so
workers on several hosts agree). A worker does not ask Redis for every request: it takes a
*lease* of tokens out of the shared bucket and spends them locally (a dictionary lookup and a
decrement); when the lease runs low, the next one is fetched in the background, sized to what
the worker spent over the last ``LEASE_SECONDS``. Nothing is spent that the shared bucket did
not hand out, so all workers together never pass the limit; tokens a worker holds while idle go
back to the bucket, so a worker the traffic moved away from does not starve the others. Redis is
asked on the request path only when a worker has nothing in hand: a client's first request, and
a client at its limit, which then learns when the next token comes and is refused locally until
then (so a client hammering past its limit costs Redis one call per token, not per request).

Without Redis (the embedded default) each worker keeps the buckets itself, with its share of
the rate. When Redis fails, workers fall back to the same local buckets until it answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import structlog

from app.core.errors import AppError
from app.platform.redis_client import RedisClient, is_cluster

log = structlog.get_logger(__name__)

# A lease covers about this long of the worker's recent spending.
LEASE_SECONDS = 0.05
# Leases unused for a sweep interval go back to the bucket; after a minute, even the last token.
SWEEP_SECONDS = 0.25
FORGET_SECONDS = 60.0
# After a Redis failure, local buckets are used for this long before Redis is tried again.
REDIS_RETRY_SECONDS = 1.0

# granted = tokens taken (0 when the bucket has less than one; a negative want gives tokens
# back); wait_ms = when the bucket next holds a whole token.
TAKE = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 't', 'v')
local tokens = burst
if state[1] then
  tokens = math.min(burst, tonumber(state[2]) + math.max(0, now - tonumber(state[1])) * rate)
end
local granted = 0
if want < 0 then
  tokens = math.min(burst, tokens - want)
elseif tokens >= 1 then
  granted = math.min(want, math.floor(tokens))
  tokens = tokens - granted
end
redis.call('HSET', KEYS[1], 't', tostring(now), 'v', tostring(tokens))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 60000)
local wait_ms = 0
if tokens < 1 then
  wait_ms = math.ceil((1 - tokens) / rate * 1000)
end
return {granted, wait_ms}
"""


@dataclass(frozen=True, slots=True)
class Limit:
    rate: float  # requests per second, > 0
    burst: int  # the bucket's size, >= 1


class RateLimitedError(AppError):
    status_code = 429
    code = "too_many_requests"

    def __init__(self, limit: Limit, retry_after: float) -> None:
        seconds = str(max(1, math.ceil(retry_after)))
        rate = f"{limit.rate:g}"
        super().__init__(
            "the client's rate limit is exceeded; retry later",
            headers={
                "Retry-After": seconds,
                "RateLimit-Limit": rate,
                "RateLimit-Remaining": "0",
                "RateLimit-Reset": seconds,
                "RateLimit-Policy": f"{rate};w=1;burst={limit.burst}",
            },
        )


class _Pending:
    """``try_take`` cannot decide without asking Redis: await ``take``."""


PENDING: Final = _Pending()
Verdict = RateLimitedError | _Pending | None


class LocalLimiter:
    """Token buckets kept in this process, each with ``share`` of the rate and the burst.

    ``clock`` is ``time.monotonic`` but in tests (which move it instead of waiting for tokens).
    """

    def __init__(self, share: float = 1.0, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.share = share
        self._clock = clock
        self._buckets: dict[str, list[float]] = {}

    def try_take(self, client_id: str, limit: Limit) -> RateLimitedError | None:
        rate = limit.rate * self.share
        burst = max(1.0, limit.burst * self.share)
        now = self._clock()
        bucket = self._buckets.get(client_id)
        if bucket is None:
            bucket = self._buckets[client_id] = [burst, now]
        tokens = min(burst, bucket[0] + (now - bucket[1]) * rate)
        bucket[1] = now
        if tokens >= 1:
            bucket[0] = tokens - 1
            return None
        bucket[0] = tokens
        return RateLimitedError(limit, (1 - tokens) / rate)

    async def take(self, client_id: str, limit: Limit) -> RateLimitedError | None:
        return self.try_take(client_id, limit)

    def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None


class _Lease:
    __slots__ = (
        "denied_until",
        "fetched_at",
        "held",
        "inflight",
        "limit",
        "low",
        "rate",
        "spent",
        "swept",
        "uses",
        "waiting",
    )

    def __init__(self, limit: Limit) -> None:
        self.limit = limit
        self.held = 0  # tokens in hand
        self.low = 1  # fetch the next lease when fewer are in hand
        self.spent = 0  # since the last fetch, to size the next one
        self.uses = 0  # ever, to notice idleness
        self.swept = 0  # ``uses`` at the last sweep
        self.rate = 0.0  # tokens per second this worker spends, smoothed
        self.fetched_at = 0.0
        self.denied_until = 0.0
        self.waiting = 0  # requests awaiting the fetch in flight
        self.inflight: asyncio.Future[None] | None = None


class RedisLimiter:
    """Leases out of token buckets in Redis (see the module docstring).

    ``clock`` (``time.monotonic`` but in tests) times this worker's side: refusals until the
    next token, the pause after a Redis failure, lease sizes and idleness. The buckets' refills
    follow Redis's own clock (TIME, in the script).
    """

    def __init__(
        self,
        client: RedisClient,
        prefix: str,
        fallback: LocalLimiter,
        timeout: float = 0.1,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self._clock = clock
        # A whole call, retries included: a hung Redis costs one request this long, once a second.
        self.timeout = timeout
        self.prefix = prefix + "ratelimit:"
        self.fallback = fallback
        self._script: Any = client.register_script(TAKE)
        self._leases: dict[str, _Lease] = {}
        self._redis_down_until = 0.0
        self._sweeper: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Future[None]] = set()

    def try_take(self, client_id: str, limit: Limit) -> Verdict:
        lease = self._leases.get(client_id)
        if lease is not None and lease.held > 0:
            lease.held -= 1
            lease.spent += 1
            lease.uses += 1
            if lease.held < lease.low and lease.inflight is None:
                self._fetch_soon(client_id, lease, limit)
            return None
        now = self._clock()
        if now < self._redis_down_until:
            return self.fallback.try_take(client_id, limit)
        # A refusal stands until the next token, unless the limit was changed since.
        if lease is not None and now < lease.denied_until and lease.limit == limit:
            return RateLimitedError(limit, lease.denied_until - now)
        return PENDING

    async def take(self, client_id: str, limit: Limit) -> RateLimitedError | None:
        """Decide with Redis: join the fetch in flight for this client, or start one.

        Several requests may wait for one fetch; whoever finds the lease spent fetches again,
        until a fetch says the bucket is empty (then the answer is 429 until its next token).
        """
        lease = self._leases.get(client_id)
        if lease is None:
            lease = self._leases[client_id] = _Lease(limit)
        while True:
            if lease.held > 0:
                lease.held -= 1
                lease.spent += 1
                lease.uses += 1
                return None
            now = self._clock()
            if now < self._redis_down_until:
                return self.fallback.try_take(client_id, limit)
            if now < lease.denied_until and lease.limit == limit:
                return RateLimitedError(limit, lease.denied_until - now)
            if lease.inflight is None:
                self._fetch_soon(client_id, lease, limit)
            assert lease.inflight is not None
            lease.waiting += 1
            try:
                await asyncio.shield(lease.inflight)
            finally:
                lease.waiting -= 1

    def _fetch_soon(self, client_id: str, lease: _Lease, limit: Limit) -> None:
        lease.limit = limit
        task = asyncio.ensure_future(self._fetch(client_id, lease))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        lease.inflight = task

    def _want(self, lease: _Lease) -> int:
        now = self._clock()
        if lease.fetched_at:
            measured = lease.spent / max(now - lease.fetched_at, 0.001)
            lease.rate = measured if lease.rate == 0 else (lease.rate + measured) / 2
        lease.spent = 0
        lease.fetched_at = now
        limit = lease.limit
        # At most an eighth of the bucket, and no more than a few leases' worth of the rate,
        # so tokens do not pile up in one worker while another has none.
        cap = max(1, min(limit.burst // 8, math.ceil(limit.rate * LEASE_SECONDS * 4)))
        return min(cap, max(1, lease.waiting, math.ceil(lease.rate * LEASE_SECONDS)))

    async def _fetch(self, client_id: str, lease: _Lease) -> None:
        want = self._want(lease)
        limit = lease.limit
        try:
            async with asyncio.timeout(self.timeout):
                granted, wait_ms = await self._script(
                    keys=[self.prefix + client_id], args=[limit.rate, limit.burst, want]
                )
        except Exception as exc:
            log.warning("ratelimit.redis_failed", error=type(exc).__name__)
            self._redis_down_until = self._clock() + REDIS_RETRY_SECONDS
            return
        finally:
            lease.inflight = None
        self._redis_down_until = 0.0
        lease.held += int(granted)
        lease.low = max(1, want // 2)
        if lease.held == 0:
            lease.denied_until = self._clock() + int(wait_ms) / 1000

    async def _give_back(self, returns: list[tuple[str, Limit, int]]) -> None:
        if is_cluster(self.client):
            await self._give_back_each(returns)
            return
        try:
            async with (
                asyncio.timeout(self.timeout),
                self.client.pipeline(transaction=False) as pipe,
            ):
                for client_id, limit, tokens in returns:
                    await self._script(
                        keys=[self.prefix + client_id],
                        args=[limit.rate, limit.burst, -tokens],
                        client=pipe,
                    )
                await pipe.execute()
        except Exception as exc:
            log.warning("ratelimit.redis_failed", error=type(exc).__name__)

    async def _give_back_each(self, returns: list[tuple[str, Limit, int]]) -> None:
        """On a cluster each bucket is on its own node: the scripts go out together, each to
        its node (a cluster pipeline cannot load a script a node has not seen)."""
        try:
            async with asyncio.timeout(self.timeout):
                await asyncio.gather(
                    *(
                        self._script(
                            keys=[self.prefix + client_id], args=[limit.rate, limit.burst, -tokens]
                        )
                        for client_id, limit, tokens in returns
                    )
                )
        except Exception as exc:
            log.warning("ratelimit.redis_failed", error=type(exc).__name__)

    def sweep(self) -> list[tuple[str, Limit, int]]:
        """Take back what idle leases hold (one token stays, so a slow client never waits)."""
        returns = []
        for client_id, lease in list(self._leases.items()):
            if lease.inflight is not None or lease.uses != lease.swept:
                lease.swept = lease.uses
                continue
            keep = 1
            if self._clock() - lease.fetched_at > FORGET_SECONDS:
                keep = 0
                del self._leases[client_id]
            if lease.held > keep:
                returns.append((client_id, lease.limit, lease.held - keep))
                lease.held = keep
        return returns

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            returns = self.sweep()
            if returns:
                await self._give_back(returns)

    def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="ratelimit-sweeper")

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        # Hand back what this worker holds, so a restart does not cost the clients tokens.
        returns = [(c, lease.limit, lease.held) for c, lease in self._leases.items() if lease.held]
        self._leases.clear()
        if returns:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._give_back(returns), 1.0)


Limiter = LocalLimiter | RedisLimiter
