"""Brute-force protection: repeated failed client authentications get 429 with Retry-After."""

from __future__ import annotations

import httpx
import pytest

from app.auth.service import AuthFailureThrottle, OAuthError
from app.platform.kv import MemoryCache
from tests.conftest import AppFactory, OAuthClient, RunningApp
from tests.fixtures.callers import make_client_on, request_token
from tests.fixtures.clock import Clock

ADDRESS = "198.51.100.9"


def with_secret(client: OAuthClient, secret: str) -> OAuthClient:
    return OAuthClient(client.client_id, secret, client.scopes)


def assert_throttled(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    assert int(response.headers["retry-after"]) >= 1
    assert response.json()["error"] == "too_many_requests"
    assert "access_token" not in response.json()


def client_at(app: RunningApp, address: str) -> httpx.AsyncClient:
    """An HTTP client to the same app from another source address."""
    transport = httpx.ASGITransport(app=app.app, client=(address, 50001))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


class TestAuthFailureThrottle:
    async def test_a_client_id_is_locked_after_repeated_failures(
        self, app_factory: AppFactory
    ) -> None:
        app = await app_factory(auth_max_failures_per_client=3, auth_max_failures_per_address=100)
        victim = await make_client_on(app)
        bystander = await make_client_on(app)
        for _ in range(3):
            response = await request_token(app.http, with_secret(victim, "guess"))
            assert response.status_code == 401
        assert_throttled(await request_token(app.http, with_secret(victim, "guess")))
        assert_throttled(await request_token(app.http, with_secret(victim, "guess"), method="post"))
        # The right secret still gets a token: a few wrong guesses by someone who knows the
        # client_id must not shut the real client (Personalize) out.
        assert (await request_token(app.http, victim)).status_code == 200
        assert (await request_token(app.http, victim, method="post")).status_code == 200
        assert_throttled(await request_token(app.http, with_secret(victim, "guess")))
        # another client from the same address is not affected
        assert (await request_token(app.http, bystander)).status_code == 200

    async def test_the_lock_lasts_the_window_in_the_store_of_either_backend(
        self, app_factory: AppFactory
    ) -> None:
        app = await app_factory(auth_max_failures_per_client=2, auth_failure_window_seconds=60)
        client = await make_client_on(app)
        for _ in range(2):
            await request_token(app.http, with_secret(client, "guess"))
        locked = await request_token(app.http, with_secret(client, "guess"))
        assert_throttled(locked)
        # The store (Redis, or the memory one) expires the counters after the window: what is
        # left of it is the Retry-After. (Only a pause of half a minute could make it less.)
        assert 30 <= int(locked.headers["retry-after"]) <= 60


class TestTheWindow:
    """The lock against the failure counters' store on a clock the test moves."""

    async def test_the_lock_lifts_when_the_window_ends(self) -> None:
        clock = Clock()
        throttle = AuthFailureThrottle(
            MemoryCache(clock=clock), per_client=2, per_address=100, window_seconds=60
        )
        for _ in range(2):
            await throttle.check("enr_victim", ADDRESS)
            await throttle.failed("enr_victim", ADDRESS)
        clock.advance(59.5)
        with pytest.raises(OAuthError) as locked:
            await throttle.check("enr_victim", ADDRESS)
        assert locked.value.status_code == 429
        assert locked.value.headers == {"Retry-After": "1"}
        clock.advance(0.6)  # past the window that began at the first failure
        await throttle.check("enr_victim", ADDRESS)
        await throttle.failed("enr_victim", ADDRESS)  # counting starts again
        await throttle.check("enr_victim", ADDRESS)

    async def test_counting_on_does_not_push_the_window_back(self) -> None:
        clock = Clock()
        throttle = AuthFailureThrottle(
            MemoryCache(clock=clock), per_client=3, per_address=100, window_seconds=60
        )
        await throttle.failed("enr_victim", ADDRESS)
        clock.advance(50)
        await throttle.failed("enr_victim", ADDRESS)
        await throttle.failed("enr_victim", ADDRESS)
        with pytest.raises(OAuthError):
            await throttle.check("enr_victim", ADDRESS)
        clock.advance(10.1)  # 60 s after the first failure, 10 s after the last
        await throttle.check("enr_victim", ADDRESS)

    async def test_an_address_is_locked_after_failures_across_client_ids(
        self, app_factory: AppFactory
    ) -> None:
        app = await app_factory(auth_max_failures_per_client=100, auth_max_failures_per_address=5)
        real = await make_client_on(app)
        for i in range(5):
            stranger = OAuthClient(f"enr_guess{i}", "guess", [])
            assert (await request_token(app.http, stranger)).status_code == 401
        assert_throttled(await request_token(app.http, OAuthClient("enr_guess9", "x", [])))
        assert_throttled(await request_token(app.http, with_secret(real, "guess")))
        # a real client behind the same (shared) address still gets its token
        assert (await request_token(app.http, real)).status_code == 200
        async with client_at(app, "198.51.100.20") as elsewhere:
            wrong = await request_token(elsewhere, OAuthClient("enr_other", "x", []))
            assert wrong.status_code == 401

    async def test_the_lock_is_shared_by_the_revocation_and_introspection_endpoints(
        self, app_factory: AppFactory
    ) -> None:
        app = await app_factory(auth_max_failures_per_client=2)
        client = await make_client_on(app)
        auth = (client.client_id, "guess")
        for path in ("/oauth/revoke", "/oauth/introspect"):
            response = await app.http.post(path, data={"token": "x"}, auth=auth)
            assert response.status_code == 401
        response = await app.http.post("/oauth/introspect", data={"token": "x"}, auth=auth)
        assert_throttled(response)

    async def test_successes_do_not_count(self, app_factory: AppFactory) -> None:
        app = await app_factory(auth_max_failures_per_client=2, auth_max_failures_per_address=2)
        client = await make_client_on(app)
        for _ in range(10):
            assert (await request_token(app.http, client)).status_code == 200

    async def test_tokens_are_still_issued_when_redis_is_down(
        self, app_factory: AppFactory
    ) -> None:
        # nothing listens on port 1: every Redis call fails at once
        app = await app_factory(redis_url="redis://127.0.0.1:1/0", auth_max_failures_per_client=1)
        client = await make_client_on(app)
        assert (await request_token(app.http, with_secret(client, "guess"))).status_code == 401
        assert (await request_token(app.http, client)).status_code == 200
