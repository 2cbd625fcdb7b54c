"""Consent on /v1/enrich, through the route and the fast path, on both backends: a view's or a
client's purpose, the no-consent answer (the plain shape and a view's), the cache (a
withdrawal shows on the next read), and the access line that says why."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from app.enrich.views.service import ViewService
from tests.conftest import AppFactory, ClientMaker, RunningApp
from tests.enrich.views.test_enrich_views import create, known
from tests.fixtures.callers import fetch_token
from tests.fixtures.polling import eventually
from tests.fixtures.spies import spy_fast_path

MERGE = {"Content-Type": "application/merge-patch+json"}
JANE = {
    "identifiers": {"email": "jane@example.com", "crm_id": "C-7"},
    "traits": {"tier": "gold", "first_name": "Jane"},
    "segments": ["vip"],
    "metrics": {"lifetime_value": 120.5},
}
OFFER = {
    "fields": ["traits.tier", "metrics.lifetime_value", "segments"],
    "rename": {"traits.tier": "tier", "metrics.lifetime_value": "ltv"},
    "defaults": {"traits.tier": "standard", "segments": ["anonymous"]},
    "purpose": "marketing",
}
# What a guest who refused marketing gets through OFFER: the view's keys and defaults.
OFFER_REFUSED = {
    "found": True,
    "matched": "email",
    "profile_id": None,
    "segments": ["anonymous"],
    "tier": "standard",
    "ltv": None,
    "updated_at": None,
    "consent": {"purpose": "marketing", "status": "denied"},
    "stale": False,
}


def decision(status: str, at: str = "2026-05-01T10:00:00Z") -> dict[str, Any]:
    return {"status": status, "at": at, "source": "cmp"}


async def store(http: httpx.AsyncClient, headers: dict[str, str], **consent: Any) -> None:
    document = {**JANE, "consent": consent} if consent else JANE
    response = await http.put("/v1/profiles/crm_id/C-7", json=document, headers=headers)
    assert response.is_success, response.text


async def consent_to(
    http: httpx.AsyncClient, headers: dict[str, str], purpose: str, status: str, at: str
) -> None:
    patch = {"consent": {purpose: decision(status, at)}}
    response = await http.patch("/v1/profiles/crm_id/C-7", json=patch, headers=headers | MERGE)
    assert response.status_code == 200, response.text


async def ask(
    http: httpx.AsyncClient, headers: dict[str, str], view: str | None = None
) -> httpx.Response:
    body: dict[str, Any] = {"identifiers": {"email": "jane@example.com"}}
    if view is not None:
        body["view"] = view
    response = await http.post("/v1/enrich", json=body, headers=headers)
    assert response.status_code == 200, response.text
    return response


async def with_purpose(running: RunningApp, client_id: str, purpose: str | None) -> None:
    async with running.runtime.sessionmaker() as session:
        await ViewService(session).assign_purpose(client_id, purpose)
        await session.commit()
    views = running.runtime.views
    await eventually(lambda: views.purposes.get(client_id) == purpose, "the purpose polled")


class TestViewPurpose:
    async def test_a_guest_who_denied_gets_the_views_shape_without_personal_data(
        self, running: RunningApp, headers: dict[str, str]
    ) -> None:
        await store(running.http, headers, marketing=decision("denied"))
        await known(running, await create(running, "offer", OFFER))
        served = spy_fast_path(running)
        answers = [await ask(running.http, headers, "offer") for _ in range(3)]
        assert served[0] >= 1  # the fast path answered too
        for response in answers:
            assert response.json() == OFFER_REFUSED
            assert list(response.json()) == list(OFFER_REFUSED)
        assert answers[0].content == answers[-1].content
        assert [r.headers["x-cache"] for r in answers][1:] == ["hit", "hit"]

    @pytest.mark.parametrize(
        ("consent", "refused"),
        [
            ({}, "not_granted"),  # marketing is opt-in: never granted is no
            ({"analytics": decision("denied")}, "not_granted"),
            ({"marketing": decision("granted")}, None),
            ({"marketing": decision("denied")}, "denied"),
        ],
    )
    async def test_opt_in_needs_a_grant(
        self,
        running: RunningApp,
        headers: dict[str, str],
        consent: dict[str, Any],
        refused: str | None,
    ) -> None:
        await store(running.http, headers, **consent)
        await known(running, await create(running, "offer", OFFER))
        body = (await ask(running.http, headers, "offer")).json()
        if refused is None:
            assert body["tier"] == "gold"
            assert body["profile_id"] is not None
            assert "consent" not in body
        else:
            assert body["consent"] == {"purpose": "marketing", "status": refused}
            assert body["tier"] == "standard"

    async def test_opt_out_holds_until_denied(
        self, running: RunningApp, headers: dict[str, str]
    ) -> None:
        await store(running.http, headers)
        await known(running, await create(running, "stats", {**OFFER, "purpose": "analytics"}))
        assert (await ask(running.http, headers, "stats")).json()["tier"] == "gold"
        await consent_to(running.http, headers, "analytics", "denied", "2026-06-01T00:00:00Z")
        body = (await ask(running.http, headers, "stats")).json()
        assert body["consent"] == {"purpose": "analytics", "status": "denied"}

    async def test_a_withdrawal_shows_on_the_next_read_and_a_grant_brings_data_back(
        self, running: RunningApp, headers: dict[str, str]
    ) -> None:
        await store(running.http, headers, marketing=decision("granted"))
        await known(running, await create(running, "offer", OFFER))
        seen = [await ask(running.http, headers, "offer") for _ in range(2)]
        assert [r.headers["x-cache"] for r in seen] == ["miss", "hit"]
        assert seen[1].json()["tier"] == "gold"
        await consent_to(running.http, headers, "marketing", "denied", "2026-06-01T00:00:00Z")
        assert (await ask(running.http, headers, "offer")).json() == OFFER_REFUSED
        await consent_to(running.http, headers, "marketing", "granted", "2026-07-01T00:00:00Z")
        assert (await ask(running.http, headers, "offer")).json()["tier"] == "gold"

    # Two apps are two workers only with Redis between them (the embedded cache tells one).
    @pytest.mark.parametrize("backend", ["postgres"], indirect=True)
    async def test_a_withdrawal_on_one_worker_shows_on_the_others_next_read(
        self, app_factory: AppFactory, headers: dict[str, str], running: RunningApp
    ) -> None:
        other = await app_factory()
        await store(running.http, headers, marketing=decision("granted"))
        ref = await create(running, "offer", OFFER)
        await known(running, ref)
        await known(other, ref)
        for _ in range(2):  # cached on the other worker
            assert (await ask(other.http, headers, "offer")).json()["tier"] == "gold"
        await consent_to(running.http, headers, "marketing", "denied", "2026-06-01T00:00:00Z")
        assert (await ask(other.http, headers, "offer")).json() == OFFER_REFUSED

    async def test_the_answer_without_a_purpose_is_unchanged(
        self, running: RunningApp, headers: dict[str, str]
    ) -> None:
        await store(running.http, headers, marketing=decision("denied"))
        for _ in range(2):
            body = (await ask(running.http, headers)).json()
            assert body["traits"]["tier"] == "gold"
            assert "consent" not in body


class TestClientPurpose:
    async def test_a_clients_purpose_gives_the_plain_no_consent_answer(
        self, running: RunningApp, headers: dict[str, str], make_client: ClientMaker
    ) -> None:
        await store(running.http, headers, marketing=decision("denied"))
        client = await make_client("profiles:read")
        await with_purpose(running, client.client_id, "marketing")
        reader = {"Authorization": f"Bearer {await fetch_token(running.http, client)}"}
        served = spy_fast_path(running)
        routed = await ask(running.http, reader)  # a new token: the route
        fast = await ask(running.http, reader)
        assert served[0] == 1
        assert routed.content == fast.content
        assert fast.json() == {
            "found": True,
            "matched": "email",
            "profile_id": None,
            "traits": {},
            "segments": [],
            "metrics": {},
            "recommendations": [],
            "updated_at": None,
            "consent": {"purpose": "marketing", "status": "denied"},
            "stale": False,
        }
        fields = await running.http.get(
            "/v1/enrich?email=jane%40example.com&fields=traits.tier", headers=reader
        )
        assert fields.json()["traits"] == {}  # fields or not, the purpose applies
        # Another client, without a purpose, still gets the guest.
        assert (await ask(running.http, headers)).json()["traits"]["tier"] == "gold"

    async def test_the_views_purpose_wins_over_the_clients(
        self, running: RunningApp, headers: dict[str, str], make_client: ClientMaker
    ) -> None:
        await store(running.http, headers, marketing=decision("denied"))
        await known(running, await create(running, "stats", {**OFFER, "purpose": "analytics"}))
        await known(running, await create(running, "plain", {"fields": ["traits.tier"]}))
        client = await make_client("profiles:read")
        await with_purpose(running, client.client_id, "marketing")
        reader = {"Authorization": f"Bearer {await fetch_token(running.http, client)}"}
        for _ in range(2):
            assert (await ask(running.http, reader, "stats")).json()["tier"] == "gold"
            # A view without a purpose takes the client's.
            plain = (await ask(running.http, reader, "plain")).json()
            assert plain["consent"] == {"purpose": "marketing", "status": "denied"}
            assert plain["traits"] == {}
        await with_purpose(running, client.client_id, None)
        assert (await ask(running.http, reader)).json()["traits"]["tier"] == "gold"


def access_lines(text: str) -> list[dict[str, Any]]:
    return [
        record
        for line in text.splitlines()
        if line.startswith("{") and (record := json.loads(line)).get("event") == "http.request"
    ]


class TestAccessLine:
    async def test_the_access_line_says_why_and_nothing_personal(
        self,
        app_factory: AppFactory,
        make_client: ClientMaker,
        capfd: pytest.CaptureFixture[str],
    ) -> None:
        app = await app_factory(log_format="json", log_level="INFO")  # (tests log warnings)
        writer = await fetch_token(app.http, await make_client("profiles:read profiles:write"))
        headers = {"Authorization": f"Bearer {writer}"}
        await store(app.http, headers, marketing=decision("denied"))
        await known(app, await create(app, "offer", OFFER))
        for _ in range(2):  # the route, then the fast path
            await ask(app.http, headers, "offer")
        await ask(app.http, headers)  # no purpose: no consent member

        def written() -> list[dict[str, Any]]:
            err = capfd.readouterr().err
            seen.extend(line for line in access_lines(err) if line["route"] == "/v1/enrich")
            return seen

        seen: list[dict[str, Any]] = []
        await eventually(lambda: len(written()) >= 3, "the access lines written")
        assert [line.get("consent") for line in seen[:3]] == [
            "denied:marketing",
            "denied:marketing",
            None,
        ]
        assert all("jane" not in json.dumps(line) for line in seen)
