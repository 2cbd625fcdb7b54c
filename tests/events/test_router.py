from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from app.events.repository import EventRepository
from app.profiles.repository import ProfileRepository
from tests.conftest import AppFactory, Backend, RunningApp, TokenMaker
from tests.fixtures.polling import HANG_GUARD_SECONDS


def purchase(event_id: str, amount: object = "10.00", **extra: Any) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "type": "purchase",
        "identifiers": {"guest_ref": "g-1", "email": "jane@example.com"},
        "data": {"amount": amount, "currency": "EUR"},
        **extra,
    }


async def metrics(http: httpx.AsyncClient, headers: dict[str, str]) -> dict[str, Any]:
    response = await http.get("/v1/profiles/guest_ref/g-1", headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()["metrics"]
    return body


class TestPostEvent:
    async def test_unknown_guest_gets_a_profile(
        self, http: httpx.AsyncClient, headers: dict[str, str]
    ) -> None:
        response = await http.post(
            "/v1/events",
            json=purchase("e-1", occurred_at="2026-11-01T10:00:00+01:00"),
            headers=headers,
        )
        assert response.status_code == 202
        body = response.json()
        assert body["accepted"] is True
        assert body["duplicate"] is False
        assert body["event_id"] == "e-1"
        profile = await http.get("/v1/profiles/email/jane@example.com", headers=headers)
        assert profile.json()["profile_id"] == body["profile_id"]
        assert profile.json()["identifiers"]["guest_ref"] == "g-1"
        assert profile.json()["metrics"] == {
            "order_count": 1,
            "lifetime_value": 10.0,
            "last_order_at": "2026-11-01T09:00:00Z",
            "last_event_at": "2026-11-01T09:00:00Z",
        }

    async def test_new_identifiers_join_the_known_profile(
        self, http: httpx.AsyncClient, headers: dict[str, str]
    ) -> None:
        known = await http.put("/v1/profiles/email/jane@example.com", json={}, headers=headers)
        response = await http.post("/v1/events", json=purchase("e-1"), headers=headers)
        assert response.json()["profile_id"] == known.json()["profile_id"]
        profile = await http.get("/v1/profiles/guest_ref/g-1", headers=headers)
        assert profile.json()["profile_id"] == known.json()["profile_id"]

    async def test_repeat_is_a_duplicate_and_changes_nothing(
        self, http: httpx.AsyncClient, headers: dict[str, str]
    ) -> None:
        first = await http.post("/v1/events", json=purchase("e-1"), headers=headers)
        again = await http.post("/v1/events", json=purchase("e-1"), headers=headers)
        assert again.status_code == 200
        assert again.json()["duplicate"] is True
        assert again.json()["profile_id"] == first.json()["profile_id"]
        assert (await metrics(http, headers))["order_count"] == 1

    async def test_purchases_add_up_and_keep_the_latest_order_time(
        self, http: httpx.AsyncClient, headers: dict[str, str]
    ) -> None:
        for event_id, amount, when in (
            ("e-1", 10, "2026-11-02T00:00:00Z"),
            ("e-2", "5.25", "2026-11-01T00:00:00Z"),  # arrives late, happened earlier
            ("e-3", 0.75, "2026-11-03T00:00:00"),  # no zone: UTC
        ):
            response = await http.post(
                "/v1/events", json=purchase(event_id, amount, occurred_at=when), headers=headers
            )
            assert response.status_code == 202
        assert await metrics(http, headers) == {
            "order_count": 3,
            "lifetime_value": 16.0,
            "last_order_at": "2026-11-03T00:00:00Z",
            "last_event_at": "2026-11-03T00:00:00Z",
        }

    async def test_other_events_move_only_last_event_at(
        self, http: httpx.AsyncClient, headers: dict[str, str]
    ) -> None:
        bought = purchase("e-1", occurred_at="2026-11-01T00:00:00Z")
        await http.post("/v1/events", json=bought, headers=headers)
        view = {
            "event_id": "v-1",
            "type": "page_view",
            "identifiers": {"guest_ref": "g-1"},
            "occurred_at": "2026-11-02T00:00:00Z",
        }
        assert (await http.post("/v1/events", json=view, headers=headers)).status_code == 202
        after = await metrics(http, headers)
        assert after["order_count"] == 1
        assert after["last_event_at"] == "2026-11-02T00:00:00Z"
        assert after["last_order_at"] != after["last_event_at"]

    async def test_occurred_at_defaults_to_receipt(
        self, http: httpx.AsyncClient, headers: dict[str, str]
    ) -> None:
        event = purchase("e-1", occurred_at="${event.time}")
        assert (await http.post("/v1/events", json=event, headers=headers)).status_code == 202
        assert (await metrics(http, headers))["last_order_at"].startswith("20")

    async def test_identifiers_of_two_profiles_are_409_and_not_counted(
        self, http: httpx.AsyncClient, headers: dict[str, str]
    ) -> None:
        await http.put("/v1/profiles/guest_ref/g-1", json={}, headers=headers)
        await http.put("/v1/profiles/email/jane@example.com", json={}, headers=headers)
        response = await http.post("/v1/events", json=purchase("e-1"), headers=headers)
        assert response.status_code == 409
        assert "email" in response.json()["detail"]
        # Not recorded: the same event_id is accepted once the identity is fixed.
        await http.delete("/v1/profiles/email/jane@example.com", headers=headers)
        retry = await http.post("/v1/events", json=purchase("e-1"), headers=headers)
        assert retry.status_code == 202

    @pytest.mark.parametrize(
        ("event", "status", "word"),
        [
            (
                {"type": "purchase", "identifiers": {"crm_id": "1"}, "data": {"amount": 1}},
                422,
                "event_id",
            ),
            (purchase("e-1", "ten"), 422, "amount"),
            (purchase("e-1", -1), 422, "amount"),
            (purchase("e-1", True), 422, "amount"),
            ({**purchase("e-1"), "data": {}}, 422, "amount"),
            ({**purchase("e-1"), "colour": "red"}, 422, "colour"),
            ({**purchase("e-1"), "identifiers": {"phone": "Jane"}}, 400, "phone"),
            ({**purchase("e-1"), "identifiers": {"guest_ref": "${guest.ref}"}}, 400, "identifier"),
            ({**purchase("e-1"), "occurred_at": "yesterday"}, 422, "occurred_at"),
        ],
    )
    async def test_bad_events_are_refused_and_not_recorded(
        self,
        http: httpx.AsyncClient,
        headers: dict[str, str],
        event: dict[str, Any],
        status: int,
        word: str,
    ) -> None:
        response = await http.post("/v1/events", json=event, headers=headers)
        assert response.status_code == status, response.text
        assert word in response.text
        good = await http.post("/v1/events", json=purchase("e-1"), headers=headers)
        assert good.status_code == 202

    async def test_needs_the_events_scope(
        self, http: httpx.AsyncClient, token_for: TokenMaker
    ) -> None:
        token = await token_for("profiles:read profiles:write")
        response = await http.post(
            "/v1/events", json=purchase("e-1"), headers={"Authorization": f"Bearer {token}"}
        )
        assert response.status_code == 403


class TestErasureAndRetries:
    async def test_a_retried_event_after_erasure_stays_a_duplicate(
        self, http: httpx.AsyncClient, headers: dict[str, str]
    ) -> None:
        await http.post("/v1/events", json=purchase("e-1"), headers=headers)
        deleted = await http.delete("/v1/profiles/guest_ref/g-1", headers=headers)
        assert deleted.status_code == 204
        retry = await http.post("/v1/events", json=purchase("e-1"), headers=headers)
        assert retry.status_code == 200
        assert retry.json()["duplicate"] is True
        assert retry.json()["profile_id"] is None
        gone = await http.get("/v1/profiles/guest_ref/g-1", headers=headers)
        assert gone.status_code == 404


class TestConcurrentEvents:
    @pytest.fixture
    async def running(self, app_factory: AppFactory) -> RunningApp:
        """Fifty requests for one profile queue for its row, one transaction at a time: the
        last waits for all the others. On a busy machine that is longer than production's
        pool and statement timeouts (a 503 with Retry-After, by design), and these tests are
        about the count, so they give the queue the time it takes."""
        return await app_factory(
            db_pool_timeout=HANG_GUARD_SECONDS,
            db_statement_timeout_ms=int(HANG_GUARD_SECONDS * 1000),
        )

    async def test_concurrent_purchases_all_count(
        self, backend: Backend, http: httpx.AsyncClient, headers: dict[str, str]
    ) -> None:
        responses = await asyncio.gather(
            *(http.post("/v1/events", json=purchase(f"e-{i}"), headers=headers) for i in range(50))
        )
        assert [r.status_code for r in responses] == [202] * 50
        assert len({r.json()["profile_id"] for r in responses}) == 1
        after = await metrics(http, headers)
        assert after["order_count"] == 50
        assert after["lifetime_value"] == 500.0

    async def test_concurrent_deliveries_of_one_event_count_once(
        self, backend: Backend, http: httpx.AsyncClient, headers: dict[str, str]
    ) -> None:
        responses = await asyncio.gather(
            *(http.post("/v1/events", json=purchase("same"), headers=headers) for _ in range(50))
        )
        codes = sorted(r.status_code for r in responses)
        assert codes == [200] * 49 + [202]
        assert (await metrics(http, headers))["order_count"] == 1


async def as_client(token_for: TokenMaker, scopes: str = "events:write") -> dict[str, str]:
    """Authorization for a new client of its own."""
    return {"Authorization": f"Bearer {await token_for(scopes)}"}


class TestEventIds:
    async def test_same_id_and_body_is_a_duplicate_of_the_first_answer(
        self, http: httpx.AsyncClient, headers: dict[str, str]
    ) -> None:
        event = purchase("e-1", occurred_at="2026-11-01T10:00:00Z")
        first = await http.post("/v1/events", json=event, headers=headers)
        assert first.status_code == 202
        # The same event, its members in another order and its identifiers spelled otherwise.
        again = {
            "data": {"currency": "EUR", "amount": "10.00"},
            "identifiers": {"email": "Jane@Example.com", "guest_ref": "g-1"},
            "occurred_at": "2026-11-01T11:00:00+01:00",
            "type": "Purchase",
            "event_id": "e-1",
        }
        repeat = await http.post("/v1/events", json=again, headers=headers)
        assert repeat.status_code == 200, repeat.text
        assert repeat.json() == {**first.json(), "duplicate": True}
        assert (await metrics(http, headers))["order_count"] == 1

    async def test_same_id_with_another_body_is_409_and_reveals_nothing(
        self, http: httpx.AsyncClient, headers: dict[str, str], token_for: TokenMaker
    ) -> None:
        writer = await as_client(token_for)
        first = await http.post("/v1/events", json=purchase("e-1"), headers=writer)
        assert first.status_code == 202
        other = {
            "event_id": "e-1",
            "type": "page_view",
            "identifiers": {"guest_ref": "g-2"},
            "data": {"page": "/"},
        }
        for body in (purchase("e-1", "11.00"), other):
            response = await http.post("/v1/events", json=body, headers=writer)
            assert response.status_code == 409, response.text
            answer = response.json()
            assert set(answer) == {"error", "detail"}
            assert answer["error"] == "conflict"
            assert answer["detail"] == (
                "this event_id was already used for another event: a repeat must be the same "
                "event, a new event needs a new event_id"
            )
            for secret in (first.json()["profile_id"], "jane", "g-1", "10.0", "EUR"):
                assert secret not in response.text.lower()
        assert (await metrics(http, headers))["order_count"] == 1
        unknown = await http.get("/v1/profiles/guest_ref/g-2", headers=headers)
        assert unknown.status_code == 404

    async def test_ids_are_scoped_per_client(
        self, http: httpx.AsyncClient, headers: dict[str, str], token_for: TokenMaker
    ) -> None:
        one, two = await as_client(token_for), await as_client(token_for)
        first = await http.post("/v1/events", json=purchase("ord-1"), headers=one)
        # Another client's event with the same id is its own event, whatever its body.
        other = purchase("ord-1", "5.00")
        other["identifiers"] = {"guest_ref": "g-2"}
        second = await http.post("/v1/events", json=other, headers=two)
        assert (first.status_code, second.status_code) == (202, 202)
        assert second.json()["profile_id"] != first.json()["profile_id"]
        # Each client's repeat is a duplicate of its own event, and tells only its own profile.
        repeat = await http.post("/v1/events", json=other, headers=two)
        assert repeat.status_code == 200
        assert repeat.json()["profile_id"] == second.json()["profile_id"]
        own = await http.post("/v1/events", json=purchase("ord-1"), headers=one)
        assert own.status_code == 200
        assert own.json()["profile_id"] == first.json()["profile_id"]
        assert (await metrics(http, headers))["order_count"] == 1

    async def test_after_erasure_a_changed_retry_is_still_refused(
        self, http: httpx.AsyncClient, headers: dict[str, str]
    ) -> None:
        await http.post("/v1/events", json=purchase("e-1"), headers=headers)
        assert (await http.delete("/v1/profiles/guest_ref/g-1", headers=headers)).status_code == 204
        changed = await http.post("/v1/events", json=purchase("e-1", "12.00"), headers=headers)
        assert changed.status_code == 409
        gone = await http.get("/v1/profiles/guest_ref/g-1", headers=headers)
        assert gone.status_code == 404


def refused_past(metric: str, largest: str) -> str:
    """The detail of a purchase refused by a metric's bound: which metric, and its largest."""
    return (
        f"the purchase would take metrics.{metric} past {largest}, the largest it holds; "
        "the event was not recorded"
    )


class TestEventValues:
    """Sums stay within what the metrics document (1e14); time stays near the present."""

    async def test_a_purchase_past_the_largest_lifetime_value_is_422_and_changes_nothing(
        self, http: httpx.AsyncClient, headers: dict[str, str]
    ) -> None:
        document = {"metrics": {"lifetime_value": 99_999_999_999_990, "order_count": 3}}
        put = await http.put("/v1/profiles/guest_ref/g-1", json=document, headers=headers)
        assert put.status_code == 201, put.text
        before = await metrics(http, headers)
        # Each would go on past 1e14 (and, on PostgreSQL, past what NUMERIC(20, 4) holds).
        for n in range(3):
            response = await http.post(
                "/v1/events", json=purchase(f"big-{n}", 100_000_000_000_000), headers=headers
            )
            assert response.status_code == 422, response.text
            assert response.json()["error"] == "validation_error"
            assert response.json()["detail"] == refused_past("lifetime_value", "1e14")
        assert await metrics(http, headers) == before
        # Up to the bound is fine, and the refused ids were not used up.
        fits = await http.post("/v1/events", json=purchase("big-0", "10"), headers=headers)
        assert fits.status_code == 202, fits.text
        assert (await metrics(http, headers))["lifetime_value"] == 1e14

    async def test_an_order_count_past_its_largest_value_is_422(
        self, http: httpx.AsyncClient, headers: dict[str, str]
    ) -> None:
        document = {"metrics": {"order_count": 2**31 - 1}}
        await http.put("/v1/profiles/guest_ref/g-1", json=document, headers=headers)
        response = await http.post("/v1/events", json=purchase("e-1"), headers=headers)
        assert response.status_code == 422, response.text
        assert response.json()["detail"] == refused_past("order_count", "2147483647")
        assert (await metrics(http, headers))["order_count"] == 2**31 - 1

    @pytest.mark.parametrize("kind", ["purchase", "page_view"])
    async def test_an_event_from_the_far_future_is_422_and_changes_nothing(
        self, http: httpx.AsyncClient, headers: dict[str, str], kind: str
    ) -> None:
        await http.post(
            "/v1/events", json=purchase("e-0", occurred_at="2026-11-01T00:00:00Z"), headers=headers
        )
        before = await metrics(http, headers)
        event = {**purchase("e-1", occurred_at="9999-12-31T23:59:59Z"), "type": kind}
        response = await http.post("/v1/events", json=event, headers=headers)
        assert response.status_code == 422, response.text
        assert response.json()["error"] == "validation_error"
        assert "occurred_at" in response.text
        assert await metrics(http, headers) == before

    async def test_a_small_clock_skew_is_accepted_and_the_skew_is_a_setting(
        self, app_factory: AppFactory, token_for: TokenMaker, http: httpx.AsyncClient
    ) -> None:
        ahead = (datetime.now(UTC) + timedelta(seconds=60)).isoformat()
        headers = await as_client(token_for, "profiles:read events:write")
        accepted = await http.post(
            "/v1/events", json=purchase("e-1", occurred_at=ahead), headers=headers
        )
        assert accepted.status_code == 202, accepted.text
        strict = await app_factory(event_max_clock_skew_seconds=0)
        refused = await strict.http.post(
            "/v1/events", json=purchase("e-2", occurred_at=ahead), headers=headers
        )
        assert refused.status_code == 422, refused.text


class TestErasureDuringAnEvent:
    async def test_a_purchase_whose_profile_is_erased_meanwhile_counts_on_a_new_one(
        self, http: httpx.AsyncClient, headers: dict[str, str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The profile is erased between resolving the identifiers and moving the metrics (as
        a concurrent DELETE would): the event resolves again, to a new profile, not a 500."""
        first = await http.post("/v1/events", json=purchase("e-1"), headers=headers)
        erased = first.json()["profile_id"]
        apply = EventRepository.apply

        async def erased_first(self: EventRepository, profile_id: uuid.UUID, *args: Any) -> bool:
            if str(profile_id) == erased:
                await ProfileRepository(self.session).delete(profile_id)
            return await apply(self, profile_id, *args)

        monkeypatch.setattr(EventRepository, "apply", erased_first)
        response = await http.post("/v1/events", json=purchase("e-2"), headers=headers)
        assert response.status_code == 202, response.text
        assert response.json()["profile_id"] != erased
        assert (await metrics(http, headers))["order_count"] == 1
