from __future__ import annotations

from tests.profiles.helpers import sessions  # noqa: F401  (fixture)
