"""A real Prometheus scraping a real ``enrich serve``: the faults fire their alerts, and every
dashboard query parses and returns data.

The service (two workers, an SQLite file, a redis-server of the test's own) gets traffic, then
the faults one after another, each kept going until its alert fires in Prometheus's
``/api/v1/alerts``: a client hammering the token endpoint with a wrong secret
(EnrichTokenRefusals, EnrichTokenLockouts), a worker killed (EnrichWorkerRestarts), and Redis
stopped (EnrichRedisUnavailable). Prometheus scrapes and evaluates every second and loads the
shipped recording rules and a copy of the alert rules with every ``for:`` cut to 1 s (the
shipped ones wait up to 15 minutes); expressions and thresholds are the shipped ones.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

from app.auth.clients import ClientService
from app.core.db import create_engine, create_sessionmaker
from app.core.settings import Settings
from tests.alerting.rules import PROMETHEUS_DIR, panel_queries
from tests.alerting.snapshot import snapshot
from tests.faults.load import email, seed
from tests.fixtures.databases import create_sqlite_database
from tests.fixtures.polling import eventually
from tests.fixtures.prometheus import PrivatePrometheus
from tests.fixtures.servers import PrivateRedis, ServiceFactory
from tests.fixtures.service import (
    RecordProperty,
    Service,
    Summary,
    create_client,
)

# ENRICH_DASHBOARD_SNAPSHOT=docs/dashboard.png: draw the dashboard from this run's data there.
SNAPSHOT = os.environ.get("ENRICH_DASHBOARD_SNAPSHOT")
# Only a hang guard: each alert fires within seconds of its fault on a quiet machine.
ALERT_HANG_SECONDS = 90.0
PROFILES = 10
GUESTS = [email(i) for i in range(PROFILES)] + ["nobody@example.com"]


def rules_for_test(directory: Path) -> list[Path]:
    """The shipped recording rules, and the shipped alerts with every ``for:`` cut to 1 s."""
    alerts, cut = re.subn(
        r"(?m)^(\s+)for: \S+$", r"\1for: 1s", (PROMETHEUS_DIR / "enrich-alerts.yml").read_text()
    )
    assert cut > 0
    copy = directory / "enrich-alerts.yml"
    copy.write_text(alerts)
    return [PROMETHEUS_DIR / "enrich-recording.yml", copy]


async def configure(database: str, client_id: str, **change: object) -> None:
    """Give a client a rate limit (``rps``, ``burst``) or an allowlist (``networks``)."""
    engine = create_engine(Settings(_env_file=None, database_url=database))  # type: ignore[call-arg]
    try:
        async with create_sessionmaker(engine)() as session:
            clients = ClientService(session)
            if "networks" in change:
                await clients.allow(client_id, change["networks"])  # type: ignore[arg-type]
            else:
                await clients.limit(client_id, change["rps"], change["burst"])  # type: ignore[arg-type]
            await session.commit()
    finally:
        await engine.dispose()


async def token(service: Service, client: tuple[str, str]) -> dict[str, str]:
    async with httpx.AsyncClient(base_url=service.base_url, timeout=10) as http:
        response = await http.post(
            "/oauth/token", data={"grant_type": "client_credentials"}, auth=client
        )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


async def statuses(calls: list[Awaitable[httpx.Response]]) -> list[int]:
    """The answers' statuses; a call cut by a killed worker or a stopped server counts as 0."""
    answers = await asyncio.gather(*calls, return_exceptions=True)
    return [a.status_code if isinstance(a, httpx.Response) else 0 for a in answers]


async def enrich_traffic(http: httpx.AsyncClient, headers: dict[str, str]) -> list[int]:
    """Every guest once by GET and once by POST: hits, misses and unknown guests."""
    calls = [http.get("/v1/enrich", params={"email": g}, headers=headers) for g in GUESTS]
    bodies = [{"identifiers": {"email": g}} for g in GUESTS]
    calls += [http.post("/v1/enrich", json=body, headers=headers) for body in bodies]
    return await statuses(calls)


class Live:
    """The service, its Prometheus and clients for both."""

    def __init__(self, service: Service, prometheus: PrivatePrometheus) -> None:
        self.service = service
        self.prometheus = prometheus
        self.http = httpx.AsyncClient(base_url=service.base_url, timeout=30)
        self.api = httpx.AsyncClient(timeout=30)
        self.phases: dict[str, float] = {}

    async def close(self) -> None:
        await self.http.aclose()
        await self.api.aclose()

    async def until_firing(self, alert: str, keep_going: Callable[[], Awaitable[object]]) -> None:
        """Run ``keep_going`` (what keeps the fault visible) until ``alert`` fires."""

        async def fired() -> bool:
            await keep_going()
            return alert in await self.prometheus.firing(self.api)

        what = f"{alert} firing"
        self.phases[alert] = await eventually(
            fired, what, deadline=ALERT_HANG_SECONDS, interval=0.2
        )

    async def until_scraped(self) -> None:
        async def scraped() -> bool:
            up = await self.prometheus.query(self.api, 'up{job="enrich"} == 1')
            return bool(up)

        await eventually(scraped, "the first scrape", deadline=ALERT_HANG_SECONDS, interval=0.2)


