"""The api_keys migration (c4e6a8b0d2f3) on SQLite and PostgreSQL: up, down and up again."""

from __future__ import annotations

import pytest

from tests.test_migrations import CLIENT, empty_database, migrate, run  # noqa: F401

BEFORE = "a1c3e5f7b9d2"
API_KEYS = "c4e6a8b0d2f3"
KEY = (
    "INSERT INTO api_keys (key_id, client_id, name, key_hash, created_at) "
    "VALUES ('ak_1', 'c1', 'k', '{digest}', CURRENT_TIMESTAMP)"
)


async def test_up_down_and_up_again(empty_database: str) -> None:  # noqa: F811
    url = empty_database
    await migrate(url, BEFORE)
    await run(url, CLIENT.format(id="c1"))
    await migrate(url, API_KEYS)
    await run(url, KEY.format(digest="a" * 64))
    assert await run(url, "SELECT key_id, client_id FROM api_keys") == [("ak_1", "c1")]
    with pytest.raises(Exception, match=r"(?i)unique"):
        await run(url, KEY.replace("ak_1", "ak_2").format(digest="a" * 64))

    await migrate(url, BEFORE, down=True)
    with pytest.raises(Exception, match="api_keys"):
        await run(url, "SELECT key_id FROM api_keys")
    assert await run(url, "SELECT client_id FROM clients") == [("c1",)]  # the rest is kept
    await migrate(url, "head")
    assert await run(url, "SELECT count(*) FROM api_keys") == [(0,)]
