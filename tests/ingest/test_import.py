"""``enrich import`` as a user runs it: the real command, a file, a database."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import orjson
import pytest
import redis.asyncio as redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.enrich.cache.l2 import l2_key
from app.ingest import importer
from app.profiles import limits
from tests.conftest import Backend
from tests.fixtures.databases import REDIS_URL
from tests.fixtures.service import ENRICH, service_env
from tests.profiles.helpers import stored_profiles

Sessions = async_sessionmaker[AsyncSession]

HEADER = (
    "email,phone,crm_id,traits.first_name,traits.tier,traits.points,traits.zip,traits.vip,"
    "metrics.lifetime_value,metrics.order_count,metrics.last_order_at,segments,recommendations"
)
CSV = "\n".join(
    [
        HEADER,
        "jane@example.com,(415) 555-0100,C-1,Jane,gold,4200,02134,true,1830.5,14,"
        '2026-10-01T12:00:00Z,vip; newsletter,"[{""product_id"": ""SKU-1"", ""score"": 0.9}]"',
        "not-an-email,,C-2,Bob,silver,10,,,,,,,",
        ",,,,,,,,,,,,",
        "joe@example.com,,C-3,Joe,bronze,1,,,lots,,,,",
        "amy@example.com,,C-4,Amy,bronze,1,,,,,,,not json",
        '"Ann@Example.com ",,C-5,"Ann\nMarie",silver,5,,false,,,,,',
        "",
    ]
)


def run(
    backend: Backend, *args: str, cwd: Path, redis_prefix: str | None = None
) -> subprocess.CompletedProcess[str]:
    settings = {"ENRICH_DATABASE_URL": backend.database_url}
    if redis_prefix:
        settings |= {"ENRICH_REDIS_URL": REDIS_URL, "ENRICH_REDIS_PREFIX": redis_prefix}
    return subprocess.run(
        [str(ENRICH), "import", *args],
        cwd=cwd,
        env=service_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def profile_named(profiles: dict[str, dict[str, object]], key: str) -> dict[str, object]:
    (name,) = [n for n in profiles if key in n.split()]
    return profiles[name]


class TestImportCommand:
    async def test_csv_loads_good_rows_and_names_bad_lines(
        self, backend: Backend, sessions: Sessions, tmp_path: Path
    ) -> None:
        (tmp_path / "people.csv").write_text(CSV)

        done = run(backend, "people.csv", "--source", "crm", cwd=tmp_path)

        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("5 rows ")  # the row of empty cells is not a record
        assert "2 created, 0 updated, 0 unchanged, 3 failed" in done.stdout
        assert "line 3: identifier email 'not-an-email' is not an email address" in done.stderr
        assert "line 5: metrics.lifetime_value: must be a number" in done.stderr
        assert "line 6: recommendations must be a JSON array" in done.stderr
        profiles = await stored_profiles(sessions)
        jane = profile_named(profiles, "phone:+14155550100")
        assert jane["traits"] == {
            "first_name": "Jane",
            "tier": "gold",
            "points": 4200,
            "zip": "02134",
            "vip": True,
        }
        assert jane["segments"] == ["vip", "newsletter"]
        assert jane["order_count"] == 14
        assert jane["recommendations"] == [{"product_id": "SKU-1", "score": 0.9}]
        assert jane["source"] == "crm"
        ann = profile_named(profiles, "email:ann@example.com")  # a multi-line cell, line 7
        assert ann["traits"] == {
            "first_name": "Ann\nMarie",
            "tier": "silver",
            "points": 5,
            "vip": False,
        }

    async def test_the_same_file_twice_changes_nothing(
        self, backend: Backend, sessions: Sessions, tmp_path: Path
    ) -> None:
        (tmp_path / "people.csv").write_text(CSV)
        run(backend, "people.csv", cwd=tmp_path)
        before = await stored_profiles(sessions)

        again = run(backend, "people.csv", cwd=tmp_path)

        assert again.returncode == 0, again.stderr
        assert "0 created, 0 updated, 2 unchanged, 3 failed" in again.stdout
        assert await stored_profiles(sessions) == before

    async def test_ndjson_reports_lines_and_loads_the_rest(
        self, backend: Backend, sessions: Sessions, tmp_path: Path
    ) -> None:
        lines = [
            orjson.dumps({"identifiers": {"email": "a@example.com"}, "traits": {"n": 1}}),
            b"",
            b"{not json",
            orjson.dumps(["a", "list"]),
            orjson.dumps({"identifiers": {"email": "b@example.com"}, "colour": "red"}),
            orjson.dumps({"identifiers": {"crm_id": "B"}, "metrics": {"order_count": -2}}),
            orjson.dumps({"identifiers": {"email": "A@example.com", "crm_id": "A"}}),
        ]
        (tmp_path / "people.jsonl").write_bytes(b"\n".join(lines) + b"\n")

        done = run(backend, str(tmp_path / "people.jsonl"), cwd=Path("/"))

        assert done.returncode == 0, done.stderr
        assert "1 created, 1 updated, 0 unchanged, 4 failed" in done.stdout
        assert "line 3: invalid JSON" in done.stderr
        assert "line 4: a profile document must be a JSON object" in done.stderr
        assert "line 5: colour: Extra inputs are not permitted" in done.stderr
        assert "line 6: metrics.order_count must be a whole number >= 0" in done.stderr
        (stored,) = (await stored_profiles(sessions)).values()
        assert stored["traits"] == {}  # line 7 replaced line 1's content

    async def test_a_file_that_cannot_be_read_is_an_error(
        self, backend: Backend, tmp_path: Path
    ) -> None:
        (tmp_path / "people.txt").write_text("email\nx@example.com\n")
        (tmp_path / "bad.csv").write_text("email,First Name\nx@example.com,X\n")

        missing = run(backend, "missing.csv", cwd=tmp_path)
        unknown = run(backend, "people.txt", cwd=tmp_path)
        header = run(backend, "bad.csv", cwd=tmp_path)
        forced = run(backend, "people.txt", "--format", "csv", cwd=tmp_path)

        assert missing.returncode == 1
        assert "cannot read missing.csv" in missing.stderr
        assert unknown.returncode == 1
        assert "--format" in unknown.stderr
        assert header.returncode == 1
        assert "unknown CSV column(s) 'First Name'" in header.stderr
        assert forced.returncode == 0, forced.stderr
        assert "1 created" in forced.stdout

    async def test_changed_profiles_leave_the_shared_cache(
        self, backend: Backend, tmp_path: Path
    ) -> None:
        prefix = f"{backend.redis_prefix}import-{backend.name}:"
        client = redis.Redis.from_url(REDIS_URL)
        cached = prefix + l2_key(("email", "jane@example.com"))
        other = prefix + l2_key(("email", "nobody@example.com"))
        try:
            (tmp_path / "people.csv").write_text(CSV)
            await client.set(cached, b"old answer")
            await client.set(other, b"unrelated")

            done = run(backend, "people.csv", cwd=tmp_path, redis_prefix=prefix)

            assert done.returncode == 0, done.stderr
            assert await client.get(cached) is None
            assert await client.get(other) == b"unrelated"
        finally:
            await client.delete(cached, other)
            await client.aclose()


class TestImportReportFormat:
    async def test_many_bad_lines_are_summarized(self, backend: Backend, tmp_path: Path) -> None:
        rows = ["email"] + [f"bad{i}" for i in range(30)] + ["good@example.com"]
        (tmp_path / "many.csv").write_text("\n".join(rows) + "\n")

        done = run(backend, "many.csv", cwd=tmp_path)

        assert done.returncode == 0
        assert "line 2: identifier email 'bad0'" in done.stderr
        assert "line 21: " in done.stderr
        assert "line 22: " not in done.stderr
        assert "... and 10 more bad rows" in done.stderr

    async def test_nothing_loadable_exits_non_zero(self, backend: Backend, tmp_path: Path) -> None:
        (tmp_path / "bad.ndjson").write_text(json.dumps({"identifiers": {"email": "x"}}) + "\n")

        done = run(backend, "bad.ndjson", cwd=tmp_path)

        assert done.returncode == 1
        assert "1 failed" in done.stdout


class TestImportFile:
    async def test_a_reader_process_gives_the_same_outcome(
        self, backend: Backend, sessions: Sessions, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # Large files are read by a second process (PostgreSQL only); make every file large.
        monkeypatch.setattr(importer, "PROCESS_READER_BYTES", 0)
        lines = [
            orjson.dumps(
                {
                    "identifiers": {"email": f"u{i}@example.com", "phone": f"+1415555{i:04d}"},
                    "traits": {"n": i, "note": "tab\there \\ backslash"},
                    "metrics": {"order_count": i, "last_order_at": "2026-10-01T12:00:00Z"},
                    "recommendations": [{"product_id": f"P{i}", "score": 0.5}],
                }
            )
            for i in range(250)
        ]
        lines[7] = b'{"identifiers": {"email": "nope"}}'
        (tmp_path / "people.ndjson").write_bytes(b"\n".join(lines) + b"\n")
        path = tmp_path / "people.ndjson"

        first = await importer.import_file(path, backend.settings(), batch_size=100, source="crm")
        again = await importer.import_file(path, backend.settings(), batch_size=100, source="crm")

        assert (first.created, first.failed, first.errors) == (
            249,
            1,
            [(8, "identifier email 'nope' is not an email address")],
        )
        assert (again.unchanged, again.failed) == (249, 1)
        stored = profile_named(await stored_profiles(sessions), "email:u3@example.com")
        assert stored["traits"] == {"n": 3, "note": "tab\there \\ backslash"}
        assert stored["source"] == "crm"
        assert stored["recommendations"] == [{"product_id": "P3", "score": 0.5}]


def deep(levels: int) -> bytes:
    return b"[" * levels + b"1" + b"]" * levels


# Lines 2, 4, 5 and 6 cannot be stored (a NUL, nesting past 32 levels, a lone surrogate);
# before, the first of them stopped the import with a traceback on PostgreSQL and every
# later row was lost (on a first load, every row).
UNSTORABLE_NDJSON = [
    orjson.dumps({"identifiers": {"email": "p1@example.com"}, "traits": {"n": 1}}),
    rb'{"identifiers": {"email": "x2@example.com"}, '
    rb'"recommendations": [{"product_id": "S\u0000"}]}',
    orjson.dumps({"identifiers": {"email": "p3@example.com"}, "traits": {"n": 3}}),
    b'{"identifiers": {"email": "x4@example.com"}, "traits": {"tree": ' + deep(300) + b"}}",
    rb'{"identifiers": {"email": "x5@example.com"}, "traits": {"k\u0000": 1}}',
    rb'{"identifiers": {"email": "x6@example.com"}, "traits": {"name": "\ud800"}}',
    orjson.dumps({"identifiers": {"email": "p7@example.com"}, "traits": {"n": 7}}),
]
UNSTORABLE_CSV = "\n".join(
    [
        "email,traits.prefs,recommendations",
        "p1@example.com,a,",
        f'x3@example.com,"{deep(300).decode()}",',
        'x4@example.com,,"[{""product_id"": ""S\\u0000""}]"',
        "p5@example.com,b,",
        "",
    ]
)


class TestUnstorableRecords:
    @pytest.mark.parametrize("load", ["first", "later"])
    async def test_ndjson_bad_records_fail_alone_and_the_rest_load(
        self, backend: Backend, sessions: Sessions, tmp_path: Path, load: str
    ) -> None:
        if load == "later":  # identifiers is not empty: the batch-by-batch route
            (tmp_path / "before.ndjson").write_bytes(UNSTORABLE_NDJSON[0] + b"\n")
            assert run(backend, "before.ndjson", cwd=tmp_path).returncode == 0
        (tmp_path / "people.ndjson").write_bytes(b"\n".join(UNSTORABLE_NDJSON) + b"\n")

        done = run(backend, "people.ndjson", cwd=tmp_path)

        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr
        counts = (
            "2 created, 0 updated, 1 unchanged"
            if load == "later"
            else "3 created, 0 updated, 0 unchanged"
        )
        assert f"{counts}, 4 failed" in done.stdout, done.stdout
        assert "line 2: recommendations[0].product_id holds a NUL character" in done.stderr
        assert "line 4: traits.tree[0][0]... nests deeper than the 32 levels" in done.stderr
        assert "line 5: a member name in traits holds a NUL character" in done.stderr
        assert "line 6: invalid JSON" in done.stderr
        stored = await stored_profiles(sessions)
        emails = {name.split()[0] for name in stored}
        assert emails == {"email:p1@example.com", "email:p3@example.com", "email:p7@example.com"}

    @pytest.mark.parametrize("load", ["first", "later"])
    async def test_csv_bad_records_fail_alone_and_the_rest_load(
        self, backend: Backend, sessions: Sessions, tmp_path: Path, load: str
    ) -> None:
        if load == "later":
            (tmp_path / "before.csv").write_text("email\nsomeone@example.com\n")
            assert run(backend, "before.csv", cwd=tmp_path).returncode == 0
        (tmp_path / "people.csv").write_text(UNSTORABLE_CSV)

        done = run(backend, "people.csv", cwd=tmp_path)

        assert done.returncode == 0, done.stderr
        assert "2 created, 0 updated, 0 unchanged, 2 failed" in done.stdout
        assert "line 3: traits.prefs[0][0]... nests deeper than the 32 levels" in done.stderr
        assert "line 4: recommendations[0].product_id holds a NUL character" in done.stderr
        stored = await stored_profiles(sessions)
        emails = {name.split()[0] for name in stored} - {"email:someone@example.com"}
        assert emails == {"email:p1@example.com", "email:p5@example.com"}

    async def test_a_reader_process_fails_them_alone_too(
        self, backend: Backend, sessions: Sessions, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(importer, "PROCESS_READER_BYTES", 0)  # PostgreSQL: a reader process
        path = tmp_path / "people.ndjson"
        path.write_bytes(b"\n".join(UNSTORABLE_NDJSON) + b"\n")

        report = await importer.import_file(path, backend.settings(), batch_size=2)

        assert (report.created, report.failed) == (3, 4)
        assert [line for line, _ in report.errors] == [2, 4, 5, 6]
        assert len(await stored_profiles(sessions)) == 3

    async def test_the_depth_limit_is_a_setting(
        self, backend: Backend, sessions: Sessions, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(limits, "_active", limits.active())  # the import sets its own
        path = tmp_path / "people.ndjson"
        record = {"identifiers": {"email": "a@example.com"}, "traits": {"t": [[[1]]]}}
        path.write_bytes(orjson.dumps(record) + b"\n")
        settings = backend.settings(document_max_depth=4)

        report = await importer.import_file(path, settings)

        assert report.errors == [
            (1, "traits.t[0][0] nests deeper than the 4 levels a document may have")
        ]
        assert await stored_profiles(sessions) == {}
