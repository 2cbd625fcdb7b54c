"""``view`` on /v1/enrich, through the route and the fast path, on both backends: the shape,
versions that keep their shape, retirement, a client's default view, and the cache."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from app.enrich.views.service import ViewService
from app.ingest.demo import DEMO_VIEW, DEMO_VIEW_DEFINITION, demo_guest
from tests.conftest import AppFactory, ClientMaker, RunningApp
from tests.fixtures.callers import fetch_token
from tests.fixtures.polling import eventually
from tests.fixtures.spies import spy_fast_path

JANE = {
    "identifiers": {"email": "jane@example.com", "crm_id": "C-7"},
    "traits": {"tier": "gold", "first_name": "Jane"},
    "segments": ["vip"],
    "metrics": {"lifetime_value": 120.5},
}
OFFER_1 = {
    "fields": ["traits.tier", "metrics.lifetime_value"],
    "rename": {"traits.tier": "tier", "metrics.lifetime_value": "ltv"},
    "defaults": {"traits.tier": "standard"},
}
OFFER_2 = {"fields": ["traits.tier", "segments"], "rename": {"traits.tier": "level"}}
JANE_1 = {"found": True, "matched": "email", "tier": "gold", "ltv": 120.5, "stale": False}
JANE_2 = {"found": True, "matched": "email", "segments": ["vip"], "level": "gold"}


async def create(running: RunningApp, name: str, definition: dict[str, Any]) -> str:
    async with running.runtime.sessionmaker() as session:
        row = await ViewService(session).create(name, definition)
        await session.commit()
    return f"{row.name}@{row.version}"


async def retire(running: RunningApp, text: str) -> None:
    async with running.runtime.sessionmaker() as session:
        await ViewService(session).retire(text)
        await session.commit()


async def known(running: RunningApp, ref: str) -> None:
    """Wait for this app's poll to have loaded ``ref`` (every worker polls on its own)."""
    name, _, version = ref.partition("@")
    views = running.runtime.views
    await eventually(lambda: (name, int(version)) in views.versions, f"{ref} loaded")


def shaped(answer: dict[str, Any], expected: dict[str, Any]) -> bool:
    return all(answer.get(key) == value for key, value in expected.items())


async def ask(
    http: httpx.AsyncClient, headers: dict[str, str], view: str | None, method: str = "POST"
) -> httpx.Response:
    if method == "POST":
        body: dict[str, Any] = {"identifiers": {"email": "jane@example.com"}}
        if view is not None:
            body["view"] = view
        return await http.post("/v1/enrich", json=body, headers=headers)
    params = {"email": "jane@example.com"} | ({"view": view} if view is not None else {})
    return await http.get("/v1/enrich", params=params, headers=headers)


@pytest.fixture
async def reader(running: RunningApp, headers: dict[str, str]) -> dict[str, str]:
    """A reader's token header, after Jane is stored (the first request with a token goes to
    the route, the rest to the fast path)."""
    assert (
        await running.http.put("/v1/profiles/crm_id/C-7", json=JANE, headers=headers)
    ).is_success
    return headers


