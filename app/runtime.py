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

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app import __version__
from app.auth.apikeys import ApiKeyAuth
from app.auth.certauth import CertificateAuthorities
from app.auth.guard import ClientPolicies, Guard
from app.auth.service import AuthFailureThrottle
from app.auth.signing_keys import KeyService
from app.auth.sync import AuthStateSync
from app.auth.tokens import KeyRing, RevocationView, TokenIssuer, TokenVerifier, grace_for
from app.core.addresses import NetworkSet
from app.core.db import create_engine, create_sessionmaker
from app.core.parts import Parts
from app.core.replica_reads import ReadSessions, ReplicaRouter
from app.core.replicas import ReplicaProbe, WriteMarks
from app.core.settings import Settings
from app.enrich.cache.bus import InvalidationBus
from app.enrich.cache.l1 import L1Cache, dep_digest
from app.enrich.cache.remote import invalidation_channel
from app.enrich.cache.store import EnrichCache, Lookup, Replicas
from app.enrich.cache.traced import cache_class
from app.enrich.fastpath import FastParts
from app.enrich.repository import PgLookup, first_match, reader
from app.enrich.views.registry import ViewRegistry
from app.events.retention import open_retention
from app.experiences.service import Relay, open_relay
from app.health.router import MetricsGate
from app.platform import redis_client
from app.platform.kv import Cache, RedisCache, create_cache
from app.platform.metrics import MetricsFlusher, ReplicaMetrics, request_metrics
from app.platform.ratelimit import TAKE, Limit, Limiter, LocalLimiter, RedisLimiter
from app.platform.redis_pipe import RedisPipe
from app.platform.shutdown import Drain
from app.platform.tracing import Spans, Tracing, open_tracing
from app.profiles.writes import Invalidation

log = structlog.get_logger(__name__)


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
    api_keys: ApiKeyAuth
    views: ViewRegistry
    enrich_cache: EnrichCache
    ops: Operations
    relay: Relay
    reads: ReadSessions
    authorities: CertificateAuthorities
    tracing: Tracing | None = None  # (None: ENRICH_TRACING_ENABLED is off)

    def parts(self) -> Parts:
        """The parts routes ask for by type."""
        parts = Parts()
        parts.add(Settings, self.settings)
        parts.add(AsyncEngine, self.engine)
        parts.add(async_sessionmaker, self.sessionmaker)
        parts.add(ReadSessions, self.reads)
        parts.add(Cache, self.cache)  # type: ignore[type-abstract]  # (by its interface)
        parts.add(KeyRing, self.keyring)
        parts.add(TokenIssuer, self.issuer)
        parts.add(TokenVerifier, self.verifier)
        parts.add(AuthFailureThrottle, self.throttle)
        parts.add(AuthStateSync, self.auth_sync)
        parts.add(ApiKeyAuth, self.api_keys)
        parts.add(CertificateAuthorities, self.authorities)
        parts.add(Guard, self.ops.guard)
        parts.add(Drain, self.ops.drain)
        parts.add(MetricsGate, self.ops.metrics)
        parts.add(EnrichCache, self.enrich_cache)
        parts.add(ViewRegistry, self.views)
        parts.add(Invalidation, Invalidation(self.enrich_cache.invalidate))
        parts.add(Relay, self.relay)
        parts.add(Spans, Spans(self.tracing.tracer if self.tracing else None))
        return parts

    def fast_parts(self) -> FastParts:
        return FastParts(
            verifier=self.verifier,
            guard=self.ops.guard,
            cache=self.enrich_cache,
            phone_region=self.settings.default_phone_region,
            views=self.views,
            api_keys=self.api_keys,
            api_key_header=self.settings.api_key_header.lower().encode("latin-1"),
        )


@asynccontextmanager
async def open_runtime(settings: Settings) -> AsyncIterator[Runtime]:
    """The parts, started; on exit each is stopped and closed, the last opened first."""
    async with AsyncExitStack() as stack:
        # First opened, last closed: the spans of everything else's closing are exported too.
        tracing = await stack.enter_async_context(open_tracing(settings, __version__))
        spans = Spans(tracing.tracer if tracing is not None else None)
        engine = create_engine(settings)
        stack.push_async_callback(engine.dispose)
        sessionmaker = create_sessionmaker(engine)
        cache = create_cache(settings)
        stack.push_async_callback(cache.close)
        if isinstance(cache, RedisCache):
            await cache.prepare(TAKE)  # (on a cluster: its slot map, scripts on every master)
        keyring = KeyRing(settings.token_ttl_seconds, grace_for(settings.key_refresh_seconds))
        revocations = RevocationView()
        ops = await stack.enter_async_context(open_operations(settings, cache, engine))
        views = ViewRegistry(settings.views_max_bytes)
        sync, api_keys = await load_auth_state(
            settings, sessionmaker, keyring, revocations, ops, views
        )
        replicas = await stack.enter_async_context(open_replicas(settings))
        enrich_cache = await stack.enter_async_context(
            open_enrich_cache(settings, engine, cache, replicas, spans)
        )
        sync.start()
        stack.push_async_callback(sync.stop)
        relay = await stack.enter_async_context(open_relay(settings, enrich_cache))
        await stack.enter_async_context(open_retention(settings, sessionmaker))
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
            throttle=auth_throttle(settings, cache),
            auth_sync=sync,
            api_keys=api_keys,
            views=views,
            enrich_cache=enrich_cache,
            ops=ops,
            relay=relay,
            reads=read_sessions(sessionmaker, replicas),
            authorities=CertificateAuthorities(settings.client_ca_certs or None),
            tracing=tracing,
        )


