"""The application factory and its lifespan (engine, cache, keys, background sync)."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial

import structlog
from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from app import __version__
from app.apidocs.ui import install_docs
from app.auth.router import install_oauth_errors
from app.auth.router import router as auth_router
from app.core.addresses import NetworkSet
from app.core.certs import take_forwarded_certificate
from app.core.errors import install_handlers
from app.core.openapi import keep_example_nulls
from app.core.settings import Settings, get_settings
from app.core.versions import check_supported
from app.enrich.fastpath import PATH as FAST_PATH
from app.enrich.fastpath import EnrichFastPath, FastParts
from app.enrich.router import router as enrich_router
from app.events.router import router as events_router
from app.experiences.router import router as experiences_router
from app.health.router import router as health_router
from app.platform.logging import access_log_for, configure_logging
from app.platform.metrics import request_metrics
from app.platform.middleware import Access, AccessMiddleware, BodyLimitMiddleware
from app.platform.tracing import ServerSpans
from app.profiles.consent import configure as configure_consent
from app.profiles.limits import DocumentLimits
from app.profiles.limits import configure as configure_document_limits
from app.profiles.router import router as profiles_router
from app.runtime import open_runtime

log = structlog.get_logger(__name__)

DESCRIPTION = """
Real-time profile enrichment for **Sitecore Personalize** connections.

1. Fetch a token: `POST /oauth/token` with `grant_type=client_credentials` (HTTP Basic or
   form credentials). Click **Authorize** above to do it from this page.
2. Call the API with `Authorization: Bearer <token>`.
"""


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    async with open_runtime(settings) as runtime:
        app.state.runtime = runtime  # (for tests and tools; routes get parts by type)
        app.state.parts = runtime.parts()
        if isinstance(app, EnrichAPI):
            app.fast_parts = runtime.fast_parts()
        if isinstance(app, TracedEnrichAPI) and runtime.tracing is not None:
            ratio = settings.tracing_sample_ratio
            app.server_spans = ServerSpans(runtime.tracing.tracer, (FAST_PATH,), ratio)
        # Everything built so far lives as long as the process: keep it out of the collector's
        # way, so full collections stay short (they caused the p99 in the first measurements).
        if settings.environment != "test":
            gc.collect()
            gc.freeze()
        log.info("app.started", database=runtime.engine.dialect.name, cache=runtime.cache.name)
        yield


class EnrichAPI(FastAPI):
    """FastAPI with the enrich fast path outside its whole middleware stack.

    The fast path serves most enrich requests by itself (see app/enrich/fastpath.py); every
    layer it does not pass through is time an L1 hit does not spend.
    """

    fast_path: ASGIApp | None = None
    fast_parts: FastParts | None = None  # set by the lifespan; until then all falls through
    # The header a trusted proxy forwards client certificates in, and the proxies (none: off).
    cert_header: bytes | None = None
    cert_proxies: NetworkSet = NetworkSet(())

    def serve_enrich_fast(self, make: Callable[..., ASGIApp]) -> None:
        """Put ``make(app, fastapi_app)`` in front; what it passes on gets the whole stack."""
        self.fast_path = make(partial(FastAPI.__call__, self), self)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.cert_header is not None and scope["type"] == "http":
            take_forwarded_certificate(scope, self.cert_header, self.cert_proxies)  # type: ignore[arg-type]
        if self.fast_path is not None and scope["type"] == "http" and scope["path"] == FAST_PATH:
            await self.fast_path(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


class TracedEnrichAPI(EnrichAPI):
    """``EnrichAPI`` with a server span around every HTTP request, both doors (the fast path
    and the stack) alike: what ``create_app`` builds when ENRICH_TRACING_ENABLED is set. The
    choice is made once, here, so that with tracing off no request checks for it."""

    server_spans: ServerSpans | None = None  # set by the lifespan (the process's tracer)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        spans = self.server_spans
        if spans is None or scope["type"] != "http":
            await super().__call__(scope, receive, send)
        else:
            await spans.serve(super().__call__, scope, receive, send)


def create_app(settings: Settings | None = None) -> FastAPI:
    """The service: its routes, error handlers and middleware; the parts open in ``lifespan``."""
    check_supported()  # a library outside the tested range fails the start, not a request
    settings = settings or get_settings()
    configure_logging(settings)
    configure_document_limits(
        DocumentLimits(settings.document_max_depth, settings.document_max_chars)
    )
    configure_consent(settings.consent_rules)
    app = new_app(TracedEnrichAPI if settings.tracing_enabled else EnrichAPI)
    install_docs(app, settings.docs_access)
    app.state.settings = settings
    install_handlers(app)
    install_oauth_errors(app)
    include_routers(app)
    install_middleware(app, settings)
    return app


def new_app(kind: type[EnrichAPI] = EnrichAPI) -> EnrichAPI:
    """The application, bare: its OpenAPI description and how the docs are served."""
    return kind(
        title="enrich",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        # Metrics are Prometheus (/metrics); FastAPI's own OpenTelemetry hook costs every
        # request an environment lookup even when nothing is configured.
        telemetry={"tracing": False, "metrics": False, "logs": False},
        swagger_ui_init_oauth={"clientId": "", "usePkceWithAuthorizationCodeGrant": False},
        # Served by app/apidocs/ui.py as ENRICH_DOCS says, with the assets from the package (not
        # a CDN: /docs works offline) and a Content-Security-Policy.
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )


def include_routers(app: FastAPI) -> None:
    """Every domain's routes, in the order the OpenAPI document lists them."""
    app.include_router(auth_router)
    app.include_router(enrich_router)
    app.include_router(profiles_router)
    app.include_router(events_router)
    app.include_router(experiences_router)
    app.include_router(health_router)
    keep_example_nulls(app)  # FastAPI drops nulls from examples (an unknown guest's answer)


def install_middleware(app: EnrichAPI, settings: Settings) -> None:
    """Body limits and the access line around the routes; the enrich fast path before them."""
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
    if settings.client_cert_header:
        app.cert_header = settings.client_cert_header.lower().encode("ascii")
        app.cert_proxies = NetworkSet.parse(settings.trusted_proxies)
