"""OpenTelemetry tracing (ENRICH_TRACING_*): what a collector receives, over OTLP/HTTP, from an
app with tracing on; nothing from one with it off.

The receiver (tests/fixtures/otlp.py) is a real HTTP server decoding ExportTraceServiceRequest.
The in-process apps are closed before their spans are read: the lifespan's end must flush them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from app.core.settings import Settings
from app.enrich.cache.store import EnrichCache
from app.main import EnrichAPI, TracedEnrichAPI
from tests.conftest import Backend, RunningApp, close_app, start_app
from tests.fixtures.callers import ENRICH, caller_on
from tests.fixtures.otlp import Received, Receiver
from tests.fixtures.polling import eventually
from tests.fixtures.servers import ServiceFactory
from tests.fixtures.service import bearer_headers

EMAIL = "traced.guest@example.com"
CRM = "CRM-SECRET-4711"
TRAIT = "platinum-trait-value"
CORRELATION = "c0ffee00-1234-4abc-9def-0123456789ab"
CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
SERVER = 2  # SPAN_KIND_SERVER in OTLP
CLIENT = 3
on_sqlite = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)


def traceparent(sampled: bool = True) -> str:
    return f"00-{CALLER_TRACE}-{CALLER_SPAN}-{'01' if sampled else '00'}"


class Run:
    """An app started on ``backend`` with ``settings``; closed (its lifespan ended) by ``close``."""

    def __init__(self, backend: Backend, **settings: Any) -> None:
        self.gen: AsyncIterator[RunningApp] = start_app(backend.settings(**settings))

    async def __aenter__(self) -> RunningApp:
        return await self.gen.__anext__()

    async def __aexit__(self, *_: object) -> None:
        await close_app(self.gen)


def traced(backend: Backend, receiver: Receiver, **settings: Any) -> Run:
    return Run(backend, tracing_enabled=True, tracing_endpoint=receiver.url, **settings)


def server_span(spans: list[Received], request_id: str) -> Received:
    found = [
        s for s in spans if s.kind == SERVER and s.attributes.get("enrich.request_id") == request_id
    ]
    assert len(found) == 1, [s.name for s in spans]
    return found[0]


def children(spans: list[Received], parent: Received) -> list[Received]:
    """Every span under ``parent``, at any depth."""
    below = [s for s in spans if s.parent_id == parent.span_id]
    return below + [d for s in below for d in children(spans, s)]


async def enrich(app: RunningApp, headers: dict[str, str], request_id: str, **more: str) -> str:
    response = await app.http.post(
        ENRICH,
        json={"identifiers": {"email": EMAIL, "crm_id": CRM}},
        headers={**headers, "X-Request-ID": request_id, **more},
    )
    assert response.status_code == 200, response.text
    return response.headers["x-cache"]


class TestTracingOn:
    async def test_enrich_makes_a_server_span_and_one_per_level_it_consults(
        self, backend: Backend, receiver: Receiver
    ) -> None:
        async with traced(backend, receiver) as app:
            caller = await caller_on(app, "profiles:read profiles:write")
            profile = {"identifiers": {"email": EMAIL, "crm_id": CRM}, "traits": {"tier": TRAIT}}
            put = await app.http.put(
                f"/v1/profiles/email/{EMAIL}", json=profile, headers=caller.headers
            )
            assert put.status_code == 201
            assert await enrich(app, caller.headers, "miss-1") == "miss"
            assert await enrich(app, caller.headers, "l1-1") == "hit"
            if backend.redis_url:
                app.runtime.enrich_cache.l1.clear()
                assert await enrich(app, caller.headers, "l2-1") == "hit"
        spans = receiver.spans()  # (flushed as the app closed)

        miss = server_span(spans, "miss-1")
        assert miss.name == "POST /v1/enrich"
        assert miss.attributes["http.route"] == "/v1/enrich"
        assert miss.attributes["http.request.method"] == "POST"
        assert miss.attributes["http.response.status_code"] == 200
        assert miss.attributes["enrich.cache"] == "miss"
        assert miss.resource["service.name"] == "enrich"
        below = {s.name: s for s in children(spans, miss)}
        database = below["enrich.db.lookup"]
        assert database.kind == CLIENT
        assert database.attributes["db.system.name"] == (
            "postgresql" if backend.name == "postgres" else "sqlite"
        )
        assert database.attributes["enrich.found"] is True
        assert database.attributes["enrich.identifier.types"] == ["email", "crm_id"]
        assert below["enrich.l1.lookup"].attributes["enrich.cache.hit"] is False
        if backend.redis_url:
            assert below["enrich.l2.read"].attributes["enrich.cache.hit"] is False
            assert "enrich.l2.fill" in below

        l1 = server_span(spans, "l1-1")
        assert [s.name for s in children(spans, l1)] == ["enrich.l1.lookup"]
        assert children(spans, l1)[0].attributes["enrich.cache.hit"] is True
        assert l1.trace_id != miss.trace_id  # (each request its own trace)

        if backend.redis_url:
            l2 = {s.name: s for s in children(spans, server_span(spans, "l2-1"))}
            assert l2["enrich.l2.read"].attributes["enrich.cache.hit"] is True
            assert "enrich.db.lookup" not in l2

    @on_sqlite
    async def test_a_callers_traceparent_is_continued_and_its_correlation_id_recorded(
        self, backend: Backend, receiver: Receiver
    ) -> None:
        named = "deployment.environment.name=qa, service.namespace=personalize"
        async with traced(backend, receiver, tracing_resource_attributes=named) as app:
            caller = await caller_on(app)
            extra = {"traceparent": traceparent(), "X-Correlation-Id": CORRELATION}
            await enrich(app, caller.headers, "traced-1", **extra)  # the route (a new token)
            await enrich(app, caller.headers, "traced-2", **extra)  # the fast path
        spans = receiver.spans()
        for request_id in ("traced-1", "traced-2"):
            span = server_span(spans, request_id)
            assert span.trace_id == CALLER_TRACE
            assert span.parent_id == CALLER_SPAN
            assert span.attributes["enrich.correlation_id"] == CORRELATION
            assert all(s.trace_id == CALLER_TRACE for s in children(spans, span))
        resource = spans[0].resource
        assert resource["deployment.environment.name"] == "qa"
        assert resource["service.namespace"] == "personalize"

    @on_sqlite
    async def test_the_token_endpoint_has_its_steps_and_a_refusal_its_error_code(
        self, backend: Backend, receiver: Receiver
    ) -> None:
        async with traced(backend, receiver) as app:
            caller = await caller_on(app)
            refused = await app.http.post(
                "/oauth/token",
                data={"grant_type": "client_credentials"},
                auth=(caller.client_id, "not-the-secret"),
                headers={"X-Request-ID": "refused-1"},
            )
            assert refused.status_code == 401
        spans = receiver.spans()
        issued = [
            s for s in spans if s.name == "POST /oauth/token" and "oauth.error" not in s.attributes
        ]
        assert issued, [s.name for s in spans]
        assert {s.name for s in children(spans, issued[0])} == {
            "oauth.client.authenticate",
            "oauth.token.sign",
        }
        refusal = server_span(spans, "refused-1")
        assert refusal.attributes["oauth.error"] == "invalid_client"
        assert refusal.attributes["http.response.status_code"] == 401
        assert refusal.status != 2  # a 4xx is the caller's error, not the server's

    async def test_nothing_secret_or_identifying_is_exported(
        self, backend: Backend, receiver: Receiver
    ) -> None:
        async with traced(backend, receiver) as app:
            caller = await caller_on(app, "profiles:read profiles:write")
            profile = {"identifiers": {"email": EMAIL, "crm_id": CRM}, "traits": {"tier": TRAIT}}
            path = f"/v1/profiles/email/{EMAIL}"
            assert (await app.http.put(path, json=profile, headers=caller.headers)).is_success
            assert (await app.http.get(path, headers=caller.headers)).status_code == 200
            for request_id in ("a", "b"):
                await enrich(app, caller.headers, request_id)
            query = await app.http.get(ENRICH, params={"crm_id": CRM}, headers=caller.headers)
            assert query.status_code == 200
        raw = receiver.raw
        assert receiver.spans(), "nothing was exported"
        for value in (EMAIL, CRM, TRAIT, caller.token, caller.client.client_secret):
            assert value.encode() not in raw, value
        assert b"@example.com" not in raw

    @on_sqlite
    async def test_unsampled_requests_export_nothing_and_the_callers_flag_wins(
        self, backend: Backend, receiver: Receiver
    ) -> None:
        async with traced(backend, receiver, tracing_sample_ratio=0.0) as app:
            caller = await caller_on(app)
            await enrich(app, caller.headers, "ours-1")
            await enrich(app, caller.headers, "ours-2")
            await enrich(app, caller.headers, "unsampled-1", traceparent=traceparent(False))
            await enrich(app, caller.headers, "unreadable-1", traceparent="00-not-a-trace")
            await enrich(app, caller.headers, "sampled-1", traceparent=traceparent(True))
        spans = receiver.spans()
        ids = {s.attributes.get("enrich.request_id") for s in spans if s.kind == SERVER}
        assert ids == {"sampled-1"}
        assert {s.name for s in children(spans, server_span(spans, "sampled-1"))} >= {
            "enrich.l1.lookup"
        }


class TestSettings:
    @pytest.mark.parametrize(
        ("name", "value"),
        [
            ("tracing_resource_attributes", "deployment.environment.name"),
            ("tracing_resource_attributes", "=prod"),
            ("tracing_endpoint", "collector:4318/v1/traces"),
            ("tracing_sample_ratio", "1.5"),
        ],
    )
    def test_a_mistyped_value_stops_the_start(self, name: str, value: str) -> None:
        with pytest.raises(ValidationError, match=name):
            Settings(_env_file=None, **{name: value})  # type: ignore[call-arg]


class TestTracingOff:
    @on_sqlite
    async def test_nothing_is_built_and_nothing_exported(
        self, backend: Backend, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url.removesuffix("/v1/traces"))
        async with Run(backend, tracing_endpoint=receiver.url) as app:
            # The hot path runs the untraced classes: no check for tracing on any request.
            assert type(app.app) is EnrichAPI
            assert type(app.runtime.enrich_cache) is EnrichCache
            assert app.runtime.tracing is None
            caller = await caller_on(app)
            for request_id in ("off-1", "off-2"):
                await enrich(app, caller.headers, request_id, traceparent=traceparent())
        assert receiver.bodies == []

    @on_sqlite
    async def test_on_the_app_is_the_traced_one(self, backend: Backend, receiver: Receiver) -> None:
        async with traced(backend, receiver) as app:
            assert type(app.app) is TracedEnrichAPI
            assert type(app.runtime.enrich_cache) is not EnrichCache


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_enrich_serve_workers_export_their_spans_and_flush_them_at_shutdown(
    services: ServiceFactory,
    backend: Backend,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Batches wait a minute: only the shutdown's flush can deliver them within the test.
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "60000")
    service = await services.start(
        backend.database_url,
        backend.redis_url,
        workers=2,
        redis_prefix=backend.redis_prefix,
        tracing_enabled="true",
        tracing_endpoint=receiver.url,
    )
    headers = await bearer_headers(service, backend.database_url)
    async with httpx.AsyncClient(base_url=service.base_url, timeout=10) as http:
        for number in range(6):  # (spread over the workers by the kernel)
            answer = await http.get(
                ENRICH,
                params={"email": EMAIL},
                headers={**headers, "traceparent": traceparent(), "X-Request-ID": f"w-{number}"},
            )
            assert answer.status_code == 200
    assert receiver.bodies == []  # (the batch is still waiting)
    service.terminate()  # SIGTERM: a graceful shutdown
    assert service.process is not None
    await eventually(lambda: service.process is not None and service.process.poll() is not None)
    spans = await receiver.wait_for(6, "GET /v1/enrich")
    served = [s for s in spans if s.name == "GET /v1/enrich"]
    assert {s.attributes["enrich.request_id"] for s in served} == {f"w-{n}" for n in range(6)}
    assert {s.trace_id for s in served} == {CALLER_TRACE}
    tokens = [s for s in spans if s.name == "POST /oauth/token"]
    assert len(tokens) == 1
