"""Who may read /metrics: an allowed network without a token, elsewhere an admin token."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import AppFactory
from tests.fixtures.callers import Caller

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
