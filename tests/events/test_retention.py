"""Event retention: `enrich purge --events-older` and ENRICH_EVENTS_RETENTION_DAYS delete old
events in batches; what the events did to the profile, and the ledger of processed ids, stay."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select, text, update

from app.audit.log import EVENTS_PURGED, AuditLog
from app.core.models import Event
from app.events.retention import purge_batch, purge_events
from tests.conftest import AppFactory, Backend, RunningApp
from tests.fixtures.callers import bearer, fetch_token, make_client_on
from tests.fixtures.commands import enrich, ok
from tests.fixtures.polling import HANG_GUARD_SECONDS, eventually

GUEST = {"email": "ret@example.com"}
NOW = datetime.now(UTC)


async def send(http: httpx.AsyncClient, headers: dict[str, str], *event_ids: str) -> None:
    for event_id in event_ids:
        event = {
            "event_id": event_id,
            "type": "purchase",
            "identifiers": GUEST,
            "data": {"amount": 10, "currency": "EUR"},
        }
        response = await http.post("/v1/events", json=event, headers=headers)
        assert response.status_code == 202, response.text


async def age(running: RunningApp, days: float, *event_ids: str) -> None:
    """Make these events look received ``days`` ago."""
    async with running.runtime.sessionmaker() as session, session.begin():
        await session.execute(
            update(Event)
            .where(Event.event_id.in_(event_ids))
            .values(received_at=NOW - timedelta(days=days))
        )


async def kept(running: RunningApp) -> list[str]:
    async with running.runtime.sessionmaker() as session:
        return sorted(await session.scalars(select(Event.event_id)))


class TestPurge:
    async def test_deletes_only_older_events_in_batches_and_keeps_their_effects(
        self, running: RunningApp, http: httpx.AsyncClient, headers: dict[str, str]
    ) -> None:
        old = [f"old-{n}" for n in range(5)]
        await send(http, headers, *old, "new-1")
        await age(running, 40, *old)
        before = (await http.get("/v1/profiles/email/ret@example.com", headers=headers)).json()

        deleted = await purge_events(
            running.runtime.sessionmaker, NOW - timedelta(days=30), batch=2
        )

        assert deleted == 5
        assert await kept(running) == ["new-1"]
        after = (await http.get("/v1/profiles/email/ret@example.com", headers=headers)).json()
        assert after["metrics"]["order_count"] == before["metrics"]["order_count"] == 6
        # The ledger stays: an old event sent again is still a duplicate, not a new purchase.
        retried = await http.post(
            "/v1/events",
            json={
                "event_id": "old-0",
                "type": "purchase",
                "identifiers": GUEST,
                "data": {"amount": 10, "currency": "EUR"},
            },
            headers=headers,
        )
        assert retried.status_code == 200
        assert retried.json()["duplicate"] is True

    async def test_is_audited_with_the_count_and_never_an_event(
        self, running: RunningApp, http: httpx.AsyncClient, headers: dict[str, str]
    ) -> None:
        await send(http, headers, "old-a", "old-b")
        await age(running, 40, "old-a", "old-b")
        await purge_events(running.runtime.sessionmaker, NOW - timedelta(days=30))
        assert await purge_events(running.runtime.sessionmaker, NOW) == 0  # nothing: no entry
        async with running.runtime.sessionmaker() as session:
            entries = [e for e in await AuditLog(session).list() if e.action == EVENTS_PURGED]
        assert len(entries) == 1
        assert entries[0].details["events"] == 2
        assert "ret@example.com" not in str(entries[0].details)


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
class TestPurgeBesideTraffic:
    async def test_a_batch_passes_rows_another_transaction_holds(
        self, running: RunningApp, http: httpx.AsyncClient, headers: dict[str, str]
    ) -> None:
        await send(http, headers, "held", "free")
        await age(running, 40, "held", "free")
        sessionmaker = running.runtime.sessionmaker
        async with sessionmaker() as holder, holder.begin():
            # An erasure (or a second purging worker) has the row locked and has not committed.
            await holder.execute(text("SELECT 1 FROM events WHERE event_id = 'held' FOR UPDATE"))
            async with sessionmaker() as session, session.begin():
                deleted = await asyncio.wait_for(
                    purge_batch(session, NOW - timedelta(days=30), 10), HANG_GUARD_SECONDS
                )
            assert deleted == 1
        assert await kept(running) == ["held"]


class TestScheduledRetention:
    async def test_the_running_service_purges_what_passed_the_retention(
        self, app_factory: AppFactory
    ) -> None:
        running = await app_factory(events_retention_days=30, events_purge_interval_seconds=1)
        http = running.http
        client = await make_client_on(running, "events:write profiles:read")
        headers = bearer(await fetch_token(http, client))
        await send(http, headers, "old-x", "recent-y")
        await age(running, 31, "old-x")
        await age(running, 29, "recent-y")

        async def purged() -> bool:
            return await kept(running) == ["recent-y"]

        await eventually(purged, "the scheduled purge")

    async def test_off_by_default(self, running: RunningApp) -> None:
        assert running.runtime.settings.events_retention_days == 0
        tasks = {task.get_name() for task in asyncio.all_tasks()}
        assert "events-retention" not in tasks


class TestPurgeCommand:
    async def test_purges_and_says_how_many(
        self,
        backend: Backend,
        running: RunningApp,
        http: httpx.AsyncClient,
        headers: dict[str, str],
        tmp_path: Path,
    ) -> None:
        await send(http, headers, "old-1", "old-2", "new-1")
        await age(running, 40, "old-1", "old-2")
        out = await ok(backend, tmp_path, "purge", "--events-older", "30d", "--batch", "1")
        assert "deleted 2 events" in out
        assert await kept(running) == ["new-1"]
        async with running.runtime.sessionmaker() as session:
            total = await session.scalar(select(func.count()).select_from(Event))
        assert total == 1

    async def test_a_bad_age_is_refused(self, backend: Backend, tmp_path: Path) -> None:
        result = await enrich(backend, tmp_path, "purge", "--events-older", "soon")
        assert result.returncode == 2
        assert "use e.g. 30m, 24h, 7d" in result.stderr
