"""The application factory and its lifespan (engine, cache, keys, background sync)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import structlog
from fastapi import FastAPI
from sqlalchemy import text

from app import __version__
from app.auth.router import router as auth_router
from app.auth.service import AuthFailureThrottle, KeyService, OAuthError
from app.auth.sync import AuthStateSync
from app.auth.tokens import KeyRing, RevocationView, TokenIssuer, TokenVerifier, grace_for
from app.cache import create_cache
from app.config import Settings, get_settings
from app.db import create_engine, create_sessionmaker
from app.dependencies import RuntimeDep
from app.enrich.router import router as enrich_router
from app.events.router import router as events_router
from app.exceptions import install_handlers
from app.logging import configure_logging
from app.middleware import BodyLimitMiddleware, RequestIdMiddleware
from app.profiles.router import router as profiles_router
from app.responses import JSONResponse
from app.state import Runtime

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
    verifier = TokenVerifier(keyring, settings.token_issuer, settings.audience, revocations)
    throttle = AuthFailureThrottle(
        cache,
        settings.auth_max_failures_per_client,
        settings.auth_max_failures_per_address,
        settings.auth_failure_window_seconds,
    )
    sync = AuthStateSync(
        sessionmaker,
        keyring,
        revocations,
        settings.revocation_poll_seconds,
        settings.key_refresh_seconds,
    )
    async with sessionmaker() as session:
        await KeyService(session).ensure_active(settings.signing_algorithm)
        await session.commit()
    await sync.refresh()
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
    )


async def close_runtime(runtime: Runtime) -> None:
    await runtime.auth_sync.stop()
    await runtime.cache.close()
    await runtime.engine.dispose()


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    runtime = await build_runtime(settings)
    runtime.auth_sync.start()
    app.state.runtime = runtime
    log.info("app.started", database=runtime.engine.dialect.name, cache=runtime.cache.name)
    try:
        yield
    finally:
        await close_runtime(runtime)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(settings)
    app = FastAPI(
        title="enrich",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        swagger_ui_init_oauth={"clientId": "", "usePkceWithAuthorizationCodeGrant": False},
    )
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
    app.include_router(ops_router())
    app.add_middleware(
        BodyLimitMiddleware,
        default_limit=settings.max_body_bytes,
        limits={"/v1/profiles/bulk": settings.bulk_max_body_bytes},
    )
    app.add_middleware(RequestIdMiddleware)
    return app


def ops_router() -> Any:
    from fastapi import APIRouter

    router = APIRouter(tags=["Operations"])

    @router.get("/healthz", summary="Liveness")
    async def healthz() -> dict[str, str]:
        """Answer 200 while the process is up."""
        return {"status": "ok"}

    @router.get(
        "/readyz",
        summary="Readiness",
        responses={503: {"description": "PostgreSQL or Redis is unreachable"}},
    )
    async def readyz(runtime: RuntimeDep) -> JSONResponse:
        """Check the database and the cache; 503 when one of them fails."""
        checks: dict[str, str] = {}
        try:
            async with asyncio.timeout(1.0), runtime.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            checks["database"] = "ok"
        except Exception as exc:
            checks["database"] = f"error: {type(exc).__name__}"
        try:
            async with asyncio.timeout(1.0):
                await runtime.cache.ping()
            checks["cache"] = "ok"
        except Exception as exc:
            checks["cache"] = f"error: {type(exc).__name__}"
        ready = all(v == "ok" for v in checks.values())
        return JSONResponse(
            {"status": "ready" if ready else "unavailable", "checks": checks},
            status_code=200 if ready else 503,
        )

    return router
