"""What operations adds to each process's runtime: policies, limiter, shutdown, pool gauges."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from app.cache import Cache, RedisCache
from app.config import Settings
from app.ops.guard import ClientPolicies, Guard
from app.ops.metrics import MetricsFlusher
from app.ops.network import NetworkSet
from app.ops.ratelimit import Limit, Limiter, LocalLimiter, RedisLimiter
from app.ops.shutdown import Drain


@dataclass
class Operations:
    policies: ClientPolicies
    guard: Guard
    limiter: Limiter | None
    metrics_networks: NetworkSet
    drain: Drain
    flusher: MetricsFlusher | None

    def start(self) -> None:
        if self.limiter is not None:
            self.limiter.start()
        if self.flusher is not None:
            self.flusher.start()
        self.drain.install()

    async def stop(self) -> None:
        self.drain.uninstall()
        if self.flusher is not None:
            await self.flusher.stop()
        if self.limiter is not None:
            await self.limiter.stop()


def build_operations(settings: Settings, cache: Cache, engine: AsyncEngine) -> Operations:
    default_limit = (
        Limit(settings.rate_limit_rps, settings.rate_limit_burst)
        if settings.rate_limit_rps > 0
        else None
    )
    policies = ClientPolicies(default_limit)
    limiter: Limiter | None = None
    if settings.rate_limit_enabled:
        # Without Redis each worker limits alone, so each gets its share of the rate.
        local = LocalLimiter(1 / settings.workers)
        if isinstance(cache, RedisCache):
            limiter = RedisLimiter(
                cache.client, settings.redis_prefix, local, settings.redis_socket_timeout
            )
        else:
            limiter = local
    return Operations(
        policies=policies,
        guard=Guard(policies, limiter),
        limiter=limiter,
        metrics_networks=NetworkSet.parse(settings.metrics_allow_networks),
        drain=Drain(settings.shutdown_drain_seconds),
        flusher=MetricsFlusher(engine) if settings.metrics_enabled else None,
    )
