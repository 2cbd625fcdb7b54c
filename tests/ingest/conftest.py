"""Fixtures for the importer and the demo: a session factory on each backend."""

from __future__ import annotations

from tests.profiles.helpers import sessions  # noqa: F401  (fixture)
