"""A read token cannot grow a worker's memory: what the worker remembers between requests is
bounded in bytes, whatever a caller sends.

The attacks send a bounded number of large requests that mean the same thing (a body with
trailing blanks, an Authorization header with blanks before the token) to a real
``enrich serve`` worker and compare its resident memory before and after. A worker that
remembered each request grows by about their total size (hundreds of MB); one that does not
stays within what a few requests in flight and the allocator's slack cost.
"""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import httpx
import orjson
import pytest

from app.enrich import request
from app.enrich.cache.l1 import L1Cache
from app.enrich.fastpath import EnrichFastPath
from app.enrich.fields import parse_fields
from app.enrich.request import PARSED_KEY_MAX_BYTES, RememberedRequests
from app.identity.identifiers import lookup_keys
from app.platform.sizes import footprint
from tests.conftest import Backend, RunningApp
from tests.fixtures.servers import ServiceFactory
from tests.fixtures.service import RecordProperty, Service, Summary, bearer_headers

# Each attack: this many distinct requests of about this size (below the 1 MiB body limit).
ATTACK_REQUESTS = 200
PADDING = 1_000_000
# The growth a worker may show after the attack. The requests total ~200 MB: remembered,
# they grow the worker by at least that much; forgotten, the growth is the allocator's
# slack for a couple of 1 MB buffers.
MAX_GROWTH = 60 * 1_048_576
REQUEST = orjson.dumps({"identifiers": {"email": "jane@example.com"}})


def rss(pid: int) -> int:
    """The resident set size of a process, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


async def start(services: ServiceFactory, backend: Backend) -> tuple[Service, dict[str, str]]:
    service = await services.start(
        backend.database_url, backend.redis_url, redis_prefix=backend.redis_prefix
    )
    headers = await bearer_headers(service, backend.database_url, "profiles:read")
    return service, headers


async def warm_up(http: httpx.AsyncClient, headers: dict[str, str]) -> None:
    """Requests like the attack's but all the same, so that the buffers one large request
    needs are part of the baseline."""
    body = REQUEST + b" " * PADDING
    for _ in range(5):
        answer = await http.post("/v1/enrich", content=body, headers=post_json(headers))
        assert answer.status_code == 200, answer.text


class TestRememberedRequests:
    async def test_padded_bodies_do_not_grow_the_worker(
        self, services: ServiceFactory, backend: Backend, record_property: RecordProperty
    ) -> None:
        service, headers = await start(services, backend)
        assert service.process is not None
        post_headers = post_json(headers)
        async with httpx.AsyncClient(base_url=service.base_url, timeout=60) as http:
            await warm_up(http, headers)
            before = rss(service.process.pid)
            for index in range(ATTACK_REQUESTS):
                body = REQUEST + b" " * (PADDING + index)
                answer = await http.post("/v1/enrich", content=body, headers=post_headers)
                assert answer.status_code == 200, answer.text
                assert answer.headers["x-cache"] == "hit"  # one meaning, one cache entry
            growth = rss(service.process.pid) - before
        Summary("padded_bodies", {"growth_mb": growth / 1_048_576}).report(record_property)
        assert growth < MAX_GROWTH, f"the worker grew by {growth / 1_048_576:.0f} MB"

    async def test_padded_authorization_headers_do_not_grow_the_worker(
        self, services: ServiceFactory, backend: Backend, record_property: RecordProperty
    ) -> None:
        service, headers = await start(services, backend)
        assert service.process is not None
        token = headers["Authorization"].removeprefix("Bearer ")
        statuses = set()
        async with httpx.AsyncClient(base_url=service.base_url, timeout=60) as http:
            await warm_up(http, headers)
            before = rss(service.process.pid)
            for index in range(ATTACK_REQUESTS):
                padded = "Bearer " + " " * (PADDING + index) + token
                answer = await http.post(
                    "/v1/enrich", content=REQUEST, headers=post_json({"Authorization": padded})
                )
                statuses.add(answer.status_code)
            growth = rss(service.process.pid) - before
            Summary("padded_headers", {"growth_mb": growth / 1_048_576}).report(record_property)
            # The token itself still works.
            answer = await http.post("/v1/enrich", content=REQUEST, headers=post_json(headers))
            assert answer.status_code == 200
        assert growth < MAX_GROWTH, f"the worker grew by {growth / 1_048_576:.0f} MB"
        # Longer than any token issued: refused (by the server's header limit, or as a token).
        assert statuses <= {401, 431}, statuses


def post_json(headers: dict[str, str]) -> dict[str, str]:
    return {**headers, "Content-Type": "application/json"}


def traced(build: Callable[[], object]) -> tuple[object, int]:
    """What ``build`` returns and the bytes it left allocated (tracemalloc)."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        built = build()
        gc.collect()
        return built, tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