class TestViewOnEnrich:
    @pytest.mark.parametrize("method", ["POST", "GET"])
    async def test_the_route_and_the_fast_path_answer_the_views_shape(
        self, running: RunningApp, reader: dict[str, str], make_client: ClientMaker, method: str
    ) -> None:
        await known(running, await create(running, "offer", OFFER_1))
        await ask(running.http, reader, "offer", method)  # fills L1
        client = await make_client("profiles:read")
        fresh = {"Authorization": f"Bearer {await fetch_token(running.http, client)}"}
        served = spy_fast_path(running)
        routed = await ask(running.http, fresh, "offer", method)  # a new token: the route
        assert served[0] == 0
        fast = await ask(running.http, fresh, "offer", method)
        assert served[0] == 1
        for response in (routed, fast):
            assert response.status_code == 200, response.text
            body = response.json()
            assert list(body) == [
                "found", "matched", "profile_id", "tier", "ltv", "updated_at", "stale"
            ]  # fmt: skip
            assert shaped(body, JANE_1)
            assert response.headers["x-cache"] == "hit"
        assert routed.content == fast.content

    async def test_an_unknown_guest_gets_the_views_keys_and_defaults(
        self, running: RunningApp, reader: dict[str, str]
    ) -> None:
        await known(running, await create(running, "offer", OFFER_1))
        for _ in range(2):  # the route, then the fast path
            response = await running.http.post(
                "/v1/enrich",
                json={"identifiers": {"email": "nobody@example.com"}, "view": "offer@1"},
                headers=reader,
            )
            assert response.json() == {
                "found": False,
                "matched": None,
                "profile_id": None,
                "tier": "standard",
                "ltv": None,
                "updated_at": None,
                "stale": False,
            }

    async def test_a_new_version_leaves_the_pinned_one_as_it_was(
        self, running: RunningApp, reader: dict[str, str]
    ) -> None:
        await known(running, await create(running, "offer", OFFER_1))
        for _ in range(2):
            assert shaped((await ask(running.http, reader, "offer")).json(), JANE_1)
        await known(running, await create(running, "offer", OFFER_2))
        latest = await ask(running.http, reader, "offer")
        assert shaped(latest.json(), JANE_2)
        assert "tier" not in latest.json()
        pinned = await ask(running.http, reader, "offer@1")
        assert shaped(pinned.json(), JANE_1)
        assert pinned.headers["x-cache"] == "hit"  # its cached answer is still good

    async def test_a_profile_write_shows_through_a_view_on_the_next_read(
        self, running: RunningApp, reader: dict[str, str]
    ) -> None:
        await known(running, await create(running, "offer", OFFER_1))
        seen = [await ask(running.http, reader, "offer@1") for _ in range(2)]
        assert [r.headers["x-cache"] for r in seen] == ["miss", "hit"]
        patched = await running.http.patch(
            "/v1/profiles/crm_id/C-7",
            json={"traits": {"tier": "platinum"}},
            headers={**reader, "Content-Type": "application/merge-patch+json"},
        )
        assert patched.status_code == 200
        assert (await ask(running.http, reader, "offer@1")).json()["tier"] == "platinum"

    @pytest.mark.parametrize("method", ["POST", "GET"])
    async def test_a_retired_view_is_refused_naming_it(
        self, running: RunningApp, reader: dict[str, str], method: str
    ) -> None:
        await known(running, await create(running, "offer", OFFER_1))
        await known(running, await create(running, "offer", OFFER_2))
        for _ in range(2):
            assert (await ask(running.http, reader, "offer@1", method)).status_code == 200
        await retire(running, "offer@1")
        views = running.runtime.views
        await eventually(lambda: ("offer", 1) not in views.versions, "offer@1 retired here")
        served = spy_fast_path(running)
        for _ in range(2):
            refused = await ask(running.http, reader, "offer@1", method)
            assert refused.status_code == 410
            assert refused.json() == {
                "error": "view_retired",
                "detail": "view 'offer@1' is retired; the latest is 'offer@2'",
            }
        assert served[0] == 0  # (no answer: no cache was asked, by either door)
        assert (await ask(running.http, reader, "offer", method)).status_code == 200

    async def test_unknown_views_and_view_with_fields_are_refused(
        self, running: RunningApp, reader: dict[str, str]
    ) -> None:
        for _ in range(2):
            unknown = await ask(running.http, reader, "nothing")
            assert unknown.status_code == 404
            assert unknown.json()["detail"] == "view 'nothing' does not exist"
        both = await running.http.post(
            "/v1/enrich",
            json={"identifiers": {"email": "j@example.com"}, "view": "a", "fields": "segments"},
            headers=reader,
        )
        assert both.status_code == 422
        assert both.json()["detail"] == "give view or fields, not both"
        query = await running.http.get(
            "/v1/enrich?email=j%40example.com&view=a&fields=segments", headers=reader
        )
        assert query.status_code == 422
        assert (await ask(running.http, reader, "not a name")).status_code == 422
        placeholder = await ask(running.http, reader, "${view}")
        assert placeholder.status_code == 200
        assert "traits" in placeholder.json()  # no view: the whole answer

    async def test_a_clients_default_view_shapes_its_answers(
        self, running: RunningApp, reader: dict[str, str], make_client: ClientMaker
    ) -> None:
        await known(running, await create(running, "offer", OFFER_1))
        client = await make_client("profiles:read")
        headers = {"Authorization": f"Bearer {await fetch_token(running.http, client)}"}
        client_id = client.client_id
        async with running.runtime.sessionmaker() as session:
            await ViewService(session).assign(client_id, "offer@1")
            await session.commit()
        views = running.runtime.views
        await eventually(lambda: client_id in views.defaults, "the default view loaded")
        for _ in range(2):
            assert shaped((await ask(running.http, headers, None)).json(), JANE_1)
        with_fields = await running.http.post(
            "/v1/enrich",
            json={"identifiers": {"email": "jane@example.com"}, "fields": "segments"},
            headers=headers,
        )
        assert with_fields.json()["segments"] == ["vip"]  # the request's own fields win
        assert "traits" in (await ask(running.http, reader, None)).json()  # other clients: none


