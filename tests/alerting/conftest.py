"""Alerting tests: the rules and the dashboard, and a real Prometheus scraping a real service."""

from __future__ import annotations

from tests.fixtures.servers import (  # noqa: F401  (fixtures)
    private_redis,
    services,
)