class TestL1Bytes:
    def test_many_large_answers_stay_within_the_byte_budget(self) -> None:
        budget = 2 * 1_048_576
        l1 = L1Cache(100_000, 60.0, 60.0, max_bytes=budget)

        def fill() -> L1Cache:
            # 20 MB of answers (8 KB each, the answer cap), each for a new guest.
            for index in range(2500):
                key = ((("email", f"guest-{index}-{'x' * 300}@example.com"),), None)
                l1.put(key, b"%08d" % index + b"x" * 8000, key[0], l1.generation)
            return l1

        _, held = traced(fill)
        assert l1.bytes <= budget
        assert held < budget * 1.25, f"L1 holds {held} bytes for a budget of {budget}"
        assert 150 < len(l1) < 250  # about budget / 8.6 KB: the newest answers are kept
        newest = ((("email", f"guest-2499-{'x' * 300}@example.com"),), None)
        assert l1.fresh(newest) is not None

    def test_the_gzip_form_counts_and_a_dropped_entry_gives_its_bytes_back(self) -> None:
        l1 = L1Cache(100, 60.0, 60.0, max_bytes=1_048_576)
        key = ((("crm_id", "C-7"),), None)
        l1.put(key, b"x" * 5000, key[0], l1.generation)
        entry = l1.fresh(key)
        assert entry is not None
        alone = l1.bytes
        l1.add_gzipped(entry, b"z" * 100)
        assert l1.bytes == alone + 100
        l1.invalidate([("crm_id", "C-7")])
        assert (len(l1), l1.bytes) == (0, 0)
        l1.add_gzipped(entry, b"z" * 100)  # a hit that began before the drop
        assert l1.bytes == 0

    def test_an_answer_larger_than_the_budget_is_not_kept(self) -> None:
        l1 = L1Cache(100, 60.0, 60.0, max_bytes=4096)
        key = ((("crm_id", "C-7"),), None)
        l1.put(key, b"x" * 8000, key[0], l1.generation)
        assert (len(l1), l1.bytes) == (0, 0)


class TestRememberedParsing:
    async def test_large_requests_are_parsed_but_not_remembered(
        self, running: RunningApp, headers: dict[str, str]
    ) -> None:
        post = post_json(headers)
        await running.http.post("/v1/enrich", content=REQUEST, headers=post)  # a new token
        for index in range(50):
            body = REQUEST + b" " * (PARSED_KEY_MAX_BYTES + index)
            answer = await running.http.post("/v1/enrich", content=body, headers=post)
            assert answer.status_code == 200
            assert answer.headers["x-cache"] in ("hit", "miss")
        remembered = remembered_requests(running)
        assert all(len(raw) <= PARSED_KEY_MAX_BYTES for raw in remembered.bodies)

    async def test_small_distinct_requests_stay_within_the_byte_budget(
        self, running: RunningApp, headers: dict[str, str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        budget = 64 * 1024
        monkeypatch.setattr(request, "PARSED_MAX_BYTES", budget)
        post = post_json(headers)
        await running.http.post("/v1/enrich", content=REQUEST, headers=post)
        for index in range(300):
            body = b'{"identifiers": {"crm_id": "C-%d"}, "fields": "traits.a,traits.b"}' % index
            assert (await running.http.post("/v1/enrich", content=body, headers=post)).is_success
            assert remembered_requests(running).bytes <= budget
        remembered = dict(remembered_requests(running).bodies)
        assert 0 < len(remembered) < 300
        assert footprint(remembered) <= budget

    def test_footprint_errs_on_the_large_side(self) -> None:
        """The count the tables are bounded by is at least what the values really hold."""
        requests = [
            b'{"identifiers": {"email": "jane@example.com"}}',
            orjson.dumps(
                {
                    "identifiers": {f"t{i}": f"v{i}" for i in range(32)},
                    "fields": [f"traits.a{i}" for i in range(100)],
                }
            ),
        ]
        for body in requests:
            document = orjson.loads(body)
            parsed, held = traced(
                lambda d=document: [  # type: ignore[misc]
                    (tuple(lookup_keys(d["identifiers"], "US")), parse_fields(d.get("fields")))
                    for _ in range(100)
                ]
            )
            assert isinstance(parsed, list)
            assert footprint(parsed[0]) * 100 >= held * 0.9, (len(body), held)


def remembered_requests(running: RunningApp) -> RememberedRequests:
    """The requests the fast path remembers (made when it serves its first request)."""
    found = running.app.fast_path  # type: ignore[attr-defined]
    assert isinstance(found, EnrichFastPath)
    assert found.requests is not None
    return found.requests
