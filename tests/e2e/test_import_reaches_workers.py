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
from dataclasses import dataclass
from typing import Any

import orjson

from tests.fixtures.servers import PrivatePostgres, PrivateRedis, ServiceFactory
from tests.fixtures.service import RecordProperty, Service, Summary, bearer_headers
from tests.fixtures.workers import (
    CRM_ID,
    EMAIL,
    Check,
    ask_everywhere,
    run_beside,
    tier_is,
)

WORKERS = 2
LONG_TTL = "3600"
CACHE_SETTINGS = {
    "cache_l1_ttl_seconds": LONG_TTL,
    "cache_l2_ttl_seconds": LONG_TTL,
    "cache_negative_ttl_seconds": LONG_TTL,
}
# Other guests in every file: a file is seldom one record.
OTHERS = [{"identifiers": {"email": f"guest-{n}@example.com"}} for n in range(20)]


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
        readers: Counter[int | None] = Counter()
        stale: list[str] = []
        imports = 0
        expected: Check = unknown

        for n, step in enumerate(IMPORTS):
            # Every worker holds the current answer in L1 (each answered it as a hit).
            before = await ask_everywhere(service, headers, readers, until_hits=True)
            assert all(expected(answer) for _, _, answer in before), (step.name, before[0])
            await run_import(service, step, n)
            imports += 1
            expected = step.expect
            for asked, response, answer in await ask_everywhere(service, headers, readers):
                if not expected(answer):
                    seen = f"found={answer['found']} traits={answer['traits']}"
                    stale.append(f"{step.name} {asked} worker={response.worker}: {seen}")
            if stale:
                break  # the next import would start from answers this one left wrong

        summary = Summary(
            "e2e: import-then-read",
            {
                "workers": len([w for w in readers if w is not None]),
                "imports": imports,
                "reads": sum(readers.values()),
                "stale_reads": len(stale),
            },
        )
        summary.report(record_property)
        assert summary.figures["workers"] == WORKERS, readers
        assert not stale, "\n".join(stale)
