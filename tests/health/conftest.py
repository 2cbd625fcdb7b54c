from __future__ import annotations

from tests.fixtures.callers import new_caller  # noqa: F401  (fixture)
