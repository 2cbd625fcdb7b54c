"""The namespace cluster for the drills: built once per test run, removed at its end (also when
a test fails); one run at a time owns it (``netns.exclusive``)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.cluster import netns
from tests.cluster.harness import Cluster
from tests.fixtures.service import create_client, write_summaries


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    with netns.exclusive():
        built = Cluster()
        built.up()
        try:
            yield built
        finally:
            built.down()


@pytest.fixture(scope="session")
async def cluster_headers(cluster: Cluster) -> dict[str, str]:
    """A bearer token for every scope the drills use, asked for through the balancer."""
    assert cluster.balancer is not None
    client = await create_client(cluster.database_url, "profiles:read profiles:write events:write")
    async with httpx.AsyncClient(base_url=cluster.balancer.base_url, timeout=30) as http:
        answer = await http.post(
            "/oauth/token", data={"grant_type": "client_credentials"}, auth=client
        )
    assert answer.status_code == 200, answer.text
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    write_summaries(terminalreporter, "tests/cluster", "namespace cluster drills")
