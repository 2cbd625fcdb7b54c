"""Fixtures for the QA kit: a live server per test module (SQLite unless a test asks)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.service import RELAXED_DEADLINE_MS
from tests.qa.server import LiveServer, live_server


@pytest.fixture(scope="module")
def sqlite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The README's embedded setup: an SQLite file and the in-process cache.

    With a relaxed enrich deadline: these tests check the contract, the docs and the load mix,
    not speed, and on a busy two-core machine an SQLite lookup can pass the default deadline
    (a 503 that the Locust smoke counted as a failure). The deadline has tests of its own.
    """
    workdir = tmp_path_factory.mktemp("live")
    database = f"sqlite+aiosqlite:///{workdir / 'enrich.db'}"
    with live_server(workdir, database, deadline_ms=str(RELAXED_DEADLINE_MS)) as server:
        yield server


@pytest.fixture
def artifacts() -> Path:
    """Where failing tests leave screenshots and reports (gitignored)."""
    from tests.qa.server import ARTIFACTS

    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
