"""An import reaches the app processes running beside it, before it returns (PostgreSQL + Redis).

Two app instances (each like a worker process) hold a guest's answer in their own L1; an
import of a file that changes the guest runs, against the same database and Redis, with the
invalidator ``enrich import`` uses; the very next answer of each instance shows the file.
The import both deletes the shared L2 entries and tells every process to drop its L1 ones,
and waits for them to have done so: a missing half leaves an old answer served (from L1, or
from L2 into an emptied L1). Across real worker processes: tests/e2e/test_import_reaches_workers.py.
"""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from rich.console import Console

from app.auth.clients import ClientService
from app.cli.importing import cache_invalidator, run_import
from app.core.settings import Settings
from app.ingest.importer import import_file
from tests.conftest import AppFactory, Backend, RunningApp

EMAIL = "jane@example.com"
CRM_ID = "C-100"
# A guest is asked for the way Personalize does: by any of its identifiers.
QUESTIONS = ({"email": EMAIL}, {"crm_id": CRM_ID}, {"guest_ref": "g-unknown", "email": EMAIL})
GUEST = {"identifiers": {"email": EMAIL, "crm_id": CRM_ID}}
NOT_DROPPED = "cached answers could not be dropped"  # the import's warning
# A process that takes this long to drop its entries, and how long the import may wait for
# it (the import's ack wait is a setting; 5 s is its maximum).
SLOW_DROP_SECONDS = 0.3
ACK_WAIT_MS = 5000
# Far longer than the test: an old answer cannot expire on its own before the reads after an
# import; if one goes, the import dropped it.
LONG_TTLS = {
    "cache_l1_ttl_seconds": 3600,
    "cache_l2_ttl_seconds": 3600,
    "cache_negative_ttl_seconds": 3600,
}

Runner = Callable[[Path, Settings], Awaitable[None]]


async def through_the_invalidator(path: Path, settings: Settings) -> None:
    """``import_file`` with ``cache_invalidator``, on this event loop."""
    invalidate, close = cache_invalidator(settings)
    assert invalidate is not None  # Redis is configured
    try:
        report = await import_file(path, settings, invalidate=invalidate)
    finally:
        await close()
    assert report.loaded == report.rows, report.errors


async def as_the_command_runs_it(path: Path, settings: Settings) -> None:
    """``run_import``, as ``enrich import`` calls it: its own event loop (here in a thread)."""
    report = await asyncio.to_thread(run_import, path, settings, **command_options())
    assert report.loaded == report.rows, report.errors


def command_options() -> dict[str, Any]:
    """``run_import``'s options as ``enrich import`` passes them by default (quiet)."""
    return {
        "file_format": None,
        "source": None,
        "batch_size": 1000,
        "console": Console(file=io.StringIO()),
    }


RUNNERS: dict[str, Runner] = {
    "invalidator": through_the_invalidator,
    "command": as_the_command_runs_it,
}


def write_file(directory: Path, *records: dict[str, Any]) -> Path:
    path = directory / "guests.ndjson"
    path.write_bytes(b"".join(orjson.dumps(record) + b"\n" for record in records))
    return path


async def ask(app: RunningApp, headers: dict[str, str]) -> list[tuple[str, dict[str, Any]]]:
    """Every question once: (where the answer came from, the answer)."""
    answers = []
    for identifiers in QUESTIONS:
        response = await app.http.post(
            "/v1/enrich", json={"identifiers": identifiers}, headers=headers
        )
        assert response.status_code == 200, response.text
        answers.append((response.headers["x-cache"], response.json()))
    return answers


async def warm(apps: list[RunningApp], headers: dict[str, str]) -> list[dict[str, Any]]:
    """Ask every app every question twice (the second answer comes from its own L1); the
    answers it now holds."""
    held = []
    for app in apps:
        # L1 answers only while the process hears invalidations.
        assert app.runtime.enrich_cache.bus.listening
        await ask(app, headers)  # a miss or an L2 hit: either one fills L1
        for level, answer in await ask(app, headers):
            assert level == "hit"
            held.append(answer)
    return held


async def bearer(app: RunningApp) -> dict[str, str]:
    async with app.runtime.sessionmaker() as session:
        client, secret = await ClientService(session).create(
            "import", "profiles:read profiles:write"
        )
        await session.commit()
    response = await app.http.post(
        "/oauth/token", data={"grant_type": "client_credentials"}, auth=(client.client_id, secret)
    )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


