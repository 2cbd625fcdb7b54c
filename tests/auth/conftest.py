"""Helpers for the OAuth tests: tokens signed with the server's key (valid or forged), and
protected probe endpoints. Clients, tokens and the OAuth requests are tests/fixtures/callers.py's.

No business endpoint is needed to test bearer authentication: ``probe`` mounts a small
router, guarded by ``require_scope``, on a running app (routes can be added after startup).
"""

from __future__ import annotations

from typing import Annotated, Any

import jwt
import pytest
from fastapi import APIRouter, Depends, FastAPI

from app.auth.bearer import require_scope
from app.auth.tokens import Principal
from tests.conftest import RunningApp

# The fixtures new_caller (test_allowlist.py) and services (test_workers.py); the rest only for
# the modules outside tests/auth that still import them from here (tests/platform, tests/qa):
# they live in tests/fixtures now. Delete them here once those import them from there.
from tests.fixtures.callers import (  # noqa: F401
    basic,
    fetch_token,
    make_client_on,
    new_caller,
    revoke,
)
from tests.fixtures.polling import eventually  # noqa: F401
from tests.fixtures.servers import services  # noqa: F401

PROBE_READ = "/_test/read"
PROBE_WRITE = "/_test/write"
PROBE_ADMIN = "/_test/admin"


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
