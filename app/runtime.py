"""Each process's long-lived parts: built once at start, shared by every request, closed at exit.

Whoever builds a part also registers how it closes, on one ``AsyncExitStack``: parts close in
the reverse of the order they opened, and nothing reaches inside another part to close it.
Routes get their parts by type (``app.core.parts``), never this whole object; the fast path
gets the few it needs (``FastParts``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from functools import partial

import redis.asyncio as redis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.auth.guard import ClientPolicies, Guard
from app.auth.service import AuthFailureThrottle, KeyService
from app.auth.sync import AuthStateSync
from app.auth.tokens import KeyRing, RevocationView, TokenIssuer, TokenVerifier, grace_for
from app.core.addresses import NetworkSet
from app.core.db import create_engine, create_sessionmaker
from app.core.parts import Parts
from app.core.settings import Settings
from app.enrich.cache.bus import InvalidationBus
from app.enrich.cache.l1 import L1Cache
from app.enrich.cache.remote import invalidation_channel
from app.enrich.cache.store import EnrichCache, Lookup
from app.enrich.fastpath import FastParts
from app.enrich.repository import PgLookup, first_match, reader
from app.health.router import MetricsGate
from app.platform.kv import Cache, RedisCache, create_cache
from app.platform.metrics import MetricsFlusher
from app.platform.ratelimit import Limit, Limiter, LocalLimiter, RedisLimiter
from app.platform.redis_pipe import RedisPipe
from app.platform.shutdown import Drain
from app.profiles.writes import Invalidation


@dataclass
class Operations:
    """Per-client policies and the guard that applies them, the limiter, drain and metrics."""

    policies: ClientPolicies
    guard: Guard
    limiter: Limiter | None
    metrics: MetricsGate
    drain: Drain
    flusher: MetricsFlusher | None


@dataclass
class Runtime:
    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    cache: Cache
    keyring: KeyRing
    revocations: RevocationView
    issuer: TokenIssuer
    verifier: TokenVerifier
    throttle: AuthFailureThrottle
    auth_sync: AuthStateSync
    enrich_cache: EnrichCache
    ops: Operations

    def parts(self) -> Parts:
        """The parts routes ask for by type."""
        parts = Parts()
        parts.add(Settings, self.settings)
        parts.add(AsyncEngine, self.engine)
        parts.add(async_sessionmaker, self.sessionmaker)
        parts.add(Cache, self.cache)  # type: ignore[type-abstract]  # (by its interface)
        parts.add(KeyRing, self.keyring)
        parts.add(TokenIssuer, self.issuer)
        parts.add(TokenVerifier, self.verifier)
        parts.add(AuthFailureThrottle, self.throttle)
        parts.add(AuthStateSync, self.auth_sync)
        parts.add(Guard, self.ops.guard)
        parts.add(Drain, self.ops.drain)
        parts.add(MetricsGate, self.ops.metrics)
        parts.add(EnrichCache, self.enrich_cache)
        parts.add(Invalidation, Invalidation(self.enrich_cache.invalidate))
        return parts

    def fast_parts(self) -> FastParts:
        return FastParts(
            verifier=self.verifier,
            guard=self.ops.guard,
            cache=self.enrich_cache,
            phone_region=self.settings.default_phone_region,
        )


@asynccontextmanager
async def open_runtime(settings: Settings) -> AsyncIterator[Runtime]:
    """The parts, started; on exit each is stopped and closed, the last opened first."""
    async with AsyncExitStack() as stack:
        engine = create_engine(settings)
        stack.push_async_callback(engine.dispose)
        sessionmaker = create_sessionmaker(engine)
        cache = create_cache(settings)
        stack.push_async_callback(cache.close)
        keyring = KeyRing(settings.token_ttl_seconds, grace_for(settings.key_refresh_seconds))
        revocations = RevocationView()
        ops = await stack.enter_async_context(open_operations(settings, cache, engine))
        sync = AuthStateSync(
            sessionmaker,
            keyring,
            revocations,
            settings.revocation_poll_seconds,
            settings.key_refresh_seconds,
            ops.policies,
        )
        async with sessionmaker() as session:
            await KeyService(session).ensure_active(settings.signing_algorithm)
            await session.commit()
        await sync.refresh()
        enrich_cache = await stack.enter_async_context(open_enrich_cache(settings, engine, cache))
        sync.start()
        stack.push_async_callback(sync.stop)
        yield Runtime(
            settings=settings,
            engine=engine,
            sessionmaker=sessionmaker,
            cache=cache,
            keyring=keyring,
            revocations=revocations,
            issuer=TokenIssuer(
                keyring, settings.token_issuer, settings.audience, settings.token_ttl_seconds
            ),
            verifier=TokenVerifier(
                keyring,
                settings.token_issuer,
                settings.audience,
                revocations,
                max_cached_bytes=settings.token_cache_max_bytes,
            ),
            throttle=AuthFailureThrottle(
                cache,
                settings.auth_max_failures_per_client,
                settings.auth_max_failures_per_address,
                settings.auth_failure_window_seconds,
            ),
            auth_sync=sync,
            enrich_cache=enrich_cache,
            ops=ops,
        )


@asynccontextmanager
async def open_operations(
    settings: Settings, cache: Cache, engine: AsyncEngine
) -> AsyncIterator[Operations]:
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
    ops = Operations(
        policies=policies,
        guard=Guard(policies, limiter),
        limiter=limiter,
        metrics=MetricsGate(NetworkSet.parse(settings.metrics_allow_networks)),
        drain=Drain(settings.shutdown_drain_seconds),
        flusher=MetricsFlusher(engine) if settings.metrics_enabled else None,
    )
    async with AsyncExitStack() as stack:
        if limiter is not None:
            limiter.start()
            stack.push_async_callback(limiter.stop)
        if ops.flusher is not None:
            ops.flusher.start()
            stack.push_async_callback(ops.flusher.stop)
        ops.drain.install()
        stack.callback(ops.drain.uninstall)
        yield ops


@asynccontextmanager
async def open_enrich_cache(
    settings: Settings, engine: AsyncEngine, cache: Cache
) -> AsyncIterator[EnrichCache]:
    """The two-level cache: L1 here, L2 in Redis, the bus between workers, the lookup below."""
    async with AsyncExitStack() as stack:
        l1 = L1Cache(
            settings.cache_l1_max_entries if settings.cache_enabled else 0,
            settings.cache_l1_ttl_seconds,
            settings.cache_stale_seconds,
            max_bytes=settings.cache_l1_max_bytes,
        )
        l2 = cache if isinstance(cache, RedisCache) else None
        subscriber = None
        if l2 is not None and settings.cache_enabled:
            # Its own connection: a subscription blocks on reads, unlike the short-timeout pool.
            subscriber = redis.Redis.from_url(
                settings.redis_dsn or "", socket_connect_timeout=settings.redis_connect_timeout
            )
            stack.push_async_callback(subscriber.aclose)
        bus = InvalidationBus(
            l1,
            subscriber,
            invalidation_channel(settings),
            single_process=settings.workers == 1 and settings.cache_enabled,
            ack_timeout=settings.cache_invalidation_ack_ms / 1000,
        )
        lookup: Lookup
        if engine.dialect.name == "postgresql":
            pg_lookup = await PgLookup.create(settings)
            stack.push_async_callback(pg_lookup.close)
            lookup = pg_lookup
        else:
            lookup = partial(first_match, reader(engine))
        pipe = None
        dsn = settings.redis_dsn
        if l2 is not None and settings.cache_enabled and dsn and RedisPipe.supports(dsn):
            pipe = RedisPipe(
                dsn,
                connect_timeout=settings.redis_connect_timeout,
                timeout=min(settings.redis_socket_timeout, settings.deadline_ms / 1000),
            )
        enrich_cache = EnrichCache(settings, lookup, l2, bus, l1, pipe)
        stack.push_async_callback(enrich_cache.close)  # (it closes the pipe it was given)
        await bus.start()
        stack.push_async_callback(bus.stop)
        yield enrich_cache
