"""The namespace cluster's CI drills: a write seen at once everywhere, and an app host killed
under load. Each prints its figures (``-rP``); the longer drills are in ``long_drills.py``.

The cluster (``conftest.py``): two app hosts (``enrich serve --workers 2`` each) behind HAProxy
checking ``/readyz``, a Redis Cluster of three masters with a replica each, a PostgreSQL
primary with a streaming replica that the hosts read from.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import asyncpg
import pytest

from tests.cluster.apps import AppHost
from tests.cluster.harness import Cluster
from tests.cluster.load import Load, running
from tests.cluster.probe import Answer, fresh
from tests.fixtures.polling import eventually
from tests.fixtures.service import RecordProperty, Summary

EMAIL = "many-hosts@example.com"
ROUNDS = 3
PER_WORKER = 2  # answers from each worker of each host, and from each host via the balancer
LAG_SECONDS = 15.0  # far longer than a round's reads, even on a busy machine
LOAD_RATE = 100.0  # requests a second through the balancer
GUESTS = 40  # the load's guests (a write every tenth request)
JSON = {"Content-Type": "application/json"}


def tier(answer: Answer) -> Any:
    assert answer.status == 200, answer.body
    return answer.body["traits"].get("tier")


async def reads_everywhere(cluster: Cluster, headers: dict[str, str]) -> list[Answer]:
    """Enrich and profile reads on new connections: through the balancer until each host
    answered ``PER_WORKER`` of each, and on each host directly until each worker did."""
    assert cluster.balancer is not None
    answers: list[Answer] = []
    enrich = ("GET", f"/v1/enrich?email={EMAIL}")
    profile = ("GET", f"/v1/profiles/email/{EMAIL}")
    for method, path in (enrich, profile):
        mine: list[Answer] = []

        def short(seen: list[Answer], want: int, key: str) -> bool:
            counts = Counter(getattr(x, key) for x in seen)
            return len(counts) < want or min(counts.values()) < PER_WORKER

        while short(mine, len(cluster.apps), "host"):
            mine.append(await fresh(cluster.balancer.base_url, method, path, headers))
            assert len(mine) < 100, Counter(x.host for x in mine)
        for app in cluster.apps:
            direct: list[Answer] = []
            while short([x for x in direct if x.worker], 2, "worker"):
                direct.append(await fresh(app.base_url, method, path, headers, app))
                assert len(direct) < 100, Counter(x.worker for x in direct)
            mine += direct
        answers += mine
    return answers


async def put(app: AppHost, headers: dict[str, str], value: str) -> None:
    """Replace the guest's profile through ``app`` (directly, not through the balancer)."""
    path = f"/v1/profiles/email/{EMAIL}"
    body = {"traits": {"tier": value}}
    answer = await fresh(app.base_url, "PUT", path, {**headers, **JSON}, json=body)
    assert answer.status in (200, 201), answer.body


async def replica_tier(cluster: Cluster) -> Any:
    """The guest's tier as the replica has it now."""
    url = cluster.replica_url.replace("postgresql+asyncpg://", "postgresql://")
    connection = await asyncpg.connect(url, timeout=5)
    try:
        return await connection.fetchval(
            "SELECT p.traits->>'tier' FROM identifiers i JOIN profiles p ON p.id = i.profile_id"
            " WHERE i.type = 'email' AND i.value = $1",
            EMAIL,
        )
    finally:
        await connection.close()


