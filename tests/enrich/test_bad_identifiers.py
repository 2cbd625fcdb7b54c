"""An identifier value that is not text (a lone surrogate, invalid UTF-8) is a 400 before any
I/O, and never counts against Redis: the circuit breaker stays closed for everyone else."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import RunningApp

# JSON text with a lone surrogate escape: valid JSON, but no UTF-8 string can hold it.
SURROGATE_BODY = b'{"identifiers": {"crm_id": "\\ud800"}}'
# (method, target, body)
BAD_REQUESTS = [
    ("POST", "/v1/enrich", SURROGATE_BODY),
    ("POST", "/v1/enrich", b'{"identifiers": {"email": "jane\\udfff@example.com"}}'),
    ("GET", "/v1/enrich?crm_id=%ED%A0%80", None),  # the UTF-8 form of U+D800: not UTF-8
    ("GET", "/v1/enrich?email=%FF%FE%40example.com", None),
]
JANE = {"identifiers": {"crm_id": "C-7"}, "traits": {"tier": "gold"}}


async def send(
    http: httpx.AsyncClient, headers: dict[str, str], request: tuple[str, str, bytes | None]
) -> httpx.Response:
    method, target, body = request
    request_headers = {**headers, "Content-Type": "application/json"}
    return await http.request(method, target, content=body, headers=request_headers)


class TestIdentifiersThatAreNotText:
    @pytest.mark.parametrize("request_", BAD_REQUESTS)
    async def test_a_400_with_a_json_error_every_time(
        self, running: RunningApp, headers: dict[str, str], request_: tuple[str, str, bytes | None]
    ) -> None:
        # Twice: the first time the token is new (the route), then the fast path has it.
        for _ in range(2):
            answer = await send(running.http, headers, request_)
            assert answer.status_code == 400, answer.text
            assert answer.json()["error"] == "invalid_identifier"
            assert "detail" in answer.json()

    async def test_they_do_not_open_the_redis_breaker(
        self, running: RunningApp, headers: dict[str, str]
    ) -> None:
        http = running.http
        assert (await http.put("/v1/profiles/crm_id/C-7", json=JANE, headers=headers)).is_success
        good = {"identifiers": {"crm_id": "C-7"}}
        assert (await http.post("/v1/enrich", json=good, headers=headers)).status_code == 200
        for request in BAD_REQUESTS * 3:
            answer = await send(http, headers, request)
            assert answer.status_code == 400, answer.text
        l2 = running.runtime.enrich_cache.l2
        if l2 is not None:  # (the embedded default has no Redis to count against)
            assert l2.breaker.failures == 0
            assert not l2.breaker.is_open
        running.runtime.enrich_cache.l1.clear()
        answer = await http.post("/v1/enrich", json=good, headers=headers)
        assert answer.status_code == 200
        assert answer.json()["found"] is True
        if running.runtime.settings.redis_url:
            assert answer.headers["x-cache"] == "hit"  # from Redis, which was not skipped

    async def test_a_write_naming_one_is_refused(
        self, running: RunningApp, headers: dict[str, str]
    ) -> None:
        body = b'{"identifiers": {"email": "\\ud800@example.com"}, "traits": {"tier": "gold"}}'
        answer = await running.http.put(
            "/v1/profiles/crm_id/C-8",
            content=body,
            headers={**headers, "Content-Type": "application/json"},
        )
        # A written document is validated whole, before any I/O (app/profiles/limits.py): the
        # 422 of payload validation, naming the place and not the content.
        assert answer.status_code == 422, answer.text
        assert answer.json()["error"] == "validation_error"
        assert "identifiers.email" in answer.text
        assert "example.com" not in answer.text
        missing = await running.http.get("/v1/profiles/crm_id/C-8", headers=headers)
        assert missing.status_code == 404
