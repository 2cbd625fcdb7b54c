"""GET /v1/profiles/{type}/{value}/export: everything held about a guest, for an access
request: the profile, every event a page at a time, audited without its content."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from app.audit.log import PROFILE_EXPORTED, AuditLog
from app.profiles import export
from tests.conftest import RunningApp, TokenMaker

EXPORT = "/v1/profiles/email/jane@example.com/export"
JANE = {"identifiers": {"crm_id": "C-1001"}, "traits": {"tier": "gold"}, "segments": ["vip"]}


@pytest.fixture
async def admin(token_for: TokenMaker) -> dict[str, str]:
    return {"Authorization": f"Bearer {await token_for('admin')}"}


async def jane_with_events(
    http: httpx.AsyncClient, headers: dict[str, str], count: int
) -> list[str]:
    stored = await http.put("/v1/profiles/email/jane@example.com", json=JANE, headers=headers)
    assert stored.status_code == 201, stored.text
    ids = [f"view-{n}" for n in range(count)]
    for n, event_id in enumerate(ids):
        event = {
            "event_id": event_id,
            "type": "view",
            "identifiers": {"crm_id": "C-1001"},
            "data": {"page": f"/p/{n}"},
        }
        assert (await http.post("/v1/events", json=event, headers=headers)).status_code == 202
    return ids


async def every_page(
    http: httpx.AsyncClient, headers: dict[str, str], limit: int
) -> list[dict[str, Any]]:
    pages: list[dict[str, Any]] = []
    params: dict[str, Any] = {"events_limit": limit}
    while True:
        response = await http.get(EXPORT, params=params, headers=headers)
        assert response.status_code == 200, response.text
        pages.append(response.json())
        if pages[-1]["events_next"] is None:
            return pages
        params["events_after"] = pages[-1]["events_next"]
        assert len(pages) < 50, "the cursor does not advance"


class TestExport:
    async def test_holds_the_profile_and_every_event_with_its_sender(
        self, http: httpx.AsyncClient, headers: dict[str, str], admin: dict[str, str]
    ) -> None:
        ids = await jane_with_events(http, headers, 3)
        response = await http.get(EXPORT, headers=admin)
        assert response.status_code == 200, response.text
        assert response.headers["cache-control"] == "no-store"
        body = response.json()
        profile = (await http.get("/v1/profiles/crm_id/C-1001", headers=headers)).json()
        assert body["profile"] == profile
        assert [e["event_id"] for e in body["events"]] == ids  # oldest first
        first = body["events"][0]
        assert first["type"] == "view"
        assert first["data"] == {"page": "/p/0"}
        assert first["client_id"].startswith("enr_")
        assert first["received_at"].endswith("Z")
        assert first["occurred_at"].endswith("Z")
        assert body["events_next"] is None

    async def test_pages_give_every_event_once_in_order(
        self, http: httpx.AsyncClient, headers: dict[str, str], admin: dict[str, str]
    ) -> None:
        ids = await jane_with_events(http, headers, 7)
        pages = await every_page(http, admin, limit=3)
        assert [len(page["events"]) for page in pages] == [3, 3, 1]
        assert [e["event_id"] for page in pages for e in page["events"]] == ids

    async def test_a_page_also_ends_at_its_byte_budget_and_the_next_goes_on(
        self,
        http: httpx.AsyncClient,
        headers: dict[str, str],
        admin: dict[str, str],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        ids = await jane_with_events(http, headers, 5)
        # Each event's data is {"page": "/p/N"} (15 bytes): the page ends past 20 bytes.
        monkeypatch.setattr(export, "PAGE_MAX_BYTES", 20)
        pages = await every_page(http, admin, limit=1000)
        assert [len(page["events"]) for page in pages] == [2, 2, 1]
        assert [e["event_id"] for page in pages for e in page["events"]] == ids

    async def test_a_page_that_ends_with_the_last_event_says_there_is_no_next(
        self, http: httpx.AsyncClient, headers: dict[str, str], admin: dict[str, str]
    ) -> None:
        await jane_with_events(http, headers, 4)
        pages = await every_page(http, admin, limit=2)
        assert [len(page["events"]) for page in pages] == [2, 2]

    async def test_is_for_admin_clients_only(
        self, http: httpx.AsyncClient, headers: dict[str, str]
    ) -> None:
        await jane_with_events(http, headers, 1)
        refused = await http.get(EXPORT, headers=headers)  # profiles:read, not admin
        assert refused.status_code == 403
        assert "insufficient_scope" in refused.headers["www-authenticate"]

    async def test_an_unknown_guest_is_404(
        self, http: httpx.AsyncClient, admin: dict[str, str]
    ) -> None:
        response = await http.get("/v1/profiles/email/nobody@example.com/export", headers=admin)
        assert response.status_code == 404
        assert response.json()["error"] == "not_found"

    @pytest.mark.parametrize("cursor", ["nope", "WyJ4Il0", "WyIyMDI2LTEzLTAxIiwgImEiLCAiYiJd"])
    async def test_a_cursor_it_did_not_give_is_400(
        self, http: httpx.AsyncClient, headers: dict[str, str], admin: dict[str, str], cursor: str
    ) -> None:
        await jane_with_events(http, headers, 1)
        response = await http.get(EXPORT, params={"events_after": cursor}, headers=admin)
        assert response.status_code == 400, response.text
        assert response.json()["error"] == "invalid_cursor"

    @pytest.mark.parametrize("limit", ["0", "10001", "many"])
    async def test_a_page_size_out_of_range_is_422(
        self, http: httpx.AsyncClient, headers: dict[str, str], admin: dict[str, str], limit: str
    ) -> None:
        await jane_with_events(http, headers, 1)
        response = await http.get(EXPORT, params={"events_limit": limit}, headers=admin)
        assert response.status_code == 422

    async def test_a_value_ending_in_slash_export_is_still_a_profile_read(
        self, http: httpx.AsyncClient, headers: dict[str, str], admin: dict[str, str]
    ) -> None:
        path = "/v1/profiles/crm_id/a%2Fexport"
        assert (await http.put(path, json={}, headers=headers)).status_code == 201
        read = await http.get(path, headers=headers)
        assert read.status_code == 200, read.text
        assert read.json()["identifiers"]["crm_id"] == "a/export"
        exported = await http.get(path + "/export", headers=admin)
        assert exported.status_code == 200, exported.text
        assert exported.json()["profile"]["identifiers"]["crm_id"] == "a/export"


class TestOtherMethodsOnTheExport:
    @pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE", "POST"])
    async def test_are_405_and_touch_no_profile(
        self, http: httpx.AsyncClient, headers: dict[str, str], method: str
    ) -> None:
        await jane_with_events(http, headers, 0)
        response = await http.request(method, EXPORT, json={}, headers=headers)
        assert response.status_code == 405, response.text
        assert response.headers["allow"] == "GET"
        # Not taken for a write to a profile whose identifier is "jane@example.com/export".
        assert (await http.get(EXPORT[: -len("/export")], headers=headers)).status_code == 200
        unknown = await http.get("/v1/profiles/email/jane%40example.com%2Fexport", headers=headers)
        assert unknown.status_code == 404  # a read of a guest nobody is

    async def test_a_value_ending_in_slash_export_is_written_with_its_slash_encoded(
        self, http: httpx.AsyncClient, headers: dict[str, str]
    ) -> None:
        written = await http.put("/v1/profiles/crm_id/a%2Fexport", json={}, headers=headers)
        assert written.status_code == 201, written.text
        erased = await http.delete("/v1/profiles/crm_id/a%2Fexport", headers=headers)
        assert erased.status_code == 204


class TestExportAudit:
    async def test_each_export_is_audited_without_its_content(
        self,
        running: RunningApp,
        http: httpx.AsyncClient,
        headers: dict[str, str],
        admin: dict[str, str],
    ) -> None:
        await jane_with_events(http, headers, 2)
        assert (await http.get(EXPORT, headers=admin)).status_code == 200
        async with running.runtime.sessionmaker() as session:
            entries = [e for e in await AuditLog(session).list() if e.action == PROFILE_EXPORTED]
        assert len(entries) == 1
        entry = entries[0]
        assert entry.actor.startswith("client:enr_")
        assert entry.target is not None
        assert entry.target.startswith("email:")
        assert "jane" not in entry.target
        assert "jane" not in str(entry.details)
        assert entry.details["events"] == 2


class TestExportConsent:
    async def test_holds_every_consent_change_oldest_first_with_how_it_came(
        self, http: httpx.AsyncClient, headers: dict[str, str], admin: dict[str, str]
    ) -> None:
        await jane_with_events(http, headers, 0)
        path = "/v1/profiles/email/jane@example.com"
        granted = {"status": "granted", "at": "2026-05-01T10:00:00Z", "source": "cmp"}
        denied = {"status": "denied", "at": "2026-06-01T10:00:00Z"}
        for decision in (granted, denied):
            patch = await http.patch(
                path,
                json={"consent": {"marketing": decision}},
                headers={**headers, "Content-Type": "application/merge-patch+json"},
            )
            assert patch.status_code == 200, patch.text
        event = {
            "event_id": "consent-1",
            "type": "consent",
            "identifiers": {"crm_id": "C-1001"},
            "occurred_at": "2026-07-01T10:00:00Z",
            "data": {"purpose": "analytics", "status": "denied", "source": "banner"},
        }
        assert (await http.post("/v1/events", json=event, headers=headers)).status_code == 202

        body = (await http.get(EXPORT, headers=admin)).json()

        changes = [
            (c["purpose"], c["status"], c["at"], c["source"], c["channel"])
            for c in body["consent_history"]
        ]
        assert changes == [
            ("marketing", "granted", "2026-05-01T10:00:00Z", "cmp", "api"),
            ("marketing", "denied", "2026-06-01T10:00:00Z", None, "api"),
            ("analytics", "denied", "2026-07-01T10:00:00Z", "banner", "event"),
        ]
        assert all(c["recorded_at"].endswith("Z") for c in body["consent_history"])
        assert body["profile"]["consent"]["marketing"]["status"] == "denied"
