"""Write, then read on another worker: `enrich serve --workers 2` on PostgreSQL and Redis.

Before every write each worker process holds the old answer in its L1 (it answered it at least
twice); right after the write is answered, reads on new connections, spread over the workers
(which one answered is read from /proc), must all show the write. Every kind of write is
checked, and each is repeated, so "every time" means something.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import orjson

from tests.fixtures.servers import (
    PrivatePostgres,
    PrivateRedis,
    ServiceFactory,
)
from tests.fixtures.service import (
    RawResponse,
    RecordProperty,
    Service,
    Summary,
    bearer_headers,
)

WORKERS = 2
ROUNDS = 3
EMAIL = "jane@example.com"
CRM_ID = "C-100"
# A guest is asked for the way Personalize does: by any of its identifiers.
QUESTIONS = ({"email": EMAIL}, {"crm_id": CRM_ID}, {"guest_ref": "g-unknown", "email": EMAIL})

Check = Callable[[dict[str, Any]], bool]


@dataclass
class Write:
    name: str
    method: str
    path: str
    body: Callable[[int], Any]
    expect: Callable[[int], Check]
    content_type: str = "application/json"


def event_time(n: int) -> datetime:
    # In the past: an occurred_at ahead of the server's clock is refused.
    return datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=n)


def last_order_at(answer: dict[str, Any]) -> datetime | None:
    value = answer["metrics"].get("last_order_at") if answer["found"] else None
    return datetime.fromisoformat(value) if value else None


def tier_is(value: str) -> Check:
    return lambda answer: answer["found"] and answer["traits"].get("tier") == value


WRITES = [
    Write(
        "put",
        "PUT",
        f"/v1/profiles/email/{EMAIL}",
        lambda n: {"identifiers": {"crm_id": CRM_ID}, "traits": {"tier": f"put-{n}"}},
        lambda n: tier_is(f"put-{n}"),
    ),
    Write(
        "patch",
        "PATCH",
        f"/v1/profiles/crm_id/{CRM_ID}",
        lambda n: {"traits": {"tier": f"patch-{n}"}},
        lambda n: tier_is(f"patch-{n}"),
        "application/merge-patch+json",
    ),
    Write(
        "event",
        "POST",
        "/v1/events",
        lambda n: {
            "event_id": f"order-{uuid4().hex}",
            "type": "purchase",
            "identifiers": {"email": EMAIL},
            "occurred_at": event_time(n).isoformat(),
            "data": {"amount": 10, "currency": "EUR"},
        },
        lambda n: lambda answer: last_order_at(answer) == event_time(n),
    ),
    Write(
        "bulk",
        "POST",
        "/v1/profiles/bulk",
        lambda n: [{"identifiers": {"email": EMAIL}, "traits": {"tier": f"bulk-{n}"}}],
        lambda n: tier_is(f"bulk-{n}"),
    ),
    Write(
        "delete",
        "DELETE",
        f"/v1/profiles/crm_id/{CRM_ID}",
        lambda n: None,
        lambda n: lambda answer: answer["found"] is False,
    ),
    Write(  # the guest is unknown again: every worker has cached the negative answer
        "create",
        "PUT",
        f"/v1/profiles/crm_id/{CRM_ID}",
        lambda n: {"identifiers": {"email": EMAIL}, "traits": {"tier": f"create-{n}"}},
        lambda n: tier_is(f"create-{n}"),
    ),
]


@dataclass
class Tally:
    reads: int = 0
    stale: list[str] = field(default_factory=list)
    writes: int = 0
    workers: Counter[int | None] = field(default_factory=Counter)


def served_a_hit(answers: list[RawResponse]) -> bool:
    # After a hit (from L1, or from L2, which fills L1) the worker's L1 holds the answer.
    return any(a.headers.get("x-cache") == "hit" for a in answers)


async def ask_everywhere(
    service: Service, headers: dict[str, str], tally: Tally, *, until_hits: bool = False
) -> list[tuple[RawResponse, dict[str, Any]]]:
    """Every question, on new connections, until each worker answered it twice (and, with
    ``until_hits``, answered it from its cache: two answers at once may both be misses)."""
    answers = []
    for identifiers in QUESTIONS:

        def ask(identifiers: dict[str, str] = identifiers) -> Awaitable[RawResponse]:
            return service.enrich_on_new_connection(headers, identifiers)

        until = served_a_hit if until_hits else None
        for response in await service.on_every_worker(ask, per_worker=2, until=until):
            assert response.status == 200, response.body
            tally.reads += 1
            tally.workers[response.worker] += 1
            answers.append((response, orjson.loads(response.body)))
    return answers


async def write(service: Service, headers: dict[str, str], step: Write, n: int) -> None:
    body = step.body(n)
    response = await service.request_on_new_connection(
        step.method,
        step.path,
        headers={**headers, "Content-Type": step.content_type},
        body=b"" if body is None else orjson.dumps(body),
    )
    assert response.status < 300, (step.name, response.status, response.body)


class TestWriteThenReadOnAnotherWorker:
    async def test_every_write_is_seen_at_once_by_every_worker(
        self,
        private_pg: PrivatePostgres,
        private_redis: PrivateRedis,
        services: ServiceFactory,
        record_property: RecordProperty,
    ) -> None:
        database = private_pg.create_database()
        service = await services.start(database, private_redis.url, workers=WORKERS)
        headers = await bearer_headers(service, database)
        tally = Tally()
        await write(service, headers, WRITES[0], -1)
        expected = WRITES[0].expect(-1)

        for n in range(ROUNDS):
            for step in WRITES:
                # Every worker holds the current answer in L1 (each answered it as a hit).
                before = await ask_everywhere(service, headers, tally, until_hits=True)
                assert all(expected(answer) for _, answer in before), (step.name, before[0][1])
                await write(service, headers, step, n)
                tally.writes += 1
                expected = step.expect(n)
                for response, answer in await ask_everywhere(service, headers, tally):
                    if not expected(answer):
                        tally.stale.append(f"{step.name}#{n} worker={response.worker} {answer}")

        summary = Summary(
            "e2e: write-then-read",
            {
                "workers": len([w for w in tally.workers if w is not None]),
                "writes": tally.writes,
                "reads": tally.reads,
                "stale_reads": len(tally.stale),
            },
        )
        summary.report(record_property)
        assert summary.figures["workers"] == WORKERS, tally.workers
        assert tally.stale == [], tally.stale[:5]
