"""``enrich import`` carries consent like any field: by a thread or by a reader process, under
the rules of every consent write, with the configured purposes."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.models import ConsentRecord, Identifier, Profile
from app.ingest import importer
from app.profiles import consent
from tests.conftest import Backend

Sessions = async_sessionmaker[AsyncSession]


def record(i: int, **decisions: str) -> bytes:
    return orjson.dumps(
        {
            "identifiers": {"email": f"u{i}@example.com"},
            "traits": {"n": i},
            "consent": {
                purpose: {"status": status, "at": "2026-05-01T10:00:00Z"}
                for purpose, status in decisions.items()
            },
        }
    )


async def consent_of(sessions: Sessions, email: str) -> dict[str, object]:
    async with sessions() as session:
        found = await session.execute(
            select(Profile.consent)
            .join(Identifier, Identifier.profile_id == Profile.id)
            .where(Identifier.type == "email", Identifier.value == email)
        )
        return dict(found.scalar_one())


class TestImportConsent:
    @pytest.mark.parametrize("by_process", [False, True])
    async def test_an_import_records_consent_and_its_history(
        self,
        backend: Backend,
        sessions: Sessions,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        by_process: bool,
    ) -> None:
        monkeypatch.setattr(consent, "_active", consent.rules())  # the import sets its own
        if by_process:  # PostgreSQL: a reader process (SQLite reads in a thread anyway)
            monkeypatch.setattr(importer, "PROCESS_READER_BYTES", 0)
        lines = [record(i, marketing="denied" if i % 2 else "granted") for i in range(20)]
        lines[3] = record(3, profiling="denied")
        path = tmp_path / "people.ndjson"
        path.write_bytes(b"\n".join(lines) + b"\n")

        report = await importer.import_file(path, backend.settings(), batch_size=8, source="cmp")

        assert (report.created, report.failed) == (19, 1)
        assert "unknown consent purpose 'profiling'" in report.errors[0][1]
        assert await consent_of(sessions, "u1@example.com") == {
            "marketing": {"status": "denied", "at": "2026-05-01T10:00:00Z", "source": "cmp"}
        }
        assert (await consent_of(sessions, "u2@example.com"))["marketing"]["status"] == "granted"  # type: ignore[index]
        async with sessions() as session:
            rows = list(await session.scalars(select(ConsentRecord)))
        assert len(rows) == 19
        assert {row.channel for row in rows} == {"bulk"}

        again = await importer.import_file(path, backend.settings(), batch_size=8, source="cmp")
        assert (again.unchanged, again.failed) == (19, 1)

    async def test_the_purposes_are_a_setting(
        self, backend: Backend, sessions: Sessions, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(consent, "_active", consent.rules())
        path = tmp_path / "people.ndjson"
        path.write_bytes(record(1, email="denied") + b"\n" + record(2, marketing="denied") + b"\n")
        settings = backend.settings(consent_purposes="email:opt-in")

        report = await importer.import_file(path, settings, batch_size=8)

        assert (report.created, report.failed) == (1, 1)
        assert await consent_of(sessions, "u1@example.com") != {}
