"""Fixtures for the bulk engine, the importer and the demo: a session factory on each backend."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.db import create_engine, create_sessionmaker
from tests.conftest import Backend


@pytest.fixture
async def sessions(backend: Backend) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(backend.settings())
    try:
        yield create_sessionmaker(engine)
    finally:
        await engine.dispose()