async def hammer(live: Live, client_id: str) -> None:
    """A client sending a wrong secret, ten times at once."""
    data = {"grant_type": "client_credentials"}
    wrong = (client_id, "not-the-secret")
    calls = [live.http.post("/oauth/token", data=data, auth=wrong) for _ in range(10)]
    codes = await statuses(calls)
    assert set(codes) <= {401, 429}, codes


async def refused_with(live: Live, headers: dict[str, str], status: int) -> bool:
    """Whether a few enrich calls of this client get ``status`` (the change is polled)."""
    calls = [live.http.get("/v1/enrich", params={"email": g}, headers=headers) for g in GUESTS]
    return status in await statuses(calls)


async def while_redis_is_down(live: Live, headers: dict[str, str]) -> None:
    # The load balancer's readiness probe: 503 without Redis (the route errors panel).
    await statuses([live.http.get("/readyz")])
    codes = await enrich_traffic(live.http, headers)
    assert all(code < 500 for code in codes), codes


async def drive(live: Live, database: str, redis_server: PrivateRedis) -> None:
    """Traffic, then each fault until its alert fires."""
    main = await create_client(database, "profiles:read profiles:write events:write")
    headers = await token(live.service, main)
    await seed(live.http, headers, PROFILES, "v1")
    await live.until_scraped()
    for _ in range(3):
        codes = await enrich_traffic(live.http, headers)
        assert all(code in (200, 404) for code in codes), codes

    await live.until_firing("EnrichTokenRefusals", lambda: hammer(live, main[0]))
    await live.until_firing("EnrichTokenLockouts", lambda: hammer(live, main[0]))

    # A client at its rate limit, another outside its allowlist (their panels need data).
    limited, fenced = [await create_client(database, "profiles:read") for _ in range(2)]
    limited_headers = await token(live.service, limited)
    fenced_headers = await token(live.service, fenced)
    await configure(database, limited[0], rps=1, burst=1)
    await configure(database, fenced[0], networks=["10.0.0.0/8"])
    await eventually(lambda: refused_with(live, limited_headers, 429), "429 by the rate limit")
    await eventually(lambda: refused_with(live, fenced_headers, 403), "403 by the allowlist")

    os.kill(min(live.service.worker_pids()), signal.SIGKILL)
    await live.until_firing("EnrichWorkerRestarts", lambda: enrich_traffic(live.http, headers))
    restarts = await live.prometheus.query(live.api, "enrich_worker_restarts_total")
    assert [sample["value"][1] for sample in restarts] == ["1"]  # the launch is no restart

    redis_server.stop()
    await live.until_firing("EnrichRedisUnavailable", lambda: while_redis_is_down(live, headers))


class TestAlertsOnALiveService:
    async def test_faults_fire_their_alerts_and_every_dashboard_query_has_data(
        self,
        tmp_path: Path,
        private_redis: PrivateRedis,
        services: ServiceFactory,
        record_property: RecordProperty,
    ) -> None:
        started = time.monotonic()
        started_at = time.time()
        database = await create_sqlite_database(tmp_path)
        service = await services.start(database, private_redis.url, workers=2)
        directory = tmp_path / "prometheus"
        directory.mkdir()
        target = f"127.0.0.1:{service.port}"
        prometheus = PrivatePrometheus(directory, [target], rules_for_test(directory))
        live = Live(service, prometheus)
        try:
            prometheus.start()
            await prometheus.wait_ready()
            await drive(live, database, private_redis)
            alerts = await prometheus.alerts(live.api)
            if SNAPSHOT:  # the picture in docs/alerts.md, drawn only when asked
                await snapshot(prometheus.url, started_at, Path(SNAPSHOT), tmp_path)
            empty = [
                (title, expr)
                for title, expr in panel_queries()
                if not await prometheus.query(live.api, expr)
            ]
        finally:
            await live.close()
            prometheus.stop()
        assert empty == [], "dashboard queries without data"
        for alert in alerts:
            name = alert["labels"]["alertname"]
            assert alert["annotations"]["runbook_url"] == f"docs/alerts.md#{name.lower()}"
        figures = {f"{name}_s": round(s, 1) for name, s in live.phases.items()}
        figures["total_s"] = round(time.monotonic() - started, 1)
        figures["panels"] = len(panel_queries())
        Summary("alerting: live-prometheus", figures).report(record_property)
