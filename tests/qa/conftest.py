"""Fixtures for the QA kit: a live server per test module (SQLite unless a test asks)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.qa.server import LiveServer, live_server


@pytest.fixture(scope="module")
def sqlite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The README's embedded setup: an SQLite file and the in-process cache."""
    workdir = tmp_path_factory.mktemp("live")
    with live_server(workdir, f"sqlite+aiosqlite:///{workdir / 'enrich.db'}") as server:
        yield server


@pytest.fixture
def artifacts() -> Path:
    """Where failing tests leave screenshots and reports (gitignored)."""
    from tests.qa.server import ARTIFACTS

    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
