"""Body limits: 413 with a JSON error, before an oversized body is read."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import orjson

from tests.conftest import AppFactory
from tests.fixtures.callers import ENRICH, Caller

CHUNK = 64 * 1024


class Chunks:
    """A body without Content-Length, sent in chunks; counts how many the server pulled."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.pulled = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        sent = 0
        while sent < self.total:
            self.pulled += 1
            sent += CHUNK
            yield b" " * CHUNK


class TestBodyLimit:
    async def test_a_declared_length_over_1_mb_is_413_json(
        self, http: httpx.AsyncClient, new_caller
    ) -> None:  # type: ignore[no-untyped-def]
        caller: Caller = await new_caller()
        body = b'{"identifiers": {"email": "' + b"x" * 1_100_000 + b'"}}'
        for method, path in (("POST", ENRICH), ("PUT", "/v1/profiles/email/a@example.com")):
            response = await http.request(
                method,
                path,
                content=body,
                headers={**caller.headers, "Content-Type": "application/json"},
            )
            assert response.status_code == 413, path
            assert response.headers["content-type"] == "application/json"
            assert response.json()["error"] == "payload_too_large"

    async def test_a_chunked_body_is_refused_before_it_is_all_read(
        self, http: httpx.AsyncClient, new_caller
    ) -> None:  # type: ignore[no-untyped-def]
        caller: Caller = await new_caller()
        for path in (ENRICH, "/v1/profiles/email/a@example.com", "/v1/events"):
            body = Chunks(20 * 1024 * 1024)
            method = "PUT" if path.startswith("/v1/profiles") else "POST"
            response = await http.request(
                method,
                path,
                content=body,
                headers={**caller.headers, "Content-Type": "application/json"},
            )
            assert response.status_code == 413, path
            assert response.json()["error"] == "payload_too_large"
            # 1 MB is 16 chunks: the 17th passes the limit and nothing more is read.
            assert body.pulled <= 17, (path, body.pulled)

    async def test_bulk_has_a_larger_limit_of_its_own(self, app_factory: AppFactory) -> None:
        app = await app_factory(max_body_bytes=4096, bulk_max_body_bytes=65_536)
        from tests.auth.conftest import make_client_on
        from tests.fixtures.callers import fetch_token

        client = await make_client_on(app, "profiles:write")
        headers = {
            "Authorization": f"Bearer {await fetch_token(app.http, client)}",
            "Content-Type": "application/x-ndjson",
        }
        lines = [
            orjson.dumps({"identifiers": {"crm_id": f"C-{i}"}, "traits": {"note": "n" * 50}})
            for i in range(100)
        ]
        body = b"\n".join(lines)
        assert 4096 < len(body) < 65_536
        accepted = await app.http.post("/v1/profiles/bulk", content=body, headers=headers)
        assert accepted.status_code == 200, accepted.text
        assert accepted.json()["created"] == 100
        too_big = await app.http.post("/v1/profiles/bulk", content=body * 10, headers=headers)
        assert too_big.status_code == 413
        single = await app.http.put(
            "/v1/profiles/crm_id/C-1",
            content=orjson.dumps({"traits": {"note": "n" * 5000}}),
            headers={**headers, "Content-Type": "application/json"},
        )
        assert single.status_code == 413
