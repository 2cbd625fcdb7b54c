"""The pure-ASGI fast path answers exactly as the FastAPI route does, and only when it may."""

from __future__ import annotations

import gzip
import time
from typing import Any

import httpx
import pytest

from app.auth.clients import ClientService
from tests.conftest import AppFactory, RunningApp
from tests.fixtures.spies import spy_fast_path

JANE = {
    "identifiers": {"email": "jane@example.com", "crm_id": "C-7"},
    "traits": {"tier": "gold", "first_name": "Jane"},
    "segments": ["vip"],
    "metrics": {"order_count": 3},
    "recommendations": [{"product_id": f"SKU-{i}", "score": 0.5} for i in range(40)],
}


async def token(running: RunningApp, scopes: str) -> dict[str, str]:
    async with running.runtime.sessionmaker() as session:
        client, secret = await ClientService(session).create("fast", scopes)
        await session.commit()
    response = await running.http.post(
        "/oauth/token", data={"grant_type": "client_credentials"}, auth=(client.client_id, secret)
    )
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


# What a caller or a proxy acts on; the rest (the request id, the date) differs per answer.
COMPARED_HEADERS = (
    "content-type",
    "content-length",
    "content-encoding",
    "vary",
    "x-cache",
    "cache-control",
)


async def raw_request(
    http: httpx.AsyncClient,
    method: str,
    headers: dict[str, str],
    encoding: str,
    options: dict[str, Any],
) -> tuple[int, dict[str, str | None], bytes]:
    """The status, the compared headers and the body as sent (not decompressed)."""
    asked = {**headers, "Accept-Encoding": encoding}
    async with http.stream(method, "/v1/enrich", headers=asked, **options) as response:
        body = b"".join([chunk async for chunk in response.aiter_raw()])
    picked = {name: response.headers.get(name) for name in COMPARED_HEADERS}
    return response.status_code, picked, body


REQUESTS = [
    (
        "POST",
        {"json": {"identifiers": {"guest_ref": "${guest.ref}", "email": " Jane@Example.COM "}}},
    ),
    ("POST", {"json": {"identifiers": {"crm_id": "C-7"}, "fields": ["traits.tier", "segments"]}}),
    ("POST", {"json": {"identifiers": {"email": "nobody@example.com"}, "fields": "traits.tier"}}),
    ("GET", {"params": {"email": "jane@example.com", "fields": "metrics.order_count"}}),
    ("GET", {"params": {"phone": "not a phone", "crm_id": "C-7"}}),
]