async def someone_else(app: RunningApp, headers: dict[str, str]) -> None:
    """Another guest's profile, so that the imports here are ordinary ones: an import into a
    database without identifiers is the initial load, which drops and rebuilds indexes, and
    this database is shared (tests/e2e/test_import_reaches_workers.py covers that load)."""
    response = await app.http.put(
        "/v1/profiles/email/someone@example.com", json={}, headers=headers
    )
    assert response.status_code == 201, response.text


@pytest.fixture
async def apps(app_factory: AppFactory) -> list[RunningApp]:
    """Two instances, as two worker processes of one deployment."""
    return [await app_factory(**LONG_TTLS), await app_factory(**LONG_TTLS)]


@pytest.mark.parametrize("runner", sorted(RUNNERS))
@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
class TestImportReachesRunningApps:
    async def test_a_changed_guest_is_answered_from_the_file_at_once(
        self,
        backend: Backend,
        apps: list[RunningApp],
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
        runner: str,
    ) -> None:
        import_ = RUNNERS[runner]
        headers = await bearer(apps[0])
        await someone_else(apps[0], headers)
        # Loaded by an earlier import, not the API: an API write deletes its L2 keys again a
        # second later, which would empty L2 and hide an import that leaves it as it was.
        await import_(
            write_file(tmp_path, {**GUEST, "traits": {"tier": "first"}}), backend.settings()
        )
        held = await warm(apps, headers)
        assert all(answer["traits"] == {"tier": "first"} for answer in held)

        await import_(
            write_file(tmp_path, {**GUEST, "traits": {"tier": "second"}}), backend.settings()
        )

        for app in apps:
            answers = [answer for _, answer in await ask(app, headers)]
            assert [a["traits"] for a in answers] == [{"tier": "second"}] * len(QUESTIONS)
        assert NOT_DROPPED not in capsys.readouterr().err

    async def test_an_unknown_guest_is_answered_from_the_file_at_once(
        self,
        backend: Backend,
        apps: list[RunningApp],
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
        runner: str,
    ) -> None:
        import_ = RUNNERS[runner]
        headers = await bearer(apps[0])
        await someone_else(apps[0], headers)
        held = await warm(apps, headers)
        assert not any(answer["found"] for answer in held)

        await import_(
            write_file(tmp_path, {**GUEST, "traits": {"tier": "new"}}), backend.settings()
        )

        for app in apps:
            answers = [answer for _, answer in await ask(app, headers)]
            assert all(a["found"] for a in answers), answers
            assert [a["traits"] for a in answers] == [{"tier": "new"}] * len(QUESTIONS)
        assert NOT_DROPPED not in capsys.readouterr().err


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
class TestImportWaitsForEveryApp:
    async def test_the_import_returns_only_once_a_slow_app_has_dropped_the_old_answer(
        self, backend: Backend, apps: list[RunningApp], tmp_path: Path
    ) -> None:
        """ "At once" above holds because the import waits for every process to confirm, not
        because the processes happen to be quick: here one takes a while to hear it."""
        headers = await bearer(apps[0])
        await someone_else(apps[0], headers)
        first = write_file(tmp_path, {**GUEST, "traits": {"tier": "first"}})
        await as_the_command_runs_it(first, backend.settings())
        await warm(apps, headers)
        slow = apps[1].runtime.enrich_cache.l1
        drop = slow.drop_digests
        dropped: list[float] = []

        def drop_slowly(digests: Any) -> None:
            # Blocks this event loop (the apps'); the import runs on its own, in a thread.
            time.sleep(SLOW_DROP_SECONDS)
            drop(digests)
            dropped.append(time.monotonic())

        slow.drop_digests = drop_slowly  # type: ignore[method-assign]
        settings = backend.settings(cache_invalidation_ack_ms=ACK_WAIT_MS)
        second = write_file(tmp_path, {**GUEST, "traits": {"tier": "second"}})

        def import_and_stamp() -> float:
            report = run_import(second, settings, **command_options())
            assert report.loaded == 1, report.errors
            return time.monotonic()

        returned = await asyncio.to_thread(import_and_stamp)

        assert len(dropped) == 1
        assert dropped[0] <= returned, "the import returned before the slow app dropped it"
