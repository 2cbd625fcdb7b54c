"""Write, then read on another worker: `enrich serve --workers 2` on PostgreSQL and Redis.

Before every write each worker process holds the old answer in its L1 (it answered it at least
twice); right after the write is answered, reads on new connections, spread over the workers
(which one answered is read from /proc), must all show the write. Every kind of write is
checked, and each is repeated, so "every time" means something.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
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
    RecordProperty,
    Service,
    Summary,
    bearer_headers,
)
from tests.fixtures.workers import CRM_ID, EMAIL, Check, ask_everywhere, tier_is

WORKERS = 2
ROUNDS = 3


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
        readers: Counter[int | None] = Counter()
        stale: list[str] = []
        writes = 0
        await write(service, headers, WRITES[0], -1)
        expected = WRITES[0].expect(-1)

        for n in range(ROUNDS):
            for step in WRITES:
                # Every worker holds the current answer in L1 (each answered it as a hit).
                before = await ask_everywhere(service, headers, readers, until_hits=True)
                assert all(expected(answer) for _, _, answer in before), (step.name, before[0][2])
                await write(service, headers, step, n)
                writes += 1
                expected = step.expect(n)
                for _, response, answer in await ask_everywhere(service, headers, readers):
                    if not expected(answer):
                        stale.append(f"{step.name}#{n} worker={response.worker} {answer}")

        summary = Summary(
            "e2e: write-then-read",
            {
                "workers": len([w for w in readers if w is not None]),
                "writes": writes,
                "reads": sum(readers.values()),
                "stale_reads": len(stale),
            },
        )
        summary.report(record_property)
        assert summary.figures["workers"] == WORKERS, readers
        assert stale == [], stale[:5]
