"""Consent events on both backends: a decision at ``occurred_at`` under the rules of every
consent write, idempotent by event_id, creating the profile of an unknown guest."""

from __future__ import annotations

from typing import Any

import httpx

PATH = "/v1/profiles/guest_ref/g-1"


def consent_event(event_id: str, status: str, at: str, **data: Any) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "type": "consent",
        "identifiers": {"guest_ref": "g-1"},
        "occurred_at": at,
        "data": {"purpose": "marketing", "status": status, **data},
    }


async def consent(http: httpx.AsyncClient, headers: dict[str, str]) -> dict[str, Any]:
    response = await http.get(PATH, headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()["consent"]
    return body


class TestConsentEvents:
    async def test_a_consent_event_records_the_decision_for_a_new_guest(
        self, http: httpx.AsyncClient, headers: dict[str, str]
    ) -> None:
        sent = consent_event("c-1", "denied", "2026-05-01T10:00:00Z", source="banner")
        response = await http.post("/v1/events", json=sent, headers=headers)
        assert response.status_code == 202, response.text
        assert await consent(http, headers) == {
            "marketing": {"status": "denied", "at": "2026-05-01T10:00:00Z", "source": "banner"}
        }

    async def test_a_repeat_is_a_duplicate_and_an_older_decision_changes_nothing(
        self, http: httpx.AsyncClient, headers: dict[str, str]
    ) -> None:
        sent = consent_event("c-1", "granted", "2026-06-01T00:00:00Z")
        assert (await http.post("/v1/events", json=sent, headers=headers)).status_code == 202
        repeat = await http.post("/v1/events", json=sent, headers=headers)
        assert repeat.status_code == 200
        assert repeat.json()["duplicate"] is True
        older = consent_event("c-2", "denied", "2026-05-01T00:00:00Z")
        assert (await http.post("/v1/events", json=older, headers=headers)).status_code == 202
        assert (await consent(http, headers))["marketing"]["status"] == "granted"
        newer = consent_event("c-3", "denied", "2026-07-01T00:00:00Z")
        assert (await http.post("/v1/events", json=newer, headers=headers)).status_code == 202
        assert (await consent(http, headers))["marketing"]["status"] == "denied"

    async def test_a_consent_event_must_name_a_purpose_and_a_status(
        self, http: httpx.AsyncClient, headers: dict[str, str]
    ) -> None:
        for data, says in (
            ({"status": "denied"}, "data.purpose"),
            ({"purpose": "profiling", "status": "denied"}, "unknown consent purpose 'profiling'"),
            ({"purpose": "marketing", "status": "yes"}, "data.status"),
            ({"purpose": "marketing", "status": "denied", "source": 7}, "data.source"),
        ):
            sent = {"event_id": "c-x", "type": "Consent", "identifiers": {"guest_ref": "g-1"}}
            response = await http.post("/v1/events", json={**sent, "data": data}, headers=headers)
            assert response.status_code == 422, response.text
            assert says in response.text
        missing = await http.get(PATH, headers=headers)
        assert missing.status_code == 404  # nothing was recorded
