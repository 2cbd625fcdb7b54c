"""The platform's tests: callers with tokens against an app, and real services for the protocol."""

from __future__ import annotations

from tests.fixtures.callers import new_caller  # noqa: F401  (fixture)
from tests.fixtures.otlp import receiver  # noqa: F401  (fixture)
from tests.fixtures.servers import services  # noqa: F401  (fixture)
