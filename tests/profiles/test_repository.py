"""The profile repository's statements that no route test reaches alone."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import func, select

from app.core.models import Event, Identifier, Profile
from app.profiles.bulk.upsert import upsert_documents
from app.profiles.repository import ProfileRepository
from app.profiles.schemas import ProfileDocument
from tests.profiles.helpers import Sessions, person


class TestErasure:
    async def test_erasing_a_profile_removes_its_identifiers_and_events(
        self, sessions: Sessions
    ) -> None:
        async with sessions() as session:
            await upsert_documents(
                session,
                [(i, ProfileDocument.model_validate(person(i))) for i in range(2)],
                region="US",
            )
            owner = await session.scalar(
                select(Identifier.profile_id).where(Identifier.value == "p0@example.com")
            )
            assert owner is not None
            session.add(
                Event(
                    client_id="test",
                    event_id=str(uuid.uuid4()),
                    profile_id=owner,
                    type="purchase",
                    occurred_at=datetime.now(UTC),
                    data={},
                )
            )
            await session.commit()

        async with sessions() as session:
            await ProfileRepository(session).delete(owner)
            await session.commit()

        async with sessions() as session:
            left = {
                table.__name__: await session.scalar(select(func.count()).select_from(table))
                for table in (Profile, Identifier, Event)
            }
            orphans = await session.scalar(
                select(func.count()).select_from(Identifier).where(Identifier.profile_id == owner)
            )
        # The other profile keeps its three identifiers (email, its hash, crm_id).
        assert left == {"Profile": 1, "Identifier": 3, "Event": 0}
        assert orphans == 0
