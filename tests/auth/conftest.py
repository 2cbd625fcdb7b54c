"""Helpers for the OAuth tests: Basic headers, token requests, and protected probe endpoints.

No business endpoint is needed to test bearer authentication: ``probe`` mounts a small
router, guarded by ``require_scope``, on a running app (routes can be added after startup).
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any
from urllib.parse import quote_plus

import httpx
import jwt
import pytest
from fastapi import APIRouter, Depends, FastAPI

from app.auth.bearer import require_scope
from app.auth.service import ClientService
from app.auth.tokens import Principal
from tests.conftest import OAuthClient, RunningApp
from tests.fixtures.callers import new_caller  # noqa: F401  (fixture, for test_allowlist.py)

PROBE_READ = "/_test/read"
PROBE_WRITE = "/_test/write"
PROBE_ADMIN = "/_test/admin"


def basic(client_id: str, secret: str) -> str:
    """An Authorization value per RFC 6749 2.3.1: each part form-urlencoded, then base64."""
    raw = f"{quote_plus(client_id)}:{quote_plus(secret)}"
    return "Basic " + base64.b64encode(raw.encode()).decode()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def request_token(
    http: httpx.AsyncClient,
    client: OAuthClient,
    *,
    method: str = "basic",
    scope: str | None = None,
    **extra: str,
) -> httpx.Response:
    """POST /oauth/token with client_secret_basic ("basic") or client_secret_post ("post")."""
    form: dict[str, str] = {"grant_type": "client_credentials", **extra}
    headers: dict[str, str] = {}
    if scope is not None:
        form["scope"] = scope
    if method == "basic":
        headers["Authorization"] = basic(client.client_id, client.client_secret)
    else:
        form.update(client_id=client.client_id, client_secret=client.client_secret)
    return await http.post("/oauth/token", data=form, headers=headers)


async def fetch_token(http: httpx.AsyncClient, client: OAuthClient, **kwargs: Any) -> str:
    response = await request_token(http, client, **kwargs)
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


async def revoke(
    http: httpx.AsyncClient, caller: OAuthClient, token: str, method: str = "basic"
) -> httpx.Response:
    form = {"token": token, "token_type_hint": "access_token"}
    headers = {}
    if method == "basic":
        headers["Authorization"] = basic(caller.client_id, caller.client_secret)
    else:
        form.update(client_id=caller.client_id, client_secret=caller.client_secret)
    return await http.post("/oauth/revoke", data=form, headers=headers)


async def introspect(
    http: httpx.AsyncClient, caller: OAuthClient, token: str, method: str = "basic"
) -> httpx.Response:
    form = {"token": token}
    headers = {}
    if method == "basic":
        headers["Authorization"] = basic(caller.client_id, caller.client_secret)
    else:
        form.update(client_id=caller.client_id, client_secret=caller.client_secret)
    return await http.post("/oauth/introspect", data=form, headers=headers)


async def make_client_on(app: RunningApp, scopes: str = "profiles:read") -> OAuthClient:
    """A client made through ``app``'s database (for apps started by ``app_factory``)."""
    async with app.runtime.sessionmaker() as session:
        client, secret = await ClientService(session).create("test", scopes)
        await session.commit()
    return OAuthClient(client.client_id, secret, sorted(client.scope_set))


def valid_claims(running: RunningApp, client_id: str) -> dict[str, Any]:
    _, claims = running.runtime.issuer.issue(client_id, ["profiles:read"])
    return dict(claims)


def sign(running: RunningApp, claims: dict[str, Any], **header: Any) -> str:
    """Sign with the server's own active key (only the claims or header are wrong)."""
    keyring = running.runtime.keyring
    key = keyring.verification_key(keyring.active_kid or "")
    assert key is not None
    headers = {"kid": key.kid, "typ": "at+jwt", **header}
    return jwt.encode(claims, key.private, algorithm=key.algorithm, headers=headers)


def forged(running: RunningApp, client_id: str, **changes: Any) -> str:
    return sign(running, {**valid_claims(running, client_id), **changes})


def probe_router() -> APIRouter:
    router = APIRouter()

    @router.get(PROBE_READ)
    async def read(caller: Annotated[Principal, Depends(require_scope("profiles:read"))]) -> Any:
        return {"client_id": caller.client_id, "scopes": sorted(caller.scopes)}

    @router.get(PROBE_WRITE)
    async def write(caller: Annotated[Principal, Depends(require_scope("profiles:write"))]) -> Any:
        return {"client_id": caller.client_id}

    @router.get(PROBE_ADMIN)
    async def admin(caller: Annotated[Principal, Depends(require_scope("admin"))]) -> Any:
        return {"client_id": caller.client_id}

    return router


def mount_probe(app: FastAPI) -> None:
    """Add the probe endpoints to an app (also one that is already serving)."""
    if not any(getattr(route, "path", None) == PROBE_READ for route in app.routes):
        app.include_router(probe_router())


@pytest.fixture
def probe(running: RunningApp) -> RunningApp:
    """The running app with the probe endpoints mounted."""
    mount_probe(running.app)
    return running


async def eventually(
    check: Callable[[], Awaitable[bool]], *, deadline: float, interval: float = 0.02
) -> float:
    """Poll ``check`` until it is true; return the seconds it took, or fail at ``deadline``."""
    start = time.monotonic()
    while True:
        if await check():
            return time.monotonic() - start
        if time.monotonic() - start > deadline:
            raise AssertionError(f"condition not met within {deadline} s")
        await asyncio.sleep(interval)
