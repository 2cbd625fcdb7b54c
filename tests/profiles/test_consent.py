"""Consent per purpose in profile documents, on both backends: PUT, PATCH (merge per
purpose), bulk, and the rules every write follows (configured purposes only, an older decision
never overwrites a newer one, nothing removed), with the history each change appends."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import orjson

from app.profiles.repository import ProfileRepository
from tests.conftest import AppFactory, RunningApp
from tests.fixtures.callers import fetch_token, make_client_on

MERGE = {"Content-Type": "application/merge-patch+json"}
PATH = "/v1/profiles/crm_id/C-7"
JANE = {"identifiers": {"email": "jane@example.com"}, "traits": {"tier": "gold"}, "source": "crm"}


def decision(status: str, at: str, source: str | None = None) -> dict[str, Any]:
    return {"status": status, "at": at} | ({"source": source} if source else {})


async def put(http: httpx.AsyncClient, headers: dict[str, str], **consent: Any) -> httpx.Response:
    return await http.put(PATH, json={**JANE, "consent": consent}, headers=headers)


async def patch(http: httpx.AsyncClient, headers: dict[str, str], body: Any) -> httpx.Response:
    return await http.patch(PATH, json=body, headers=headers | MERGE)


async def history(running: RunningApp, profile_id: str) -> list[tuple[str, str, str | None]]:
    async with running.runtime.sessionmaker() as session:
        rows = await ProfileRepository(session).consent_history(uuid.UUID(profile_id))
    return [(row.purpose, row.status, row.channel) for row in rows]


class TestConsentWrites:
    async def test_put_stores_consent_and_get_reads_it_back(
        self, running: RunningApp, headers: dict[str, str]
    ) -> None:
        written = await put(
            running.http,
            headers,
            marketing=decision("denied", "2026-05-01T12:00:00+02:00", "cmp"),
            personalization=decision("granted", "2026-05-01T10:00:00Z"),
        )
        assert written.status_code == 201, written.text
        body = (await running.http.get(PATH, headers=headers)).json()
        assert body["consent"] == {
            "marketing": {"status": "denied", "at": "2026-05-01T10:00:00Z", "source": "cmp"},
            # no source of its own: the document's
            "personalization": {"status": "granted", "at": "2026-05-01T10:00:00Z", "source": "crm"},
        }
        assert await history(running, body["profile_id"]) == [
            ("marketing", "denied", "api"),
            ("personalization", "granted", "api"),
        ]

    async def test_a_patch_merges_per_purpose_and_a_put_without_consent_keeps_it(
        self, running: RunningApp, headers: dict[str, str]
    ) -> None:
        await put(running.http, headers, marketing=decision("granted", "2026-05-01T10:00:00Z"))
        patched = await patch(
            running.http,
            headers,
            {"consent": {"analytics": decision("denied", "2026-05-02T10:00:00Z")}},
        )
        assert patched.status_code == 200, patched.text
        assert set(patched.json()["consent"]) == {"marketing", "analytics"}
        replaced = await running.http.put(PATH, json=JANE, headers=headers)
        assert replaced.status_code == 200
        assert set(replaced.json()["consent"]) == {"marketing", "analytics"}

    async def test_an_older_decision_never_overwrites_a_newer_one(
        self, running: RunningApp, headers: dict[str, str]
    ) -> None:
        first = await put(
            running.http, headers, marketing=decision("denied", "2026-06-01T00:00:00Z")
        )
        version = first.json()["version"]
        late = await patch(
            running.http,
            headers,
            {"consent": {"marketing": decision("granted", "2026-05-01T00:00:00Z", "crm")}},
        )
        assert late.status_code == 200
        assert late.json()["consent"]["marketing"]["status"] == "denied"
        assert late.json()["version"] == version  # nothing changed
        newer = await patch(
            running.http,
            headers,
            {"consent": {"marketing": decision("granted", "2026-07-01T00:00:00Z")}},
        )
        assert newer.json()["consent"]["marketing"]["status"] == "granted"
        assert [row[1] for row in await history(running, first.json()["profile_id"])] == [
            "denied",
            "granted",
        ]

    async def test_the_same_decision_again_changes_nothing(
        self, running: RunningApp, headers: dict[str, str]
    ) -> None:
        same = decision("granted", "2026-05-01T10:00:00Z", "cmp")
        first = (await put(running.http, headers, marketing=same)).json()
        again = (await put(running.http, headers, marketing=same)).json()
        assert again["version"] == first["version"]
        assert len(await history(running, first["profile_id"])) == 1

    async def test_unknown_purposes_bad_statuses_and_removals_are_422(
        self, running: RunningApp, headers: dict[str, str]
    ) -> None:
        await put(running.http, headers, marketing=decision("granted", "2026-05-01T10:00:00Z"))
        unknown = await put(
            running.http, headers, profiling=decision("granted", "2026-05-01T10:00:00Z")
        )
        assert unknown.status_code == 422
        assert "unknown consent purpose 'profiling'" in unknown.text
        assert "marketing" in unknown.text  # the known ones are named
        bad = await patch(running.http, headers, {"consent": {"marketing": {"status": "maybe"}}})
        assert bad.status_code == 422
        for removal in ({"consent": None}, {"consent": {"marketing": None}}):
            refused = await patch(running.http, headers, removal)
            assert refused.status_code == 422, refused.text
            assert "write status denied" in refused.json()["detail"] or "denied" in refused.text
        kept = (await running.http.get(PATH, headers=headers)).json()["consent"]
        assert kept["marketing"]["status"] == "granted"

    async def test_other_purposes_can_be_configured(self, app_factory: AppFactory) -> None:
        app = await app_factory(consent_purposes="email:opt-in")
        token = await _token(app)
        headers = {"Authorization": f"Bearer {token}"}
        assert (
            await put(app.http, headers, email=decision("granted", "2026-05-01T10:00:00Z"))
        ).is_success
        refused = await put(
            app.http, headers, marketing=decision("granted", "2026-05-01T10:00:00Z")
        )
        assert refused.status_code == 422


async def _token(app: RunningApp) -> str:
    client = await make_client_on(app, "profiles:read profiles:write")
    return await fetch_token(app.http, client)


class TestBulkConsent:
    async def test_bulk_records_carry_consent_under_the_same_rules(
        self, running: RunningApp, headers: dict[str, str]
    ) -> None:
        await put(running.http, headers, marketing=decision("denied", "2026-06-01T00:00:00Z"))
        records = [
            {**JANE, "consent": {"marketing": decision("granted", "2026-05-01T00:00:00Z")}},
            {
                "identifiers": {"email": "amy@example.com"},
                "consent": {"marketing": decision("granted", "2026-05-01T00:00:00Z")},
            },
            {**JANE, "consent": {"analytics": decision("denied", "2026-05-01T00:00:00Z")}},
            {"identifiers": {"email": "x@example.com"}, "consent": {"nope": {"status": "denied"}}},
        ]
        body = b"\n".join(orjson.dumps(record) for record in records)
        answer = await running.http.post(
            "/v1/profiles/bulk",
            content=body,
            headers=headers | {"Content-Type": "application/x-ndjson"},
        )
        assert answer.status_code == 200, answer.text
        outcome = answer.json()
        assert [r["status"] for r in outcome["results"]] == [
            "updated",  # (records landing on one profile share its outcome)
            "created",
            "updated",  # a new purpose decided; the older marketing decision changed nothing
            "failed",
        ]
        assert "unknown consent purpose 'nope'" in outcome["results"][3]["error"]
        jane = (await running.http.get(PATH, headers=headers)).json()
        assert jane["consent"]["marketing"]["status"] == "denied"
        assert jane["consent"]["analytics"]["source"] == "crm"
        amy = await running.http.get("/v1/profiles/email/amy@example.com", headers=headers)
        assert amy.json()["consent"]["marketing"]["status"] == "granted"
        assert await history(running, amy.json()["profile_id"]) == [
            ("marketing", "granted", "bulk")
        ]