class TestAWriteIsSeenAtOnce:
    @pytest.mark.parametrize("replica", ["current", "lagging"])
    async def test_on_every_host_and_worker_and_through_the_balancer(
        self,
        cluster: Cluster,
        cluster_headers: dict[str, str],
        record_property: RecordProperty,
        replica: str,
    ) -> None:
        """Written through one host, read right after through the balancer and on every
        worker of every host: each answer shows the write, whichever host took it (and while
        the replica, which the hosts read misses from, replays only seconds late)."""
        assert cluster.postgres is not None
        headers = cluster_headers
        await put(cluster.apps[0], headers, "t0")
        await cluster.postgres.caught_up()
        assert {tier(x) for x in await reads_everywhere(cluster, headers)} == {"t0"}
        if replica == "lagging":
            await cluster.postgres.lag(LAG_SECONDS)
        reads: list[Answer] = []
        wrong: list[tuple[int, Answer]] = []
        behind = 0
        try:
            for n in range(1, ROUNDS + 1):
                await put(cluster.apps[n % len(cluster.apps)], headers, f"t{n}")
                answers = await reads_everywhere(cluster, headers)
                reads += answers
                wrong += [(n, x) for x in answers if tier(x) != f"t{n}"]
                behind += await replica_tier(cluster) != f"t{n}"
        finally:
            cluster.postgres.apply_delay(0)
        Summary(
            f"many hosts: write seen at once (replica {replica})",
            {
                "rounds": ROUNDS,
                "reads": len(reads),
                "through_balancer": len([x for x in reads if x.worker is None]),
                "workers_reached": len({x.worker for x in reads if x.worker}),
                "wrong_answers": len(wrong),
                "replica_behind_rounds": behind,
                "replica_readers": len(
                    await cluster.postgres.application_names(cluster.database_url)
                ),
            },
        ).report(record_property)
        assert wrong == []
        if replica == "lagging":  # else nothing was tested
            assert behind == ROUNDS


def guests(tag: str) -> list[str]:
    return [f"{tag}-{n}" for n in range(GUESTS)]


async def readmit(cluster: Cluster, app: AppHost) -> float:
    """Start ``app`` again and wait until the balancer sends it traffic; returns the seconds
    from the start to the balancer's ``UP``."""
    assert cluster.balancer is not None
    balancer = cluster.balancer
    started = time.monotonic()
    app.start()
    await asyncio.to_thread(app.wait_ready)
    await eventually(lambda: balancer.states().get(app.name) == "UP", f"{app.name} UP", deadline=60)
    return time.monotonic() - started


class TestAnAppHostKilledUnderLoad:
    async def test_the_balancer_drains_it_with_errors_only_while_it_detects(
        self, cluster: Cluster, cluster_headers: dict[str, str], record_property: RecordProperty
    ) -> None:
        """SIGKILL to every process of one host while requests flow through the balancer:
        requests fail (if at all) only until HAProxy marks the host down, no answer hides an
        acknowledged write, and the host started again takes traffic again."""
        assert cluster.balancer is not None
        balancer = cluster.balancer
        victim = cluster.apps[-1]
        load = Load(balancer.base_url, cluster_headers, guests("killed"), rate=LOAD_RATE)
        async with running(load):
            await load.more(int(LOAD_RATE * 2), "steady load")
            killed_at = time.monotonic()
            victim.kill()
            detect_s = await eventually(
                lambda: balancer.states().get(victim.name) == "DOWN", "DOWN", deadline=60
            )
            detected_at = killed_at + detect_s
            await load.more(int(LOAD_RATE * 3), "load on the survivor")
            readmit_s = await readmit(cluster, victim)
            readmitted_at = time.monotonic()
            await load.more(int(LOAD_RATE * 2), "load on both again")
        during = load.errors(killed_at, detected_at)
        Summary(
            "many hosts: app host killed",
            {
                **load.figures(),
                "errors_while_detecting": len(during),
                "detect_s": round(detect_s, 2),
                "readmit_s": round(readmit_s, 2),
                "served_after_readmit": load.served_by(readmitted_at).get(victim.name, 0),
            },
        ).report(record_property)
        assert load.wrong() == []
        # A request in flight when the host died may fail with it (if HAProxy cannot send it
        # again elsewhere); none that ended before, none that started once it was marked down.
        assert [x for x in load.errors() if x.ended < killed_at] == []
        assert load.errors(since=detected_at) == []
        assert load.served_by(readmitted_at).get(victim.name, 0) > 0
