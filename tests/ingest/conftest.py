"""Fixtures for the importer and the demo: a session factory on each backend, and a PostgreSQL
database of each test module's own."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import run_sync
from tests.fixtures.databases import create_pg_database, drop_pg_database
from tests.profiles.helpers import sessions  # noqa: F401  (fixture)


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    """Instead of the run's shared database: an import into an empty identifiers table drops
    and rebuilds its indexes (app/ingest/initial.py), and a test that stops one halfway must
    not leave another module's tests without them."""
    url = run_sync(create_pg_database())
    try:
        yield url
    finally:
        run_sync(drop_pg_database(url))
