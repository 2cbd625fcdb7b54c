"""The application factory and its lifespan (engine, cache, keys, background sync)."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import redis.asyncio as redis
import structlog
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.types import ASGIApp, Receive, Scope, Send

from app import __version__
from app.auth.router import router as auth_router
from app.auth.service import AuthFailureThrottle, KeyService, OAuthError
from app.auth.sync import AuthStateSync
from app.auth.tokens import KeyRing, RevocationView, TokenIssuer, TokenVerifier, grace_for
from app.cache import Cache, RedisCache, create_cache
from app.caching.bus import InvalidationBus
from app.caching.l1 import L1Cache
from app.caching.pipe import RedisPipe
from app.config import Settings, get_settings
from app.db import create_engine, create_sessionmaker
from app.docs_ui import install_docs
from app.enrich.cache import EnrichCache, Lookup, invalidation_channel
from app.enrich.fastpath import PATH as FAST_PATH
from app.enrich.fastpath import EnrichFastPath
from app.enrich.repository import PgLookup, first_match, reader
from app.enrich.router import router as enrich_router
from app.events.router import router as events_router
from app.exceptions import install_handlers
from app.logging import access_log_for, configure_logging
from app.middleware import Access, AccessMiddleware, BodyLimitMiddleware
from app.openapi import keep_example_nulls
from app.ops.metrics import request_metrics
from app.ops.network import NetworkSet
from app.ops.router import router as ops_router
from app.ops.state import build_operations
from app.profiles.limits import DocumentLimits
from app.profiles.limits import configure as configure_document_limits
from app.profiles.router import router as profiles_router
from app.responses import JSONResponse
from app.state import Runtime
from app.versions import check_supported

log = structlog.get_logger(__name__)

DESCRIPTION = """
Real-time profile enrichment for **Sitecore Personalize** connections.

1. Fetch a token: `POST /oauth/token` with `grant_type=client_credentials` (HTTP Basic or
   form credentials). Click **Authorize** above to do it from this page.
