"""Prometheus metrics: what the counters say after real requests (who may read them:
tests/health/test_metrics_endpoint.py)."""

from __future__ import annotations

import json
from collections import Counter

import httpx
import pytest

from tests.auth.conftest import basic, make_client_on
from tests.conftest import AppFactory, RunningApp
from tests.fixtures.callers import ENRICH, GUEST, Caller, fetch_token, sample, set_limit


class TestRequestMetrics:
    async def test_requests_are_counted_by_route_template_method_and_status(
        self, http: httpx.AsyncClient, new_caller
    ) -> None:  # type: ignore[no-untyped-def]
        caller: Caller = await new_caller()
        route = "/v1/profiles/{id_type}/{id_value}"
        labels = {"route": route, "method": "GET", "status": "404"}
        before = sample("enrich_http_requests_total", **labels)
        before_latency = sample("enrich_http_request_duration_seconds_count", **labels)
        for value in ("a@example.com", "b@example.com", "c@example.com"):
            response = await http.get(f"/v1/profiles/email/{value}", headers=caller.headers)
            assert response.status_code == 404
        assert sample("enrich_http_requests_total", **labels) == before + 3
        assert sample("enrich_http_request_duration_seconds_count", **labels) == before_latency + 3
        # Each profile is one series, not one per identifier value.
        assert sample("enrich_http_requests_total", route="/v1/profiles/email/a@example.com") == 0

    async def test_the_enrich_fast_path_is_labelled_with_its_route(
        self, http: httpx.AsyncClient, new_caller
    ) -> None:  # type: ignore[no-untyped-def]
        caller: Caller = await new_caller()
        labels = {"route": ENRICH, "method": "POST", "status": "200"}
        before = sample("enrich_http_requests_total", **labels)
        hits, misses = (
            sample("enrich_cache_answers_total", level="hit"),
            sample("enrich_cache_answers_total", level="miss"),
        )
        for _ in range(3):
            assert (await http.post(ENRICH, json=GUEST, headers=caller.headers)).status_code == 200
        assert sample("enrich_http_requests_total", **labels) == before + 3
        assert sample("enrich_cache_answers_total", level="miss") == misses + 1
        assert sample("enrich_cache_answers_total", level="hit") == hits + 2

    async def test_an_unknown_path_does_not_make_a_series_of_its_own(
        self, http: httpx.AsyncClient
    ) -> None:
        before = sample("enrich_http_requests_total", route="unmatched", method="GET", status="404")
        assert (await http.get("/no/such/thing/12345")).status_code == 404
        after = sample("enrich_http_requests_total", route="unmatched", method="GET", status="404")
        assert after == before + 1

    async def test_tokens_issued_and_refused_by_reason(
        self, http: httpx.AsyncClient, new_caller
    ) -> None:  # type: ignore[no-untyped-def]
        issued = sample("enrich_tokens_issued_total")
        bad_secret = sample("enrich_tokens_refused_total", reason="invalid_client")
        bad_scope = sample("enrich_tokens_refused_total", reason="invalid_scope")
        caller: Caller = await new_caller("profiles:read")  # one token issued
        client = caller.client
        response = await http.post(
            "/oauth/token",
            data={"grant_type": "client_credentials"},
            headers={"Authorization": basic(client.client_id, "wrong")},
        )
        assert response.status_code == 401
        response = await http.post(
            "/oauth/token",
            data={"grant_type": "client_credentials", "scope": "admin"},
            headers={"Authorization": basic(client.client_id, client.client_secret)},
        )
        assert response.status_code == 400
        assert sample("enrich_tokens_issued_total") == issued + 1
        assert sample("enrich_tokens_refused_total", reason="invalid_client") == bad_secret + 1
        assert sample("enrich_tokens_refused_total", reason="invalid_scope") == bad_scope + 1

    async def test_rate_limited_requests_are_counted_per_client(
        self, running: RunningApp, new_caller
    ) -> None:  # type: ignore[no-untyped-def]
        caller: Caller = await new_caller()
        await set_limit(running, caller.client_id, 0.01, 1)
        before = sample("enrich_rate_limited_requests_total", client_id=caller.client_id)
        statuses = [
            (await running.http.post(ENRICH, json=GUEST, headers=caller.headers)).status_code
            for _ in range(4)
        ]
        assert statuses == [200, 429, 429, 429]
        after = sample("enrich_rate_limited_requests_total", client_id=caller.client_id)
        assert after == before + 3

    async def test_redis_failures_are_counted(
        self, app_factory: AppFactory, capfd: pytest.CaptureFixture[str]
    ) -> None:
        # Nothing listens on port 1: every Redis call of the request fails and is logged.
        app = await app_factory(redis_url="redis://127.0.0.1:1/0", log_format="json")
        client = await make_client_on(app, "profiles:read")
        headers = {"Authorization": f"Bearer {await fetch_token(app.http, client)}"}
        events = ("cache.redis_failed", "ratelimit.redis_failed")
        before = {event: sample("enrich_redis_errors_total", event=event) for event in events}
        capfd.readouterr()
        answer = await app.http.post(ENRICH, json=GUEST, headers=headers)
        assert answer.status_code == 200  # answered from the database
        logged = Counter(
            record["event"]
            for line in capfd.readouterr().err.splitlines()
            if line.startswith("{") and (record := json.loads(line))["event"] in events
        )
        assert logged["cache.redis_failed"] >= 1, logged
        counted = {
            event: sample("enrich_redis_errors_total", event=event) - before[event]
            for event in events
        }
        assert counted == {event: logged[event] for event in events}

    async def test_the_pool_gauges_follow_connections_in_use(self, running: RunningApp) -> None:
        from app.platform.metrics import sample_pool

        async with running.runtime.engine.connect():
            sample_pool(running.runtime.engine)
            assert sample("enrich_db_pool_in_use") >= 1
        sample_pool(running.runtime.engine)
        assert sample("enrich_db_pool_in_use") == 0
        assert sample("enrich_db_pool_waiting") == 0
