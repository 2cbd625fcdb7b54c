"""API keys through HTTP, on both backends: the enrich fast path and the FastAPI routes accept a
client's key in X-API-Key with the client's scopes, allowlist and rate limit; a wrong,
revoked, rotated or expired key, or one of a disabled client, is refused as a bad token is."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

import httpx
import pytest
from sqlalchemy import select

from app.auth.apikey_admin import ApiKeyService
from app.auth.apikeys import KeyGrant, VerifiedKeys
from app.auth.clients import ClientService
from app.auth.tokens import Principal
from app.core.models import AuditEvent
from tests.auth.conftest import PROBE_READ, PROBE_WRITE, mount_probe
from tests.conftest import AppFactory, RunningApp
from tests.fixtures.callers import (
    ENRICH,
    GUEST,
    bearer,
    fetch_token,
    make_client_on,
    request_token,
    set_allowlist,
    set_limit,
)
from tests.fixtures.polling import eventually
from tests.fixtures.spies import spy_fast_path


@dataclass
class Keyed:
    client_id: str
    key_id: str
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"X-API-Key": self.key}


async def key_for(running: RunningApp, client_id: str) -> Keyed:
    async with running.runtime.sessionmaker() as session:
        key, plain, _ = await ApiKeyService(session).create(client_id)
        await session.commit()
    return Keyed(client_id, key.key_id, plain)


async def keyed_client(running: RunningApp, scopes: str = "profiles:read") -> Keyed:
    client = await make_client_on(running, scopes)
    return await key_for(running, client.client_id)


async def revoke_key(running: RunningApp, key_id: str) -> None:
    async with running.runtime.sessionmaker() as session:
        await ApiKeyService(session).revoke(key_id)
        await session.commit()


async def enrich(http: httpx.AsyncClient, headers: dict[str, str]) -> httpx.Response:
    return await http.post(ENRICH, json=GUEST, headers=headers)


class TestAcceptedWhereATokenIs:
    async def test_the_enrich_endpoint_answers_a_key_again_and_again(
        self, running: RunningApp
    ) -> None:
        caller = await keyed_client(running)
        # The poll forgets every verified key when the keys' table changed since it last
        # looked: one that runs between the requests below (a loaded machine makes that likely)
        # would send the next request to the route again. Poll now, and no more.
        await running.runtime.auth_sync.stop()
        await running.runtime.auth_sync.refresh()
        served_fast = spy_fast_path(running)
        # The first request verifies the key in the route; the next ones take the fast path.
        for _ in range(3):
            response = await enrich(running.http, caller.headers)
            assert response.status_code == 200, response.text
            assert response.json()["found"] is False
        assert served_fast == [2]
        get = await running.http.get(f"{ENRICH}?email=nobody@example.com", headers=caller.headers)
        assert get.status_code == 200

    async def test_routes_see_the_keys_client_and_its_scopes(self, running: RunningApp) -> None:
        mount_probe(running.app)
        caller = await keyed_client(running, "profiles:read events:write")
        response = await running.http.get(PROBE_READ, headers=caller.headers)
        assert response.status_code == 200
        assert response.json() == {
            "client_id": caller.client_id,
            "scopes": ["events:write", "profiles:read"],
        }

    async def test_a_scope_the_client_lacks_is_403_insufficient_scope(
        self, running: RunningApp
    ) -> None:
        mount_probe(running.app)
        caller = await keyed_client(running, "profiles:read")
        response = await running.http.get(PROBE_WRITE, headers=caller.headers)
        assert response.status_code == 403
        assert response.json()["error"] == "insufficient_scope"
        profile = await running.http.put(
            "/v1/profiles/email/a@example.com", json={"traits": {}}, headers=caller.headers
        )
        assert profile.status_code == 403

    async def test_profile_writes_and_events_work_with_a_key(self, running: RunningApp) -> None:
        caller = await keyed_client(running, "profiles:read profiles:write events:write")
        put = await running.http.put(
            "/v1/profiles/email/k@example.com",
            json={"traits": {"tier": "gold"}},
            headers=caller.headers,
        )
        assert put.status_code == 201, put.text
        event = {"event_id": "e1", "type": "view", "identifiers": {"email": "k@example.com"}}
        posted = await running.http.post("/v1/events", json=event, headers=caller.headers)
        assert posted.status_code == 202, posted.text
        found = await running.http.post(
            ENRICH, json={"identifiers": {"email": "k@example.com"}}, headers=caller.headers
        )
        assert found.json()["traits"] == {"tier": "gold"}

    async def test_a_client_may_have_a_secret_and_keys_both(self, running: RunningApp) -> None:
        client = await make_client_on(running, "profiles:read")
        first = await key_for(running, client.client_id)
        second = await key_for(running, client.client_id)
        token = await fetch_token(running.http, client)
        for headers in (first.headers, second.headers, bearer(token)):
            assert (await enrich(running.http, headers)).status_code == 200

    async def test_a_client_without_a_secret_uses_keys_only(self, running: RunningApp) -> None:
        async with running.runtime.sessionmaker() as session:
            client, secret = await ClientService(session).create(
                "keys only", "profiles:read", with_secret=False
            )
            await session.commit()
        assert secret == ""
        caller = await key_for(running, client.client_id)
        assert (await enrich(running.http, caller.headers)).status_code == 200
        for guess in ("", "none", "sha256$"):
            refused = await running.http.post(
                "/oauth/token",
                data={
                    "grant_type": "client_credentials",
                    "client_id": client.client_id,
                    "client_secret": guess,
                },
            )
            assert refused.status_code in (400, 401), refused.text

    async def test_a_bearer_token_wins_over_a_key_sent_with_it(self, running: RunningApp) -> None:
        caller = await keyed_client(running)
        both = {**caller.headers, "Authorization": "Bearer not-a-token"}
        assert (await enrich(running.http, both)).status_code == 401


class TestRefusals:
    async def test_a_wrong_key_is_refused_like_a_bad_token(self, running: RunningApp) -> None:
        await keyed_client(running)
        for path in (ENRICH, PROBE_READ):
            mount_probe(running.app)
            bad_key = await running.http.post(path, json=GUEST, headers={"X-API-Key": "ek_nope"})
            if path == PROBE_READ:
                bad_key = await running.http.get(path, headers={"X-API-Key": "ek_nope"})
                bad_token = await running.http.get(path, headers=bearer("nope"))
            else:
                bad_token = await enrich(running.http, bearer("nope"))
            assert bad_key.status_code == bad_token.status_code == 401
            assert bad_key.json().keys() == bad_token.json().keys()
            assert bad_key.json()["error"] == bad_token.json()["error"] == "invalid_token"
            assert bad_key.headers["www-authenticate"].startswith("Bearer ")

    @pytest.mark.parametrize(
        "value", ["x" * 5000, "ek_\u00e9\u00e8", "ek_" + "A" * 43, "Bearer ek_x", " "]
    )
    async def test_malformed_keys_are_401_never_500(self, running: RunningApp, value: str) -> None:
        response = await running.http.post(
            ENRICH, json=GUEST, headers={"X-API-Key": value.encode("utf-8")}
        )
        assert response.status_code == 401, response.text
        assert response.headers["content-type"].startswith("application/json")

    async def test_wrong_keys_count_toward_the_failure_lock(self, app_factory: AppFactory) -> None:
        running = await app_factory(auth_max_failures_per_address=3)
        caller = await keyed_client(running)
        statuses = [
            (await enrich(running.http, {"X-API-Key": f"ek_wrong{i}"})).status_code
            for i in range(5)
        ]
        assert statuses == [401, 401, 401, 429, 429]
        # Only failures meet the lock: the right key still gets through.
        assert (await enrich(running.http, caller.headers)).status_code == 200

    async def test_a_revoked_key_is_refused_on_the_fast_path_and_the_routes(
        self, running: RunningApp
    ) -> None:
        mount_probe(running.app)
        caller = await keyed_client(running)
        assert (await enrich(running.http, caller.headers)).status_code == 200
        assert (await enrich(running.http, caller.headers)).status_code == 200  # (cached)
        await revoke_key(running, caller.key_id)
        await running.runtime.auth_sync.refresh()  # the poll, now
        assert (await enrich(running.http, caller.headers)).status_code == 401
        assert (await running.http.get(PROBE_READ, headers=caller.headers)).status_code == 401

    async def test_a_disabled_clients_keys_are_refused(self, running: RunningApp) -> None:
        caller = await keyed_client(running)
        assert (await enrich(running.http, caller.headers)).status_code == 200
        async with running.runtime.sessionmaker() as session:
            await ClientService(session).disable(caller.client_id)
            await session.commit()
        await running.runtime.auth_sync.refresh()
        assert (await enrich(running.http, caller.headers)).status_code == 401

    async def test_a_deleted_clients_keys_go_with_it(self, running: RunningApp) -> None:
        caller = await keyed_client(running)
        assert (await enrich(running.http, caller.headers)).status_code == 200
        async with running.runtime.sessionmaker() as session:
            await ClientService(session).disable(caller.client_id)
            await ClientService(session).delete(caller.client_id)
            await session.commit()
        async with running.runtime.sessionmaker() as session:
            assert await ApiKeyService(session).list(caller.client_id) == []
        await running.runtime.auth_sync.refresh()
        assert (await enrich(running.http, caller.headers)).status_code == 401


class TestRotation:
    async def test_rotation_replaces_the_key_at_once(self, running: RunningApp) -> None:
        caller = await keyed_client(running)
        assert (await enrich(running.http, caller.headers)).status_code == 200
        async with running.runtime.sessionmaker() as session:
            new, plain, _ = await ApiKeyService(session).rotate(caller.key_id)
            await session.commit()
        await running.runtime.auth_sync.refresh()
        assert (await enrich(running.http, caller.headers)).status_code == 401
        assert (await enrich(running.http, {"X-API-Key": plain})).status_code == 200
        assert new.client_id == caller.client_id
        assert new.key_id != caller.key_id

    async def test_with_grace_both_work_until_it_ends(self, running: RunningApp) -> None:
        now = [time.time()]
        running.runtime.api_keys.clock = lambda: now[0]
        caller = await keyed_client(running)
        async with running.runtime.sessionmaker() as session:
            _, plain, _ = await ApiKeyService(session).rotate(caller.key_id, grace_seconds=600)
            await session.commit()
        await running.runtime.auth_sync.refresh()
        for _ in range(2):  # (the route, then the fast path)
            assert (await enrich(running.http, caller.headers)).status_code == 200
            assert (await enrich(running.http, {"X-API-Key": plain})).status_code == 200
        now[0] += 601
        assert (await enrich(running.http, caller.headers)).status_code == 401
        assert (await enrich(running.http, {"X-API-Key": plain})).status_code == 200


class TestTheClientsPolicies:
    async def test_the_allowlist_applies_to_keys(self, running: RunningApp) -> None:
        caller = await keyed_client(running)
        assert (await enrich(running.http, caller.headers)).status_code == 200
        await set_allowlist(running, caller.client_id, ["198.51.100.0/24"])  # not the tests'
        for _ in range(2):
            assert (await enrich(running.http, caller.headers)).status_code == 403

    async def test_the_rate_limit_applies_to_keys(self, running: RunningApp) -> None:
        caller = await keyed_client(running)
        await set_limit(running, caller.client_id, 0.001, 1)
        statuses = [(await enrich(running.http, caller.headers)).status_code for _ in range(3)]
        assert statuses[0] == 200
        assert statuses[1:] == [429, 429]


class TestAcrossWorkers:
    async def test_a_key_revoked_on_one_worker_is_refused_by_the_other(
        self, running: RunningApp, app_factory: AppFactory
    ) -> None:
        other = await app_factory()
        caller = await keyed_client(running)
        for app in (running, other, running, other):  # both have verified and cached it
            assert (await enrich(app.http, caller.headers)).status_code == 200
        await revoke_key(running, caller.key_id)  # neither is told: each polls
        await eventually(
            lambda: _refused(other, caller), "the other worker refuses the revoked key"
        )
        await eventually(lambda: _refused(running, caller), "this worker refuses it too")


async def _refused(app: RunningApp, caller: Keyed) -> bool:
    return (await enrich(app.http, caller.headers)).status_code == 401


class TestWhatIsKept:
    async def test_only_digests_are_stored_remembered_and_audited(
        self, running: RunningApp
    ) -> None:
        caller = await keyed_client(running)
        digest = hashlib.sha256(caller.key.encode()).hexdigest()
        remembered = running.runtime.api_keys.verified

        async def remembered_after_a_request() -> bool:
            # (a poll that sees the new key forgets what was verified before it: ask again)
            assert (await enrich(running.http, caller.headers)).status_code == 200
            return remembered.get(digest) is not None

        await eventually(remembered_after_a_request, "the key is remembered by its digest")
        assert caller.key not in repr(remembered.__dict__)
        async with running.runtime.sessionmaker() as session:
            _, plain, _ = await ApiKeyService(session).rotate(caller.key_id)
            await ApiKeyService(session).revoke(caller.key_id)
            await session.commit()
            stored = await ApiKeyService(session).list(caller.client_id)
            events = list(await session.scalars(select(AuditEvent).order_by(AuditEvent.id)))
        assert digest in {k.key_hash for k in stored}
        actions = [e.action for e in events if e.target == caller.client_id]
        assert actions[-2:] == ["api_key.created", "api_key.rotated"]
        text = repr([(e.details, e.target) for e in events])
        assert caller.key not in text
        assert plain not in text

    def test_the_table_of_verified_keys_is_bounded_in_bytes(self) -> None:
        table = VerifiedKeys(max_bytes=100_000)
        principal = Principal("c", frozenset({"profiles:read"}), "apikey:k", 2**62, 0, {})
        for i in range(5_000):
            table.put(hashlib.sha256(b"%d" % i).hexdigest(), KeyGrant(principal, 1e18), 0)
            assert table._bytes <= table.max_bytes
        assert 0 < len(table) < 5_000

    async def test_a_lookup_that_began_before_a_reset_is_not_remembered(self) -> None:
        table = VerifiedKeys(max_bytes=100_000)
        principal = Principal("c", frozenset(), "apikey:k", 2**62, 0, {})
        began = table.generation
        table.reset()  # a poll saw the table change meanwhile (the key may be revoked)
        table.put("d", KeyGrant(principal, 1e18), began)
        assert table.get("d") is None


async def test_token_requests_still_work_next_to_keys(running: RunningApp) -> None:
    client = await make_client_on(running, "profiles:read")
    await key_for(running, client.client_id)
    assert (await request_token(running.http, client)).status_code == 200
