"""Per-client IP allowlists, and X-Forwarded-For from trusted proxies only."""

from __future__ import annotations

import httpx

from app.auth.clients import ClientService
from app.core.addresses import NetworkSet, forwarded_client
from tests.conftest import AppFactory, RunningApp
from tests.fixtures.callers import (
    ENRICH,
    GUEST,
    Caller,
    fetch_token,
    make_client_on,
    request_token,
    set_allowlist,
)
from tests.fixtures.polling import eventually
from tests.fixtures.service import RecordProperty

PROFILE = "/v1/profiles/email/nobody@example.com"
# The ASGI test client connects from 203.0.113.7.
HERE = "203.0.113.0/28"
ELSEWHERE = "198.51.100.0/24"


def client_at(app: RunningApp, address: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app.app, client=(address, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


class TestForwardedClient:
    def test_the_first_untrusted_hop_from_the_right_is_the_caller(self) -> None:
        trusted = NetworkSet.parse("10.0.0.0/8")
        assert forwarded_client("10.0.0.1", "198.51.100.7", trusted) == "198.51.100.7"
        # A caller can prepend anything; only what our proxies appended counts.
        header = "1.2.3.4, 198.51.100.7, 10.0.0.2"
        assert forwarded_client("10.0.0.1", header, trusted) == "198.51.100.7"

    def test_garbage_stops_the_walk(self) -> None:
        trusted = NetworkSet.parse("10.0.0.0/8")
        assert forwarded_client("10.0.0.1", "198.51.100.7, bogus", trusted) == "10.0.0.1"

    def test_ipv4_mapped_ipv6_is_the_ipv4_address(self) -> None:
        networks = NetworkSet.parse("203.0.113.0/24")
        assert "::ffff:203.0.113.9" in networks
        assert "2001:db8::1" not in networks


class TestAllowlist:
    async def test_elsewhere_is_403_even_with_a_valid_token(
        self, running: RunningApp, new_caller
    ) -> None:  # type: ignore[no-untyped-def]
        caller: Caller = await new_caller()
        await set_allowlist(running, caller.client_id, [ELSEWHERE])
        for method, path in (("POST", ENRICH), ("GET", PROFILE), ("GET", ENRICH + "?email=a@b.c")):
            response = await running.http.request(
                method, path, json=GUEST if method == "POST" else None, headers=caller.headers
            )
            assert response.status_code == 403, (method, path)
            assert response.json()["error"] == "forbidden"

    async def test_from_an_allowed_address_it_answers(
        self, running: RunningApp, new_caller
    ) -> None:  # type: ignore[no-untyped-def]
        caller: Caller = await new_caller()
        await set_allowlist(running, caller.client_id, [ELSEWHERE, HERE])
        assert (await running.http.post(ENRICH, json=GUEST, headers=caller.headers)).is_success
        assert (await running.http.get(PROFILE, headers=caller.headers)).status_code == 404
        async with client_at(running, "198.51.100.200") as other:
            assert (await other.post(ENRICH, json=GUEST, headers=caller.headers)).is_success
        async with client_at(running, "192.0.2.1") as outsider:
            assert (
                await outsider.post(ENRICH, json=GUEST, headers=caller.headers)
            ).status_code == 403

    async def test_other_clients_are_not_affected(self, running: RunningApp, new_caller) -> None:  # type: ignore[no-untyped-def]
        fenced: Caller = await new_caller()
        free: Caller = await new_caller()
        await set_allowlist(running, fenced.client_id, [ELSEWHERE])
        assert (await running.http.post(ENRICH, json=GUEST, headers=free.headers)).is_success

    async def test_clearing_it_allows_every_address_again(
        self, running: RunningApp, new_caller
    ) -> None:  # type: ignore[no-untyped-def]
        caller: Caller = await new_caller()
        await set_allowlist(running, caller.client_id, [ELSEWHERE])
        assert (
            await running.http.post(ENRICH, json=GUEST, headers=caller.headers)
        ).status_code == 403
        await set_allowlist(running, caller.client_id, [])
        assert (await running.http.post(ENRICH, json=GUEST, headers=caller.headers)).is_success

    async def test_the_token_endpoint_refuses_elsewhere(
        self, running: RunningApp, new_caller
    ) -> None:  # type: ignore[no-untyped-def]
        caller: Caller = await new_caller()
        await set_allowlist(running, caller.client_id, [ELSEWHERE])
        response = await request_token(running.http, caller.client)
        assert response.status_code == 403
        assert response.json()["error"] == "access_denied"
        async with client_at(running, "198.51.100.1") as inside:
            assert (await fetch_token(inside, caller.client)).count(".") == 2

    async def test_a_change_reaches_another_worker_with_its_poll(
        self, app_factory: AppFactory, record_property: RecordProperty
    ) -> None:
        first = await app_factory()
        second = await app_factory()
        client = await make_client_on(first, "profiles:read")
        headers = {"Authorization": f"Bearer {await fetch_token(first.http, client)}"}
        assert (await second.http.post(ENRICH, json=GUEST, headers=headers)).is_success
        async with first.runtime.sessionmaker() as session:
            await ClientService(session).allow(client.client_id, [ELSEWHERE])
            await session.commit()

        async def refused() -> bool:
            answer = await second.http.post(ENRICH, json=GUEST, headers=headers)
            return answer.status_code == 403

        # Within a second: the poll's period (tests/auth/test_revocation.py TestThePoll).
        took = await eventually(refused, "the allowlist applied by the other worker")
        record_property("applied_after_s", round(took, 3))


class TestTrustedProxies:
    async def test_x_forwarded_for_names_the_caller_behind_a_trusted_proxy(
        self, app_factory: AppFactory
    ) -> None:
        app = await app_factory(trusted_proxies="203.0.113.0/24")
        client = await make_client_on(app, "profiles:read")
        token = await fetch_token(app.http, client)
        await set_allowlist(app, client.client_id, [ELSEWHERE])
        headers = {"Authorization": f"Bearer {token}"}
        inside = {**headers, "X-Forwarded-For": "198.51.100.50"}
        outside = {**headers, "X-Forwarded-For": "192.0.2.50"}
        for _ in range(2):  # the route, then the fast path (which knows the token by then)
            assert (await app.http.post(ENRICH, json=GUEST, headers=inside)).is_success
            assert (await app.http.post(ENRICH, json=GUEST, headers=outside)).status_code == 403

    async def test_it_is_ignored_from_anyone_else(self, running: RunningApp, new_caller) -> None:  # type: ignore[no-untyped-def]
        caller: Caller = await new_caller()
        await set_allowlist(running, caller.client_id, [ELSEWHERE])
        spoofed = {**caller.headers, "X-Forwarded-For": "198.51.100.50"}
        assert (await running.http.post(ENRICH, json=GUEST, headers=spoofed)).status_code == 403

    async def test_the_lockout_counts_the_forwarded_address(self, app_factory: AppFactory) -> None:
        app = await app_factory(trusted_proxies="203.0.113.0/24", auth_max_failures_per_address=2)
        client = await make_client_on(app, "profiles:read")

        async def attempt(address: str, secret: str) -> int:
            response = await app.http.post(
                "/oauth/token",
                data={"grant_type": "client_credentials"},
                auth=(client.client_id, secret),
                headers={"X-Forwarded-For": address},
            )
            return response.status_code

        for _ in range(2):
            assert await attempt("198.51.100.66", "wrong") == 401
        assert await attempt("198.51.100.66", "wrong") == 429
        # Another caller behind the same proxy is not locked out by the first one's failures.
        assert await attempt("198.51.100.77", "wrong") == 401
