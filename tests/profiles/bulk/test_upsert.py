"""The bulk engine: what each record does to the stored profiles, on both backends."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

from sqlalchemy import text

from app.profiles.bulk.plan import BulkResult
from app.profiles.bulk.upsert import upsert_documents
from app.profiles.schemas import ProfileDocument
from tests.conftest import Backend
from tests.profiles.helpers import Sessions, stored_profiles


async def upsert(sessions: Sessions, *documents: dict[str, Any]) -> BulkResult:
    parsed = [(i, ProfileDocument.model_validate(d)) for i, d in enumerate(documents)]
    async with sessions() as session:
        result = await upsert_documents(session, parsed, region="US")
        await session.commit()
    return result


def statuses(result: BulkResult) -> list[str]:
    return [outcome.status for outcome in result.results]


JANE = {
    "identifiers": {"email": " Jane@Example.com ", "crm_id": "C-1"},
    "traits": {"first_name": "Jane", "tier": "gold"},
    "segments": ["vip"],
    "metrics": {"order_count": 3, "lifetime_value": 120.5, "visits": 7},
    "recommendations": [{"product_id": "SKU-1", "score": 0.9, "name": "Boots"}],
    "source": "crm",
}
JANE_KEYS = "crm_id:C-1 email:jane@example.com email_sha256:"


def jane(profiles: dict[str, dict[str, Any]]) -> dict[str, Any]:
    (name,) = [n for n in profiles if n.startswith(JANE_KEYS)]
    return profiles[name]


class TestUpsertDocuments:
    async def test_new_records_are_created_with_their_content(self, sessions: Sessions) -> None:
        result = await upsert(sessions, JANE, {"identifiers": {"phone": "(415) 555-0100"}})

        assert statuses(result) == ["created", "created"]
        assert (result.created, result.updated, result.unchanged, result.failed) == (2, 0, 0, 0)
        profiles = await stored_profiles(sessions)
        stored = jane(profiles)
        assert stored["traits"] == {"first_name": "Jane", "tier": "gold"}
        assert stored["metrics"] == {"visits": 7}
        assert stored["order_count"] == 3
        assert stored["lifetime_value"] == Decimal("120.5")
        assert stored["recommendations"] == [{"product_id": "SKU-1", "score": 0.9, "name": "Boots"}]
        assert stored["version"] == 1
        assert "phone:+14155550100" in profiles

    async def test_the_same_records_again_change_nothing(self, sessions: Sessions) -> None:
        await upsert(sessions, JANE)
        before = jane(await stored_profiles(sessions))

        result = await upsert(sessions, JANE)

        assert statuses(result) == ["unchanged"]
        assert result.changed_keys == []
        after = jane(await stored_profiles(sessions))
        assert (after["version"], after["updated_at"]) == (before["version"], before["updated_at"])

    async def test_a_changed_record_replaces_the_content(self, sessions: Sessions) -> None:
        await upsert(sessions, JANE)

        changed = {**JANE, "traits": {"tier": "platinum"}, "segments": [], "source": None}
        result = await upsert(sessions, changed)

        assert statuses(result) == ["updated"]
        stored = jane(await stored_profiles(sessions))
        assert stored["traits"] == {"tier": "platinum"}
        assert stored["segments"] == []
        assert stored["source"] is None
        assert stored["version"] == 2

    async def test_event_metrics_stay_unless_the_record_names_them(
        self, sessions: Sessions
    ) -> None:
        await upsert(sessions, JANE)

        await upsert(sessions, {**JANE, "metrics": {"visits": 8}})
        kept = jane(await stored_profiles(sessions))
        await upsert(sessions, {**JANE, "metrics": {"visits": 8, "order_count": 5}})
        replaced = jane(await stored_profiles(sessions))

        assert (kept["order_count"], kept["lifetime_value"]) == (3, Decimal("120.5"))
        assert kept["metrics"] == {"visits": 8}
        assert (replaced["order_count"], replaced["lifetime_value"]) == (5, Decimal("120.5"))

    async def test_identifiers_are_added_and_never_removed(self, sessions: Sessions) -> None:
        await upsert(sessions, JANE)

        added = await upsert(
            sessions, {**JANE, "identifiers": {"crm_id": "C-1", "guest_ref": "g1"}}
        )
        again = await upsert(sessions, {**JANE, "identifiers": {"guest_ref": "g1"}})

        assert statuses(added) == ["updated"]
        assert statuses(again) == ["unchanged"]
        (name,) = await stored_profiles(sessions)
        assert name.startswith(JANE_KEYS)
        assert name.endswith("guest_ref:g1")
        # Every identifier of the changed profile is named, for the cache.
        assert {k[0] for k in added.changed_keys} == {
            "email",
            "email_sha256",
            "crm_id",
            "guest_ref",
        }

    async def test_identifiers_of_two_profiles_fail_the_record(self, sessions: Sessions) -> None:
        await upsert(sessions, JANE, {"identifiers": {"crm_id": "C-2"}})

        result = await upsert(
            sessions,
            {"identifiers": {"email": "jane@example.com", "crm_id": "C-2"}, "traits": {"x": 1}},
            {"identifiers": {"crm_id": "C-3"}},
        )

        assert statuses(result) == ["failed", "created"]
        assert result.results[0].error == "identifier crm_id 'C-2' belongs to another profile"
        assert jane(await stored_profiles(sessions))["traits"] == JANE["traits"]

    async def test_bad_identifiers_fail_only_their_record(self, sessions: Sessions) -> None:
        result = await upsert(
            sessions,
            {"identifiers": {"email": "not-an-email"}},
            {"identifiers": {"email": "${guest.email}"}, "traits": {"a": 1}},
            {"identifiers": {"phone": "12"}},
            JANE,
        )

        assert statuses(result) == ["failed", "failed", "failed", "created"]
        assert "not an email address" in (result.results[0].error or "")
        assert result.results[1].error == "a profile needs at least one identifier"
        assert "phone" in (result.results[2].error or "")
        assert len(await stored_profiles(sessions)) == 1

    async def test_records_sharing_an_identifier_land_on_one_profile(
        self, sessions: Sessions
    ) -> None:
        result = await upsert(
            sessions,
            {"identifiers": {"email": "a@example.com"}, "traits": {"n": 1}},
            {"identifiers": {"email": "a@example.com", "crm_id": "A"}, "traits": {"n": 2}},
            {"identifiers": {"crm_id": "A"}, "traits": {"n": 3}, "metrics": {"order_count": 1}},
        )

        assert statuses(result) == ["created", "updated", "updated"]
        (stored,) = (await stored_profiles(sessions)).values()
        assert stored["traits"] == {"n": 3}
        assert stored["order_count"] == 1
        assert stored["version"] == 1

    async def test_outcomes_keep_the_callers_indexes(self, sessions: Sessions) -> None:
        documents = [(7, ProfileDocument.model_validate(JANE)), (3, ProfileDocument())]
        async with sessions() as session:
            result = await upsert_documents(session, documents, region="US")
            await session.rollback()

        assert [(o.index, o.status) for o in result.results] == [(3, "failed"), (7, "created")]

    async def test_the_callers_rollback_undoes_the_batch(self, sessions: Sessions) -> None:
        documents = [(0, ProfileDocument.model_validate(JANE))]
        async with sessions() as session:
            result = await upsert_documents(session, documents, region="US")
            await session.rollback()

        assert result.created == 1
        assert await stored_profiles(sessions) == {}

    async def test_a_large_batch_is_one_call(self, sessions: Sessions) -> None:
        records = [
            {"identifiers": {"email": f"user{i}@example.com"}, "traits": {"i": i}}
            for i in range(3000)
        ]
        created = await upsert(sessions, *records)
        records[10] = {**records[10], "traits": {"i": -1}}
        second = await upsert(sessions, *records)

        assert created.created == 3000
        assert (second.updated, second.unchanged) == (1, 2999)
        assert len(second.changed_keys) == 2  # the email and its email_sha256


class TestConcurrentBatches:
    async def test_overlapping_batches_at_once_both_succeed(
        self, backend: Backend, sessions: Sessions
    ) -> None:
        def batch(version: int) -> list[tuple[int, ProfileDocument]]:
            return [
                (
                    i,
                    ProfileDocument(
                        identifiers={"email": f"p{i}@example.com"}, traits={"v": version}
                    ),
                )
                for i in range(300)
            ]

        async def load(version: int) -> BulkResult:
            async with sessions() as session:
                if backend.name == "sqlite":
                    await session.execute(text("BEGIN IMMEDIATE"))  # as the API's writes do
                result = await upsert_documents(session, batch(version), region="US")
                await asyncio.sleep(0.05)  # hold the transaction open while the other runs
                await session.commit()
                return result

        first, second = await asyncio.gather(load(1), load(2))

        assert first.failed == second.failed == 0
        assert first.created + second.created == 300
        profiles = await stored_profiles(sessions)
        assert len(profiles) == 300
        assert {p["traits"]["v"] for p in profiles.values()} <= {1, 2}
