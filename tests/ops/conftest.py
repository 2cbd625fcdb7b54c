"""Helpers for the operations tests: clients with tokens, limits, allowlists, metric values."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
import pytest
from prometheus_client import REGISTRY

from app.auth.service import ClientService
from app.platform.metrics import request_metrics
from tests.conftest import ClientMaker, OAuthClient, RunningApp
from tests.fixtures.servers import services  # noqa: F401  (fixture)

ENRICH = "/v1/enrich"
GUEST = {"identifiers": {"email": "nobody@example.com"}}


@dataclass
class Caller:
    client: OAuthClient
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    @property
    def client_id(self) -> str:
        return self.client.client_id


async def fetch_token(http: httpx.AsyncClient, client: OAuthClient) -> str:
    response = await http.post(
        "/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=(client.client_id, client.client_secret),
    )
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


@pytest.fixture
def new_caller(make_client: ClientMaker, http: httpx.AsyncClient):  # type: ignore[no-untyped-def]
    async def maker(scopes: str = "profiles:read profiles:write events:write") -> Caller:
        client = await make_client(scopes)
        return Caller(client, await fetch_token(http, client))

    return maker


async def set_limit(
    running: RunningApp, client_id: str, rps: float | None, burst: int | None = None
) -> None:
    """Store a client's limit and load it now (the poll would within half a second)."""
    async with running.runtime.sessionmaker() as session:
        await ClientService(session).limit(client_id, rps, burst)
        await session.commit()
    await running.runtime.auth_sync.refresh()


async def set_allowlist(running: RunningApp, client_id: str, networks: list[str]) -> None:
    async with running.runtime.sessionmaker() as session:
        await ClientService(session).allow(client_id, networks)
        await session.commit()
    await running.runtime.auth_sync.refresh()


def sample(name: str, **labels: str) -> float:
    """A metric's current value in this process (0 when it has no sample yet)."""
    request_metrics.flush()
    return REGISTRY.get_sample_value(name, labels) or 0.0