2. Call the API with `Authorization: Bearer <token>`.
"""


async def build_runtime(settings: Settings) -> Runtime:
    engine = create_engine(settings)
    sessionmaker = create_sessionmaker(engine)
    cache = create_cache(settings)
    keyring = KeyRing(settings.token_ttl_seconds, grace_for(settings.key_refresh_seconds))
    revocations = RevocationView()
    issuer = TokenIssuer(
        keyring, settings.token_issuer, settings.audience, settings.token_ttl_seconds
    )
    verifier = TokenVerifier(
        keyring,
        settings.token_issuer,
        settings.audience,
        revocations,
        max_cached_bytes=settings.token_cache_max_bytes,
    )
    throttle = AuthFailureThrottle(
        cache,
        settings.auth_max_failures_per_client,
        settings.auth_max_failures_per_address,
        settings.auth_failure_window_seconds,
    )
    ops = build_operations(settings, cache, engine)
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
    enrich_cache = await build_enrich_cache(settings, engine, cache)
    return Runtime(
        settings=settings,
        engine=engine,
        sessionmaker=sessionmaker,
        cache=cache,
        keyring=keyring,
        revocations=revocations,
        issuer=issuer,
        verifier=verifier,
        throttle=throttle,
        auth_sync=sync,
        enrich_cache=enrich_cache,
        ops=ops,
    )


async def build_enrich_cache(settings: Settings, engine: AsyncEngine, cache: Cache) -> EnrichCache:
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
    bus = InvalidationBus(
        l1,
        subscriber,
        invalidation_channel(settings),
        single_process=settings.workers == 1 and settings.cache_enabled,
        ack_timeout=settings.cache_invalidation_ack_ms / 1000,
    )
    lookup: Lookup
    if engine.dialect.name == "postgresql":
        lookup = await PgLookup.create(settings)
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
    return EnrichCache(settings, lookup, l2, bus, l1, pipe)


async def close_runtime(runtime: Runtime) -> None:
    await runtime.ops.stop()
    await runtime.auth_sync.stop()
    await runtime.enrich_cache.bus.stop()
    await runtime.enrich_cache.close()
    if isinstance(runtime.enrich_cache.lookup, PgLookup):
        await runtime.enrich_cache.lookup.close()
    if runtime.enrich_cache.bus.client is not None:
        await runtime.enrich_cache.bus.client.aclose()
    await runtime.cache.close()
    await runtime.engine.dispose()


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    runtime = await build_runtime(settings)
    runtime.auth_sync.start()
    runtime.ops.start()
    await runtime.enrich_cache.bus.start()
    app.state.runtime = runtime
    if isinstance(app, EnrichAPI):
        app.runtime = runtime
    # Everything built so far lives as long as the process: keep it out of the collector's
    # way, so full collections stay short (they caused the p99 in the first measurements).
    if settings.environment != "test":
        gc.collect()
        gc.freeze()
    log.info("app.started", database=runtime.engine.dialect.name, cache=runtime.cache.name)
    try:
        yield
    finally:
        await close_runtime(runtime)


class EnrichAPI(FastAPI):
    """FastAPI with the enrich fast path outside its whole middleware stack.

    The fast path serves most enrich requests by itself (see app/enrich/fastpath.py); every
    layer it does not pass through is time an L1 hit does not spend.
    """

    fast_path: ASGIApp | None = None
    runtime: Runtime | None = None  # as app.state.runtime, a plain attribute for the fast path

    def serve_enrich_fast(self, make: Callable[..., ASGIApp]) -> None:
        """Put ``make(app, fastapi_app)`` in front; what it passes on gets the whole stack."""
        self.fast_path = make(partial(FastAPI.__call__, self), self)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.fast_path is not None and scope["type"] == "http" and scope["path"] == FAST_PATH:
            await self.fast_path(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


def create_app(settings: Settings | None = None) -> FastAPI:
    check_supported()  # a library outside the tested range fails the start, not a request
    settings = settings or get_settings()
    configure_logging(settings)
    configure_document_limits(
        DocumentLimits(settings.document_max_depth, settings.document_max_chars)
    )
    app = EnrichAPI(
        title="enrich",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        # Metrics are Prometheus (/metrics); FastAPI's own OpenTelemetry hook costs every
        # request an environment lookup even when nothing is configured.
        telemetry={"tracing": False, "metrics": False, "logs": False},
        swagger_ui_init_oauth={"clientId": "", "usePkceWithAuthorizationCodeGrant": False},
        # Served by app/docs_ui.py as ENRICH_DOCS says, with the assets from the package (not
        # a CDN: /docs works offline) and a Content-Security-Policy.
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    install_docs(app, settings.docs_access)
    app.state.settings = settings
    install_handlers(app)

    @app.exception_handler(OAuthError)
    async def _oauth_error(_request: Any, exc: OAuthError) -> JSONResponse:
        headers = {"Cache-Control": "no-store", **(exc.headers or {})}
        return JSONResponse(
            {"error": exc.code, "error_description": exc.message},
            status_code=exc.status_code,
            headers=headers,
        )

    app.include_router(auth_router)
    app.include_router(enrich_router)
    app.include_router(profiles_router)
    app.include_router(events_router)
    app.include_router(ops_router)
    keep_example_nulls(app)  # FastAPI drops nulls from examples (an unknown guest's answer)
    access = Access(
        trusted_proxies=NetworkSet.parse(settings.trusted_proxies),
        access_log=access_log_for(settings),
        metrics=request_metrics if settings.metrics_enabled else None,
    )
    app.add_middleware(
        BodyLimitMiddleware,
        default_limit=settings.max_body_bytes,
        limits={"/v1/profiles/bulk": settings.bulk_max_body_bytes},
    )
    # The caller's address and request id for everything inside; access line, metrics.
    app.add_middleware(AccessMiddleware, access=access)
    app.serve_enrich_fast(
        partial(EnrichFastPath, access=access, body_limit=settings.max_body_bytes)
    )
    return app
