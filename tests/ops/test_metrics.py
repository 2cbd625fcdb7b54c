"""Prometheus metrics: who may read /metrics, and what the counters say after real requests."""

from __future__ import annotations

import httpx
import structlog
from prometheus_client.parser import text_string_to_metric_families

from tests.auth.conftest import basic
from tests.conftest import AppFactory, RunningApp
from tests.ops.conftest import ENRICH, GUEST, Caller, sample, set_limit

TEST_CLIENT_NETWORK = "203.0.113.0/24"  # the ASGI test client's address is 203.0.113.7


def families(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            found.setdefault(s.name, []).append((s.labels, s.value))
    return found


class TestMetricsEndpoint:
    async def test_an_allowed_network_reads_it_without_a_token(
        self, app_factory: AppFactory
    ) -> None:
        app = await app_factory(metrics_allow_networks=TEST_CLIENT_NETWORK)
        assert (await app.http.get("/healthz")).status_code == 200
        response = await app.http.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        names = families(response.text)
        for name in (
            "enrich_http_requests_total",
            "enrich_http_request_duration_seconds_bucket",
            "enrich_cache_answers_total",
            "enrich_db_pool_in_use",
            "enrich_db_pool_waiting",
        ):
            assert name in names, name

    async def test_elsewhere_it_needs_a_token(self, http: httpx.AsyncClient) -> None:
        # The default range is loopback only; the test client is 203.0.113.7.
        response = await http.get("/metrics")
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert "enrich_http" not in response.text

    async def test_an_admin_token_reads_it(self, http: httpx.AsyncClient, new_caller) -> None:  # type: ignore[no-untyped-def]
        admin: Caller = await new_caller("admin")
        response = await http.get("/metrics", headers=admin.headers)
        assert response.status_code == 200
        assert "enrich_http_requests_total" in response.text

    async def test_a_token_without_admin_is_403(self, http: httpx.AsyncClient, new_caller) -> None:  # type: ignore[no-untyped-def]
        reader: Caller = await new_caller("profiles:read")
        response = await http.get("/metrics", headers=reader.headers)
        assert response.status_code == 403
        assert 'error="insufficient_scope"' in response.headers["www-authenticate"]

    async def test_a_request_through_an_untrusted_proxy_is_not_let_in_by_address(
        self, app_factory: AppFactory
    ) -> None:
        # A proxy on an allowed address (say nginx on the same host) forwards the public:
        # unless the proxy is configured as trusted, its address proves nothing.
        app = await app_factory(metrics_allow_networks=TEST_CLIENT_NETWORK)
        response = await app.http.get("/metrics", headers={"X-Forwarded-For": "198.51.100.9"})
        assert response.status_code == 401

    async def test_switched_off_it_is_404(self, app_factory: AppFactory) -> None:
        app = await app_factory(metrics_enabled=False, metrics_allow_networks=TEST_CLIENT_NETWORK)
        assert (await app.http.get("/metrics")).status_code == 404


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

    async def test_redis_failures_are_counted(self, running: RunningApp) -> None:
        before = sample("enrich_redis_errors_total", event="cache.redis_failed")
        structlog.get_logger("test").warning("cache.redis_failed", error="ConnectionError")
        assert sample("enrich_redis_errors_total", event="cache.redis_failed") == before + 1

    async def test_the_pool_gauges_follow_connections_in_use(self, running: RunningApp) -> None:
        from app.platform.metrics import sample_pool

        async with running.runtime.engine.connect():
            sample_pool(running.runtime.engine)
            assert sample("enrich_db_pool_in_use") >= 1
        sample_pool(running.runtime.engine)
        assert sample("enrich_db_pool_in_use") == 0
        assert sample("enrich_db_pool_waiting") == 0
