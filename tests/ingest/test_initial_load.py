"""Loads into empty tables (the fast route) and erasure without a foreign key to cascade along."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError

from app.core.db import create_engine, create_sessionmaker
from app.core.models import Identifier
from app.ingest import importer, initial
from app.ingest.fast import prepare_raw
from app.ingest.readers import Item
from app.profiles.bulk.upsert import SeenKeys, upsert_documents, upsert_prepared
from app.profiles.documents import PreparedProfile
from app.profiles.schemas import ProfileDocument
from tests.conftest import Backend, run_sync
from tests.fixtures.databases import truncate_all
from tests.fixtures.polling import HANG_GUARD_SECONDS
from tests.profiles.helpers import Sessions, person, stored_profiles


def named(profiles: dict[str, dict[str, Any]], key: str) -> dict[str, Any]:
    (name,) = [n for n in profiles if key in n.split()]
    return profiles[name]


@pytest.fixture
def pg_sessions(pg_url: str) -> Iterator[Sessions]:
    """PostgreSQL only: the fast route's fallback rests on PostgreSQL's unique-index check."""
    engine = create_engine(Backend("postgres", pg_url, None, "").settings())
    try:
        yield create_sessionmaker(engine)
    finally:
        run_sync(engine.dispose())
        run_sync(truncate_all(pg_url))


class TestInitialLoad:
    async def test_in_file_repeats_across_batches_land_on_one_profile(
        self,
        backend: Backend,
        sessions: Sessions,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        # On PostgreSQL: the reader process and the empty-table route; batches of 3 records.
        monkeypatch.setattr(importer, "PROCESS_READER_BYTES", 0)
        records = [person(i) for i in range(10)]
        # Line 6 comes back for person 1 (a batch later): new traits and a new key, and it names
        # only lifetime_value, so person 1's order_count stays.
        records[5] = {
            "identifiers": {"email": "p1@example.com", "phone": "+14155550100"},
            "traits": {"n": 100},
            "metrics": {"lifetime_value": 9.5},
        }
        # Line 9 names identifiers of two stored profiles.
        records[8] = {"identifiers": {"email": "p2@example.com", "crm_id": "C-3"}}
        path = tmp_path / "people.ndjson"
        path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))

        first = await importer.import_file(path, backend.settings(), batch_size=3)
        after_first = await stored_profiles(sessions)
        again = await importer.import_file(path, backend.settings(), batch_size=3)
        after_again = await stored_profiles(sessions)

        assert (first.created, first.updated, first.failed) == (8, 1, 1)
        assert first.errors == [(9, "identifier crm_id 'C-3' belongs to another profile")]
        p1 = named(after_first, "phone:+14155550100")
        assert named(after_first, "crm_id:C-1") == p1  # one profile holds both lines' keys
        assert (p1["traits"], p1["order_count"], p1["lifetime_value"]) == (
            {"n": 100},
            1,
            Decimal("9.5000"),
        )
        assert len(after_first) == 8
        assert again.created == 0
        assert {name: p["traits"] for name, p in after_again.items()} == {
            name: p["traits"] for name, p in after_first.items()
        }

    async def test_a_load_into_tables_with_data_updates_them(
        self,
        backend: Backend,
        sessions: Sessions,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        monkeypatch.setattr(importer, "PROCESS_READER_BYTES", 0)
        async with sessions() as session:
            await upsert_documents(
                session, [(0, ProfileDocument.model_validate(person(1)))], region="US"
            )
            await session.commit()
        path = tmp_path / "people.ndjson"
        path.write_bytes(b"".join(orjson.dumps(person(i, source="crm")) + b"\n" for i in range(3)))

        report = await importer.import_file(path, backend.settings(), batch_size=2)

        assert (report.created, report.updated, report.unchanged) == (2, 1, 0)
        stored = await stored_profiles(sessions)
        assert len(stored) == 3
        updated = named(stored, "email:p1@example.com")
        assert (updated["source"], updated["version"]) == ("crm", 2)
        assert updated["last_order_at"].isoformat()[:19] == "2026-10-01T12:00:00"

    async def test_a_key_written_by_someone_else_meanwhile_is_updated_not_duplicated(
        self, pg_sessions: Sessions
    ) -> None:
        seen = SeenKeys()  # the import found no identifiers when it started...
        async with pg_sessions() as session:  # ...then another writer stored person 1
            await upsert_documents(
                session, [(0, ProfileDocument.model_validate(person(1)))], region="US"
            )
            await session.commit()
        items = [
            (1, prepare_raw(person(1, traits={"n": 42}), "US")),
            (2, prepare_raw(person(2), "US")),
        ]

        async with pg_sessions() as session:
            result = await upsert_prepared(session, items, seen=seen)
            await session.commit()

        assert [o.status for o in result.results] == ["updated", "created"]
        assert not seen.active  # every later batch looks its keys up
        stored = await stored_profiles(pg_sessions)
        assert len(stored) == 2
        assert named(stored, "email:p1@example.com")["traits"] == {"n": 42}


def refused_by_the_database(i: int) -> PreparedProfile:
    """A record validation would refuse, made by hand: PostgreSQL refuses U+0000 in JSON."""
    record = prepare_raw(person(i), "US")
    record.traits = {"note": "a\x00b"}
    return record


class TestRecordsTheDatabaseRefuses:
    """The net under validation: a refused record fails alone, the rest of its batch is stored."""

    async def test_new_profiles(self, pg_sessions: Sessions) -> None:
        items: list[Item] = [(i, prepare_raw(person(i), "US")) for i in range(8)]
        items[2] = (2, refused_by_the_database(2))
        items[5] = (5, refused_by_the_database(5))

        async with pg_sessions() as session:
            result = await upsert_prepared(session, items)
            await session.commit()

        assert (result.created, result.failed) == (6, 2)
        assert [o.index for o in result.results] == list(range(8))
        refused = {o.index: o.error for o in result.results if o.status == "failed"}
        assert refused == {
            2: "the database refused this record (untranslatable character)",
            5: "the database refused this record (untranslatable character)",
        }
        stored = await stored_profiles(pg_sessions)
        assert len(stored) == 6
        assert not any("p2@example.com" in name or "p5@example.com" in name for name in stored)
        assert set(result.changed_keys) >= {("email", "p7@example.com")}

    async def test_an_update(self, pg_sessions: Sessions) -> None:
        async with pg_sessions() as session:
            await upsert_prepared(session, [(0, prepare_raw(person(1), "US"))])
            await session.commit()
        items: list[Item] = [
            (0, refused_by_the_database(1)),
            (1, prepare_raw(person(2), "US")),
        ]

        async with pg_sessions() as session:
            result = await upsert_prepared(session, items)
            await session.commit()

        assert [o.status for o in result.results] == ["failed", "created"]
        stored = await stored_profiles(pg_sessions)
        assert named(stored, "email:p1@example.com")["traits"] == {"n": 1}
        assert named(stored, "email:p2@example.com")["traits"] == {"n": 2}

    async def test_an_initial_load(self, pg_url: str, pg_sessions: Sessions) -> None:
        load = await initial.InitialLoad.start(pg_sessions)
        assert load is not None  # identifiers is empty: the one-transaction route
        first: list[Item] = [(i, prepare_raw(person(i), "US")) for i in range(4)]
        first[1] = (1, refused_by_the_database(1))
        second: list[Item] = [(i, prepare_raw(person(i), "US")) for i in range(4, 8)]
        second[3] = (7, refused_by_the_database(7))

        try:
            results = [await load.load(first), await load.load(second)]
            await load.commit()
        except BaseException:
            await load.abandon()
            raise

        assert [(r.created, r.failed) for r in results] == [(3, 1), (3, 1)]
        assert len(await stored_profiles(pg_sessions)) == 6
        async with pg_sessions() as session:
            indexes = set(
                await session.scalars(
                    text("SELECT indexname FROM pg_indexes WHERE tablename = 'identifiers'")
                )
            )
        assert indexes == {"pk_identifiers", "ix_identifiers_profile_id"}


class TestInitialLoadIndexes:
    async def test_the_identifier_indexes_are_back_after_an_initial_load(
        self, pg_url: str, pg_sessions: Sessions, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(importer, "PROCESS_READER_BYTES", 0)
        path = tmp_path / "people.ndjson"
        path.write_bytes(b"".join(orjson.dumps(person(i)) + b"\n" for i in range(20)))
        settings = Backend("postgres", pg_url, None, "").settings()

        report = await importer.import_file(path, settings, batch_size=6)

        assert report.created == 20
        async with pg_sessions() as session:
            indexes = set(
                await session.scalars(
                    text("SELECT indexname FROM pg_indexes WHERE tablename = 'identifiers'")
                )
            )
            assert indexes == {"pk_identifiers", "ix_identifiers_profile_id"}
            with pytest.raises(IntegrityError):  # the primary key refuses a second owner again
                await session.execute(
                    text(
                        "INSERT INTO identifiers (type, value, profile_id) "
                        "VALUES ('crm_id', 'C-1', gen_random_uuid())"
                    )
                )

    async def test_a_failed_initial_load_leaves_the_table_as_it_was(
        self, pg_url: str, pg_sessions: Sessions, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(importer, "PROCESS_READER_BYTES", 0)
        path = tmp_path / "people.ndjson"
        path.write_bytes(b"".join(orjson.dumps(person(i)) + b"\n" for i in range(20)))
        settings = Backend("postgres", pg_url, None, "").settings()

        def stop(rows: int, _position: int) -> None:
            if rows >= 12:
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            await importer.import_file(path, settings, batch_size=6, progress=stop)
        async with pg_sessions() as session:
            left = await session.scalar(select(func.count()).select_from(Identifier))
            indexes = set(
                await session.scalars(
                    text("SELECT indexname FROM pg_indexes WHERE tablename = 'identifiers'")
                )
            )
        again = await importer.import_file(path, settings, batch_size=6)

        assert left == 0  # one transaction: the batches already written went back too
        assert indexes == {"pk_identifiers", "ix_identifiers_profile_id"}
        assert again.created == 20


class TestReaderProcess:
    @pytest.mark.parametrize("backend", ["postgres"], indirect=True)  # it reads for PostgreSQL
    async def test_a_reader_stopped_and_continued_mid_stream_loses_nothing(
        self,
        backend: Backend,
        sessions: Sessions,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        # A pipe write that a stop signal interrupts comes back having written only part of a
        # frame (an operator's kill -STOP, a profiler attaching): the stream must stay whole.
        monkeypatch.setattr(importer, "PROCESS_READER_BYTES", 0)
        readers: list[subprocess.Popen[bytes]] = []

        class Watched(importer.ProcessReader):
            def __init__(self, *args: Any) -> None:
                super().__init__(*args)
                readers.append(self.process)

        monkeypatch.setattr(importer, "ProcessReader", Watched)
        path = tmp_path / "many.ndjson"
        path.write_bytes(b"".join(orjson.dumps(person(i)) + b"\n" for i in range(20_000)))
        done = threading.Event()

        def stop_and_continue() -> None:
            while not readers and not done.is_set():
                time.sleep(0.001)
            while readers and readers[0].poll() is None and not done.is_set():
                readers[0].send_signal(signal.SIGSTOP)
                time.sleep(0.002)
                readers[0].send_signal(signal.SIGCONT)
                time.sleep(0.005)

        pest = threading.Thread(target=stop_and_continue)
        pest.start()
        try:
            report = await importer.import_file(path, backend.settings(), batch_size=2_000)
        finally:
            done.set()
            pest.join()
            if readers and readers[0].poll() is None:
                readers[0].send_signal(signal.SIGCONT)
        assert (report.created, report.failed) == (20_000, 0)
        assert len(await stored_profiles(sessions)) == 20_000


class TestInitialLoadLocking:
    """The initial route locks identifiers exclusively; it must never queue behind a reader."""

    @pytest.mark.parametrize("backend", ["postgres"], indirect=True)
    @pytest.mark.parametrize("empty", [True, False], ids=["empty", "with-data"])
    async def test_an_import_while_a_transaction_reads_identifiers_does_not_wait_on_it(
        self, backend: Backend, sessions: Sessions, tmp_path: Path, empty: bool
    ) -> None:
        if not empty:
            seed = tmp_path / "seed.ndjson"
            seed.write_bytes(orjson.dumps(person(0)) + b"\n")
            await importer.import_file(seed, backend.settings())
        path = tmp_path / "people.ndjson"
        path.write_bytes(b"".join(orjson.dumps(person(i)) + b"\n" for i in range(1, 50)))
        reader = await asyncpg.connect(backend.database_url.replace("+asyncpg", ""))
        try:
            # A long read (an enrich lookup's lock) that ends only when the test says so.
            transaction = reader.transaction()
            await transaction.start()
            await reader.execute("LOCK TABLE identifiers IN ACCESS SHARE MODE")
            # Queued behind the reader, the import would wait as long as the test holds it:
            # the bound is a hang guard (the route gives up after LOCK_WAIT_SECONDS).
            async with asyncio.timeout(initial.LOCK_WAIT_SECONDS + HANG_GUARD_SECONDS):
                report = await importer.import_file(path, backend.settings())
            await transaction.rollback()
        finally:
            await reader.close()
        assert (report.created, report.failed) == (49, 0)
        assert len(await stored_profiles(sessions)) == 50 - empty