def auth_throttle(settings: Settings, cache: Cache) -> AuthFailureThrottle:
    return AuthFailureThrottle(
        cache,
        settings.auth_max_failures_per_client,
        settings.auth_max_failures_per_address,
        settings.auth_failure_window_seconds,
    )


async def load_auth_state(
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    keyring: KeyRing,
    revocations: RevocationView,
    ops: Operations,
    views: ViewRegistry,
) -> tuple[AuthStateSync, ApiKeyAuth]:
    """The signing keys, revocations, client policies, API keys and views, read once (an
    active signing key made first if there is none); the sync that keeps them fresh (views
    ride on its poll), not started."""
    sync = AuthStateSync(
        sessionmaker,
        keyring,
        revocations,
        settings.revocation_poll_seconds,
        settings.key_refresh_seconds,
        ops.policies,
    )
    api_keys = ApiKeyAuth(sessionmaker, revocations, settings.api_key_cache_max_bytes)
    sync.api_keys = api_keys
    sync.riders.append(views.refresh)
    async with sessionmaker() as session:
        await KeyService(session).ensure_active(settings.signing_algorithm)
        await session.commit()
    await sync.refresh()
    return sync, api_keys


def read_sessions(
    primary: async_sessionmaker[AsyncSession], replicas: ReplicaParts | None
) -> ReadSessions:
    if replicas is None:
        return ReadSessions(primary)
    return ReadSessions(
        primary,
        replicas.router,
        replicas.sessionmakers,
        dep_digest,  # type: ignore[arg-type]
        timeout=replicas.router.probe.timeout,
    )


@dataclass
class ReplicaParts:
    """The read replicas: the marks and the probe behind the router, a lookup pool and an
    engine on each replica."""

    router: ReplicaRouter
    lookups: list[Lookup]
    sessionmakers: list[async_sessionmaker[AsyncSession]]
    metrics: ReplicaMetrics  # (held here: the metrics hold their sources weakly)


@asynccontextmanager
async def open_replicas(settings: Settings) -> AsyncIterator[ReplicaParts | None]:
    """None without replica URLs. The probe starts once the cache's bus does
    (``open_enrich_cache``): until it says which replica has what, the primary answers."""
    urls = settings.replica_urls
    if not urls:
        yield None
        return
    async with AsyncExitStack() as stack:
        marks = WriteMarks(settings.database_replica_marks)
        probe = ReplicaProbe(
            settings.database_url,
            urls,
            marks,
            lambda: router.gate(),
            interval=settings.database_replica_probe_seconds,
            max_lag=settings.database_replica_max_lag_seconds,
            timeout=min(settings.db_pool_timeout, 1.0),
            pgbouncer=settings.database_pgbouncer,
        )
        router = ReplicaRouter(marks, probe, lambda: False)  # (the cache sets the gate)
        stack.push_async_callback(probe.stop)
        lookups: list[Lookup] = []
        makers = []
        size = settings.database_replica_pool_size
        for url in urls:
            lookup = await PgLookup.create(settings, url, size)
            stack.push_async_callback(lookup.close)
            lookups.append(lookup)
            replica_engine = create_engine(settings, url, size)
            stack.push_async_callback(replica_engine.dispose)
            makers.append(create_sessionmaker(replica_engine))
        metrics = ReplicaMetrics(router)
        request_metrics.add_source(metrics)
        yield ReplicaParts(router, lookups, makers, metrics)


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
        flusher=MetricsFlusher(engine, settings.workers) if settings.metrics_enabled else None,
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
    settings: Settings,
    engine: AsyncEngine,
    cache: Cache,
    replicas: ReplicaParts | None = None,
    spans: Spans | None = None,
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
            subscriber = redis_client.connect_bus(settings)
            stack.push_async_callback(subscriber.aclose)
        bus = InvalidationBus(
            l1,
            subscriber,
            invalidation_channel(settings),
            single_process=settings.workers == 1 and settings.cache_enabled,
            ack_timeout=settings.cache_invalidation_ack_ms / 1000,
        )
        lookup: Lookup
        dialect = engine.dialect.name
        if dialect == "postgresql":
            pg_lookup = await PgLookup.create(settings)
            stack.push_async_callback(pg_lookup.close)
            lookup = pg_lookup
        else:
            lookup = partial(first_match, reader(engine))
        pipe = None
        dsn = settings.redis_dsn
        # Not on a cluster: its reads go by slot to several nodes, through redis-py.
        single = not settings.redis_cluster
        if l2 is not None and settings.cache_enabled and dsn and single and RedisPipe.supports(dsn):
            pipe = RedisPipe(
                dsn,
                connect_timeout=settings.redis_connect_timeout,
                timeout=min(settings.redis_socket_timeout, settings.deadline_ms / 1000),
            )
        on_replicas = Replicas(replicas.router, replicas.lookups) if replicas else None
        new_cache = cache_class(spans, dialect)  # (tracing off: EnrichCache itself)
        enrich_cache = new_cache(settings, lookup, l2, bus, l1, pipe, on_replicas)
        stack.push_async_callback(enrich_cache.close)  # (it closes the pipe it was given)
        await bus.start()
        stack.push_async_callback(bus.stop)
        if replicas is not None:
            # A replica answers here only while this process hears every write.
            replicas.router.gate = enrich_cache.hears_every_write
            bus.on_write = replicas.router.marks.note
            await replicas.router.probe.start()
        yield enrich_cache
