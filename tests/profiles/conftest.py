from __future__ import annotations

import pytest

from tests.conftest import TokenMaker
from tests.profiles.helpers import sessions  # noqa: F401  (fixture)


@pytest.fixture
async def headers(token_for: TokenMaker) -> dict[str, str]:
    """Authorization for a client with every profile and event scope."""
    token = await token_for("profiles:read profiles:write events:write")
    return {"Authorization": f"Bearer {token}"}
