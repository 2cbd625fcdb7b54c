"""Fault tests: private PostgreSQL and Redis that the tests stop, freeze and restart."""

from __future__ import annotations

import pytest

from tests.fixtures.servers import (  # noqa: F401  (fixtures)
    own_pg,
    private_pg,
    private_redis,
    services,
)
from tests.fixtures.service import write_summaries


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    write_summaries(terminalreporter, "tests/faults", "fault test summaries")
