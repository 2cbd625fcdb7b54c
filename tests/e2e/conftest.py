"""End-to-end tests against `enrich serve` with several worker processes."""

from __future__ import annotations

import pytest

from tests.fixtures.servers import (  # noqa: F401  (fixtures)
    private_pg,
    private_redis,
    services,
)
from tests.fixtures.service import write_summaries


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    write_summaries(terminalreporter, "tests/e2e", "end-to-end summaries")
