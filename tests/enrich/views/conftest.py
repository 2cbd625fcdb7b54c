from __future__ import annotations

from tests.fixtures.servers import services  # noqa: F401  (fixture)
