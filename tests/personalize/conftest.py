"""The Personalize stand-in's tests: a live ``enrich serve`` on a database of the test's own."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.fixtures.databases import create_sqlite_database
from tests.fixtures.servers import ServiceFactory, services  # noqa: F401  (fixture)
from tests.fixtures.service import Service, bearer_headers, create_client

JANE = {
    "identifiers": {"email": "jane@example.com", "guest_ref": "g-jane"},
    "traits": {"tier": "gold", "first_name": "Jane"},
    "segments": ["vip", "newsletter"],
    "metrics": {"order_count": 3, "lifetime_value": 1830.5},
}


@dataclass
class Live:
    service: Service
    database_url: str
    client_id: str
    secret: str

    @property
    def base_url(self) -> str:
        return self.service.base_url


@pytest.fixture
async def live(services: ServiceFactory, tmp_path: Path) -> Live:  # noqa: F811
    """``enrich serve`` with JSON access lines, Jane's profile, and a profiles:read client."""
    database = await create_sqlite_database(tmp_path)
    service = await services.start(database, None, log_level="INFO", log_format="json")
    writer = await bearer_headers(service, database, "profiles:write")
    async with httpx.AsyncClient(base_url=service.base_url, timeout=10) as http:
        written = await http.put("/v1/profiles/email/jane@example.com", json=JANE, headers=writer)
        assert written.status_code == 201, written.text
    client_id, secret = await create_client(database, "profiles:read")
    return Live(service, database, client_id, secret)