class TestViewsOnEveryWorker:
    async def test_a_new_version_and_a_retirement_reach_every_worker(
        self, app_factory: AppFactory, headers: dict[str, str], running: RunningApp
    ) -> None:
        other = await app_factory()
        workers = [running, other]
        assert (
            await running.http.put("/v1/profiles/crm_id/C-7", json=JANE, headers=headers)
        ).is_success
        await create(running, "offer", OFFER_1)
        for worker in workers:
            await known(worker, "offer@1")
            for _ in range(2):
                assert shaped((await ask(worker.http, headers, "offer")).json(), JANE_1)
        await create(running, "offer", OFFER_2)
        for worker in workers:
            await eventually(lambda w=worker: w.runtime.views.latest["offer"].version == 2)
            assert shaped((await ask(worker.http, headers, "offer")).json(), JANE_2)
            old = await ask(worker.http, headers, "offer@1")
            assert shaped(old.json(), JANE_1)
        await retire(running, "offer")
        for worker in workers:
            await eventually(lambda w=worker: "offer" not in w.runtime.views.latest)
            assert (await ask(worker.http, headers, "offer")).status_code == 410
            assert (await ask(worker.http, headers, "offer@1")).status_code == 410


class TestDemoView:
    async def test_the_demo_view_answers_flat_keys_with_defaults(
        self, running: RunningApp, headers: dict[str, str]
    ) -> None:
        await known(running, await create(running, DEMO_VIEW, DEMO_VIEW_DEFINITION))
        guest = await running.http.put(
            "/v1/profiles/email/demo@example.com", json=demo_guest(), headers=headers
        )
        assert guest.is_success
        shaped_answers = {}
        for email in ("demo@example.com", "nobody@example.com"):
            body = {"identifiers": {"email": email}, "view": DEMO_VIEW}
            answers = [
                (await running.http.post("/v1/enrich", json=body, headers=headers)).json()
                for _ in range(2)  # a miss, then a hit (the fast path)
            ]
            assert answers[0] == answers[1]
            shaped_answers[email] = answers[0]
        demo, unknown = shaped_answers["demo@example.com"], shaped_answers["nobody@example.com"]
        assert list(demo) == list(unknown)  # the same keys, known guest or not
        assert demo["tier"] == "platinum"
        assert demo["lifetime_value"] == 8421.75
        assert demo["first_name"] == "Dana"
        assert unknown["tier"] == "none"
        assert unknown["segments"] == ["anonymous"]
        assert unknown["first_name"] is None
