from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.conftest import AppFactory, RunningApp
from tests.experiences.standin import CallFlowsStandIn


@pytest.fixture
async def standin() -> AsyncIterator[CallFlowsStandIn]:
    server = CallFlowsStandIn()
    await server.start()
    yield server
    await server.close()


@pytest.fixture
async def running(app_factory: AppFactory, standin: CallFlowsStandIn) -> RunningApp:
    """The app, relaying to the stand-in (the default deadline, 800 ms)."""
    return await app_factory(personalize_api_url=standin.url)
