"""Liveness, readiness and the Prometheus metrics."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response, Security
from pydantic import BaseModel, Field
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.auth.bearer import AuthorizerDep, api_key_header, bearer_token
from app.core.addresses import FORWARDED_KEY, NetworkSet
from app.core.errors import NotFoundError
from app.core.openapi import errors
from app.core.parts import part
from app.core.responses import JSONResponse
from app.core.settings import SettingsDep
from app.platform.kv import Cache
from app.platform.metrics import CONTENT_TYPE, render, sample_pool
from app.platform.shutdown import Drain

router = APIRouter(tags=["Operations"])


@dataclass(frozen=True)
class MetricsGate:
    """The addresses that may read /metrics without a token (ENRICH_METRICS_ALLOW_NETWORKS)."""

    networks: NetworkSet


class Readiness(BaseModel):
    """What /readyz found: `ready`, `unavailable` (a check failed) or `draining`."""

    status: str = Field(examples=["ready"])
    checks: dict[str, str] = Field(
        description="database and cache: ok, or the error", examples=[{"database": "ok"}]
    )


@router.get("/healthz", summary="Liveness")
async def healthz() -> dict[str, str]:
    """Answer 200 while the process is up."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Readiness",
    response_model=Readiness,
    responses={
        503: {
            "model": Readiness,
            "description": "PostgreSQL or Redis is unreachable, or shutting down",
        }
    },
)
async def readyz(
    drain: Annotated[Drain, Depends(part(Drain))],
    engine: Annotated[AsyncEngine, Depends(part(AsyncEngine))],
    cache: Annotated[Cache, Depends(part(Cache))],
) -> JSONResponse:
    """Check the database and the cache; 503 when one of them fails or the worker is stopping."""
    drain.probed = True
    if drain.draining:
        return JSONResponse({"status": "draining", "checks": {}}, status_code=503)
    checks: dict[str, str] = {}
    try:
        async with asyncio.timeout(1.0), engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"error: {type(exc).__name__}"
    try:
        async with asyncio.timeout(1.0):
            await cache.ping()
        checks["cache"] = "ok"
    except Exception as exc:
        checks["cache"] = f"error: {type(exc).__name__}"
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "unavailable", "checks": checks},
        status_code=200 if ready else 503,
    )


def _from_metrics_network(request: Request, gate: MetricsGate) -> bool:
    """Whether the caller's address may read the metrics without a token.

    A request that came through a proxy not configured as trusted carries the proxy's address,
    which may well be in the range (a proxy on the same host): that is not a scraper.
    """
    headers = request.headers
    forwarded = "x-forwarded-for" in headers or "forwarded" in headers
    if forwarded and not request.scope.get(FORWARDED_KEY):
        return False
    host = request.client.host if request.client else None
    return host in gate.networks


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE: {}}, "description": "every worker's metrics"},
        **errors(
            401,
            403,
            404,
            s401="Outside ENRICH_METRICS_ALLOW_NETWORKS and no valid token",
            s403="The token lacks the admin scope",
            s404="Metrics are switched off (ENRICH_METRICS_ENABLED=false)",
        ),
    },
)
async def metrics(
    request: Request,
    settings: SettingsDep,
    gate: Annotated[MetricsGate, Depends(part(MetricsGate))],
    engine: Annotated[AsyncEngine, Depends(part(AsyncEngine))],
    authorizer: AuthorizerDep,
    token: str | None = Security(bearer_token, scopes=["admin"]),
    api_key: str | None = Security(api_key_header),
) -> Response:
    """Expose the metrics of every worker to Prometheus.

    Open to ENRICH_METRICS_ALLOW_NETWORKS (loopback by default); from anywhere else it needs an
    access token with the `admin` scope (Prometheus' `oauth2` scrape setting fetches one).
    """
    if not settings.metrics_enabled:
        raise NotFoundError("metrics are switched off")
    if not _from_metrics_network(request, gate):
        await authorizer.authorize(request, token, "admin", api_key)
    sample_pool(engine)
    return Response(render(), media_type=CONTENT_TYPE)