class TestFastPath:
    @pytest.mark.parametrize("encoding", ["identity", "gzip"])
    async def test_answers_match_the_route_byte_for_byte(
        self, running: RunningApp, encoding: str
    ) -> None:
        """The same bytes on the wire (compressed or not) and the same headers a caller or a
        proxy acts on, for an answer the route and the fast path both take from L1."""
        http: httpx.AsyncClient = running.http
        headers = await token(running, "profiles:read profiles:write")
        assert (await http.put("/v1/profiles/crm_id/C-7", json=JANE, headers=headers)).is_success
        served = spy_fast_path(running)
        encodings = set()
        for method, options in REQUESTS:
            warm = await raw_request(http, method, headers, encoding, options)  # fills L1
            assert warm[0] == 200, (method, options)
            # A token first seen here goes through FastAPI; the same token next time is fast.
            fresh = await token(running, "profiles:read")
            slow = await raw_request(http, method, fresh, encoding, options)
            before = served[0]
            fast = await raw_request(http, method, fresh, encoding, options)
            assert served[0] == before + 1, (method, options)
            assert slow == fast, (method, options)
            assert slow[0] == 200
            assert slow[1]["x-cache"] == "hit"  # (both from L1: the same level)
            encodings.add(slow[1]["content-encoding"])
        assert encodings == ({"gzip", None} if encoding == "gzip" else {None})  # (small: plain)

    async def test_gzip_when_asked(self, running: RunningApp) -> None:
        headers = await token(running, "profiles:read profiles:write")
        await running.http.put("/v1/profiles/crm_id/C-7", json=JANE, headers=headers)
        request = {"identifiers": {"crm_id": "C-7"}}
        await running.http.post("/v1/enrich", json=request, headers=headers)
        response = await running.http.post(
            "/v1/enrich", json=request, headers={**headers, "Accept-Encoding": "gzip"}
        )
        assert response.headers["content-encoding"] == "gzip"
        assert response.json()["traits"]["tier"] == "gold"  # httpx decoded it
        raw = await running.http.post(
            "/v1/enrich", json=request, headers={**headers, "Accept-Encoding": "identity"}
        )
        assert "content-encoding" not in raw.headers
        assert len(gzip.compress(raw.content)) < len(raw.content)

    async def test_a_gzipped_hit_after_a_write_carries_the_write(self, running: RunningApp) -> None:
        """Hits keep their compressed form; a write must not leave the old one served."""
        headers = await token(running, "profiles:read profiles:write")
        await running.http.put("/v1/profiles/crm_id/C-7", json=JANE, headers=headers)
        request = {"identifiers": {"crm_id": "C-7"}}
        zipped = {**headers, "Accept-Encoding": "gzip"}
        seen = []
        for _ in range(3):  # a miss, then hits served from the compressed copy
            response = await running.http.post("/v1/enrich", json=request, headers=zipped)
            assert response.headers["content-encoding"] == "gzip"
            seen.append((response.headers["x-cache"], response.json()["traits"]["tier"]))
        assert seen == [("miss", "gold"), ("hit", "gold"), ("hit", "gold")]
        patched = await running.http.patch(
            "/v1/profiles/crm_id/C-7",
            json={"traits": {"tier": "platinum"}},
            headers={**headers, "Content-Type": "application/merge-patch+json"},
        )
        assert patched.status_code == 200
        after = [
            await running.http.post("/v1/enrich", json=request, headers=zipped) for _ in range(2)
        ]
        assert [r.json()["traits"]["tier"] for r in after] == ["platinum", "platinum"]
        assert after[1].headers["x-cache"] == "hit"

    async def test_bad_requests_fall_through_to_the_routes_errors(
        self, running: RunningApp
    ) -> None:
        http = running.http
        headers = await token(running, "profiles:read")
        await http.post("/v1/enrich", json={"identifiers": {}}, headers=headers)  # seen token
        served = spy_fast_path(running)
        bad = [
            ({"content": b"{not json", "headers": {"Content-Type": "application/json"}}, 400),
            ({"json": {"identifiers": {"bad type!": "x"}}}, 400),
            ({"json": {"identifiers": {}, "extra": 1}}, 422),
            ({"json": {"identifiers": {}, "fields": ["nope.x"]}}, 422),
            ({"json": {"identifiers": "jane@example.com"}}, 422),
        ]
        for options, status in bad:
            extra_headers = options.pop("headers", {})
            response = await http.post(
                "/v1/enrich", headers={**headers, **extra_headers}, **options
            )
            assert response.status_code == status, (options, response.text)
            assert "error" in response.json()
        assert served[0] == 0

    async def test_a_cached_token_without_the_scope_or_revoked_is_refused(
        self, running: RunningApp
    ) -> None:
        http = running.http
        writer = await token(running, "profiles:write")
        request = {"identifiers": {"email": "jane@example.com"}}
        assert (await http.post("/v1/enrich", json=request, headers=writer)).status_code == 403
        assert (await http.post("/v1/enrich", json=request, headers=writer)).status_code == 403
        reader = await token(running, "profiles:read")
        for _ in range(2):  # verified, then known to the fast path by its header
            assert (await http.post("/v1/enrich", json=request, headers=reader)).status_code == 200
        running.runtime.revocations.add(
            running.runtime.verifier.cached(reader["Authorization"][7:]).jti,  # type: ignore[union-attr]
            2**40,
        )
        refused = await http.post("/v1/enrich", json=request, headers=reader)
        assert refused.status_code == 401
        assert 'error="invalid_token"' in refused.headers["www-authenticate"]

    async def test_a_token_known_to_the_fast_path_is_refused_once_expired(
        self, running: RunningApp, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        http = running.http
        reader = await token(running, "profiles:read")
        request = {"identifiers": {"email": "jane@example.com"}}
        for _ in range(2):
            assert (await http.post("/v1/enrich", json=request, headers=reader)).status_code == 200
        later = time.time() + running.runtime.settings.token_ttl_seconds
        monkeypatch.setattr(running.runtime.verifier, "clock", lambda: later)
        refused = await http.post("/v1/enrich", json=request, headers=reader)
        assert refused.status_code == 401
        assert 'error="invalid_token"' in refused.headers["www-authenticate"]


class TestWhatTheStackWouldHaveDone:
    """The fast path runs outside the middleware stack, so it does that stack's work itself."""

    async def test_request_ids_are_echoed_or_made_up(self, running: RunningApp) -> None:
        headers = await token(running, "profiles:read")
        request = {"identifiers": {"email": "jane@example.com"}}
        await running.http.post("/v1/enrich", json=request, headers=headers)
        served = spy_fast_path(running)
        given = await running.http.post(
            "/v1/enrich", json=request, headers={**headers, "X-Request-ID": "caller-42"}
        )
        made = [await running.http.post("/v1/enrich", json=request, headers=headers)]
        made.append(await running.http.post("/v1/enrich", json=request, headers=headers))
        assert served[0] == 3
        assert given.headers["x-request-id"] == "caller-42"
        ids = {response.headers["x-request-id"] for response in made}
        assert len(ids) == 2
        assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)

    async def test_bodies_over_the_limit_are_413_declared_or_chunked(
        self, app_factory: AppFactory
    ) -> None:
        running = await app_factory(max_body_bytes=2048)
        headers = await token(running, "profiles:read")
        request = {"identifiers": {"email": "jane@example.com"}}
        await running.http.post("/v1/enrich", json=request, headers=headers)  # seen token
        big = b'{"identifiers": {"email": "jane@example.com"}, "fields": "' + b"a" * 4000 + b'"}'
        declared = await running.http.post(
            "/v1/enrich", content=big, headers={**headers, "Content-Type": "application/json"}
        )

        async def chunks():  # type: ignore[no-untyped-def]
            for start in range(0, len(big), 1000):
                yield big[start : start + 1000]

        chunked = await running.http.post(
            "/v1/enrich", content=chunks(), headers={**headers, "Content-Type": "application/json"}
        )
        for response in (declared, chunked):
            assert response.status_code == 413, response.text
            assert response.json()["error"] == "payload_too_large"

    async def test_an_unexpected_failure_is_a_json_500_and_the_next_request_is_served(
        self, running: RunningApp
    ) -> None:
        headers = await token(running, "profiles:read")
        request = {"identifiers": {"email": "jane@example.com"}}
        await running.http.post("/v1/enrich", json=request, headers=headers)
        cache = running.runtime.enrich_cache
        inner = cache.l1_hit
        failures = [RuntimeError("a bug")]

        def failing_once(*args):  # type: ignore[no-untyped-def]
            if failures:
                raise failures.pop()
            return inner(*args)

        cache.l1_hit = failing_once  # type: ignore[method-assign]
        broken = await running.http.post("/v1/enrich", json=request, headers=headers)
        assert broken.status_code == 500
        assert broken.json()["error"] == "internal_error"
        assert "a bug" not in broken.text
        assert broken.headers["x-request-id"]
        again = await running.http.post("/v1/enrich", json=request, headers=headers)
        assert again.status_code == 200
