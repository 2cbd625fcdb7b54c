"""`enrich import` beside `enrich serve --workers 2`: running workers answer with the import.

The import is the real command, run while the service runs, on the same PostgreSQL and Redis.
Before each import every worker process holds the old answer in its L1 (it answered it from
its cache at least once; which worker answered is read from /proc), and L2 holds it too.
Before it exits, the import deletes the L2 entries and has every worker drop its L1 ones, so
reads on new connections, spread over the workers right after the command exits, must all
show the file's data: no waiting. The first import makes an unknown guest known (the initial
load, into a database without identifiers); the others change it, naming it by one identifier
or another.

The cache TTLs are far longer than the test, so an old answer cannot expire on its own before
the reads after an import: if one goes, the import dropped it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from tests.fixtures.servers import PrivatePostgres, PrivateRedis, ServiceFactory
from tests.fixtures.service import RawResponse, RecordProperty, Service, Summary, bearer_headers
from tests.fixtures.workers import run_beside

WORKERS = 2
EMAIL = "jane@example.com"
CRM_ID = "C-100"
# A guest is asked for the way Personalize does: by any of its identifiers.
QUESTIONS = ({"email": EMAIL}, {"crm_id": CRM_ID}, {"guest_ref": "g-unknown", "email": EMAIL})
LONG_TTL = "3600"
CACHE_SETTINGS = {
    "cache_l1_ttl_seconds": LONG_TTL,
    "cache_l2_ttl_seconds": LONG_TTL,
    "cache_negative_ttl_seconds": LONG_TTL,
}
# Other guests in every file: a file is seldom one record.
OTHERS = [{"identifiers": {"email": f"guest-{n}@example.com"}} for n in range(20)]

Check = Callable[[dict[str, Any]], bool]


def tier_is(value: str) -> Check:
    return lambda answer: answer["found"] and answer["traits"].get("tier") == value


def unknown(answer: dict[str, Any]) -> bool:
    return answer["found"] is False


@dataclass
class Import:
    name: str
    guest: dict[str, Any]  # the guest's record in the file
    expect: Check


IMPORTS = [
    # Into a database without identifiers: the initial load. Every worker has cached the
    # guest as unknown (in L1, and L2 holds negative entries).
    Import(
        "unknown-becomes-known",
        {"identifiers": {"email": EMAIL, "crm_id": CRM_ID}, "traits": {"tier": "import-1"}},
        tier_is("import-1"),
    ),
    Import(
        "changed-by-email",
        {"identifiers": {"email": EMAIL}, "traits": {"tier": "import-2"}},
        tier_is("import-2"),
    ),
    # The file names the guest by another identifier than two of the questions.
    Import(
        "changed-by-crm-id",
        {"identifiers": {"crm_id": CRM_ID}, "traits": {"tier": "import-3"}},
        tier_is("import-3"),
    ),
    Import(
        "changed-again-by-email",
        {"identifiers": {"email": EMAIL}, "traits": {"tier": "import-4"}, "segments": ["vip"]},
        lambda answer: tier_is("import-4")(answer) and answer["segments"] == ["vip"],
    ),
]


@dataclass
class Tally:
    reads: int = 0
    stale: list[str] = field(default_factory=list)
    imports: int = 0
    workers: Counter[int | None] = field(default_factory=Counter)


def served_a_hit(answers: list[RawResponse]) -> bool:
    # After a hit (from L1, or from L2, which fills L1) the worker's L1 holds the answer.
    return any(a.headers.get("x-cache") == "hit" for a in answers)


async def ask_everywhere(
    service: Service, headers: dict[str, str], tally: Tally, *, until_hits: bool = False
) -> list[tuple[dict[str, str], RawResponse, dict[str, Any]]]:
    """Every question, on new connections, until each worker answered it twice (and, with
    ``until_hits``, answered it from its cache)."""
    answers = []
    for identifiers in QUESTIONS:

        def ask(identifiers: dict[str, str] = identifiers) -> Awaitable[RawResponse]:
            return service.enrich_on_new_connection(headers, identifiers)

        until = served_a_hit if until_hits else None
        for response in await service.on_every_worker(ask, per_worker=2, until=until):
            assert response.status == 200, response.body
            tally.reads += 1
            tally.workers[response.worker] += 1
            answers.append((identifiers, response, orjson.loads(response.body)))
    return answers


async def run_import(service: Service, step: Import, n: int) -> None:
    """``enrich import`` of a file holding the guest among others, to its end."""
    path = service.directory / f"import-{n}.ndjson"
    records = [*OTHERS[: 10 + n], step.guest, *OTHERS[10 + n :]]
    path.write_bytes(b"".join(orjson.dumps(record) + b"\n" for record in records))
    done = await run_beside(service, "import", str(path))
    assert done.returncode == 0, (step.name, done.stdout, done.stderr)
    assert f"{len(records)} rows" in done.stdout, done.stdout
    assert "0 failed" in done.stdout, done.stdout
    # The import goes on when it cannot drop cached answers; here it must have dropped them.
    assert "warning" not in done.stderr, done.stderr


class TestImportReachesEveryWorker:
    async def test_every_worker_answers_with_the_import_as_soon_as_it_exits(
        self,
        private_pg: PrivatePostgres,
        private_redis: PrivateRedis,
        services: ServiceFactory,
        record_property: RecordProperty,
    ) -> None:
        database = private_pg.create_database()
        service = await services.start(
            database, private_redis.url, workers=WORKERS, **CACHE_SETTINGS
        )
        headers = await bearer_headers(service, database, "profiles:read")
        tally = Tally()
        expected: Check = unknown

        for n, step in enumerate(IMPORTS):
            # Every worker holds the current answer in L1 (each answered it as a hit).
            before = await ask_everywhere(service, headers, tally, until_hits=True)
            assert all(expected(answer) for _, _, answer in before), (step.name, before[0])
            await run_import(service, step, n)
            tally.imports += 1
            expected = step.expect
            for asked, response, answer in await ask_everywhere(service, headers, tally):
                if not expected(answer):
                    seen = f"found={answer['found']} traits={answer['traits']}"
                    tally.stale.append(f"{step.name} {asked} worker={response.worker}: {seen}")
            if tally.stale:
                break  # the next import would start from answers this one left wrong

        summary = Summary(
            "e2e: import-then-read",
            {
                "workers": len([w for w in tally.workers if w is not None]),
                "imports": tally.imports,
                "reads": tally.reads,
                "stale_reads": len(tally.stale),
            },
        )
        summary.report(record_property)
        assert summary.figures["workers"] == WORKERS, tally.workers
        assert not tally.stale, "\n".join(tally.stale)
