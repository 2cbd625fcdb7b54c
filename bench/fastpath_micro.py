"""In-process micro-benchmark of the enrich fast path's L1 hit: CPU time per request.

    PYTHONPATH=. .venv/bin/python bench/fastpath_micro.py [--requests 10000] [--rounds 7]
                                                          [--tracing RATIO [--tracing-endpoint URL]]

No server and no sockets: the ASGI app is called directly with a prepared scope and a fake
``receive``/``send``, so the figures are the fast path's own code (header scan, remembered
parsing, token check, guard, L1, answer headers, gzip from the entry, access line) and
nothing else. The app runs on an embedded SQLite database with one worker (L1 always on),
JSON access lines (to /dev/null while timing), metrics and the rate limiter on, as in
production. Each scenario is timed in rounds of ``--requests`` calls; the best round is
printed, in microseconds of process CPU time per request.

It measures the ``app`` package that ``PYTHONPATH`` finds (it prints which). To compare two
trees, run it with ``PYTHONPATH`` set to each in turn, a few times each, alternating, and
compare the lowest figures: the imports below also find the parts in the layout before the
move to ``app/core`` (``app.config``, ``app.migrate``), so the same script measures both.

``--tracing RATIO`` turns OpenTelemetry tracing on with that sample ratio (docs/operations.md),
exporting to ``--tracing-endpoint`` or else to a sink in a process of its own
(bench/otlp_sink.py); the batch processor's export thread is this process's, so its CPU counts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson

try:
    from app.core.migrate import upgrade
    from app.core.settings import Settings
except ImportError:  # the layout before the move (to measure the tree before it)
    from app.config import Settings  # type: ignore[no-redef]
    from app.migrate import upgrade  # type: ignore[no-redef]
import app as measured

try:
    from app.auth.clients import ClientService
except ImportError:  # a tree from before the move out of app/auth/service.py
    from app.auth.service import ClientService  # type: ignore[no-redef]

try:
    from app.auth.apikey_admin import ApiKeyService
except ImportError:  # a tree without API keys: their scenario is left out
    ApiKeyService = None  # type: ignore[assignment,misc]
try:
    from app.enrich.views.service import ViewService
except ImportError:  # a tree without views: their scenario is left out
    ViewService = None  # type: ignore[assignment,misc]
from app.main import create_app

PROFILE = {
    "identifiers": {"email": "jane@example.com", "crm_id": "C-7"},
    "traits": {"tier": "gold", "first_name": "Jane", "city": "Oslo"},
    "segments": ["vip", "likes_running", "newsletter"],
    "metrics": {"order_count": 14, "lifetime_value": 1830.5},
    # ~1.3 KB answered whole: over the gzip threshold, like most of Personalize's answers.
    "recommendations": [{"product_id": f"SKU-{n}", "score": 0.5} for n in range(30)],
}
POST_BODY = orjson.dumps(
    {"identifiers": {"guest_ref": "${guest.ref}", "email": "jane@example.com"}}
)
FIELDS_BODY = orjson.dumps(
    {"identifiers": {"email": "jane@example.com"}, "fields": "traits.tier,segments"}
)
# Requests tried before the answer must be an L1 hit.
WARM_UP_TRIES = 100
# (name, method, body, query string, extra headers)
SCENARIOS = (
    ("POST", "POST", POST_BODY, b"", ()),
    ("POST gzip", "POST", POST_BODY, b"", ((b"accept-encoding", b"gzip, deflate, br"),)),
    ("POST fields", "POST", FIELDS_BODY, b"", ()),
    # What Personalize sends: a correlation id on every request (and gzip).
    (
        "POST Personalize",
        "POST",
        POST_BODY,
        b"",
        (
            (b"accept-encoding", b"gzip"),
            (b"x-correlation-id", b"5f0c6b1e-9a53-4d8e-8a3f-2b7c1d9e4a60"),
        ),
    ),
    ("GET", "GET", b"", b"email=jane%40example.com&fields=traits.tier", ()),
)
# The POST above with an API key (X-API-Key) instead of a Bearer token.
API_KEY_SCENARIO = ("POST api key", "POST", POST_BODY, b"", ())
# The POST above through a view (`enrich views`): flat keys, a default, its latest version.
VIEW_BODY = orjson.dumps(
    {"identifiers": {"guest_ref": "${guest.ref}", "email": "jane@example.com"}, "view": "offer"}
)
VIEW_SCENARIO = ("POST view", "POST", VIEW_BODY, b"", ())
VIEW = {
    "fields": ["traits.tier", "metrics.lifetime_value", "segments"],
    "rename": {"traits.tier": "tier", "metrics.lifetime_value": "ltv"},
    "defaults": {"traits.tier": "none"},
}
# The same view declaring a consent purpose the guest granted: the consent check on a hit.
PURPOSE_BODY = orjson.dumps(
    {"identifiers": {"guest_ref": "${guest.ref}", "email": "jane@example.com"}, "view": "mkt"}
)
PURPOSE_SCENARIO = ("POST view purpose", "POST", PURPOSE_BODY, b"", ())
GRANT = {"consent": {"marketing": {"status": "granted", "at": "2026-05-01T10:00:00Z"}}}


def settings_for(database_url: str, **tracing: Any) -> Settings:
    return Settings(  # type: ignore[call-arg]
        **tracing,
        _env_file=None,
        environment="test",
        database_url=database_url,
        public_url="http://bench",
        log_format="json",
        log_level="INFO",
        # The limiter runs, but never refuses: the loop is far faster than any real caller.
        rate_limit_rps=1e9,
        rate_limit_burst=1_000_000_000,
    )


async def bearer(service: Any) -> bytes:
    """A token with both profile scopes, and the demo profile written with it."""
    async with service.state.runtime.sessionmaker() as session:
        client, secret = await ClientService(session).create(
            "bench", "profiles:read profiles:write"
        )
        await session.commit()
    transport = httpx.ASGITransport(app=service, client=("127.0.0.1", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as http:
        response = await http.post(
            "/oauth/token",
            data={"grant_type": "client_credentials"},
            auth=(client.client_id, secret),
        )
        token: str = response.json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        written = await http.put("/v1/profiles/crm_id/C-7", json=PROFILE, headers=headers)
        assert written.is_success, written.text
    return b"Bearer " + token.encode()


async def view(service: Any) -> bool:
    """The view ``offer``, loaded by this process (False: the tree has no views)."""
    if ViewService is None:
        return False
    runtime = service.state.runtime
    async with runtime.sessionmaker() as session:
        await ViewService(session).create("offer", VIEW)
        await session.commit()
    await runtime.auth_sync.refresh()  # (the poll that loads views, now rather than soon)
    return True


async def purpose_view(service: Any, authorization: bytes) -> bool:
    """The view ``mkt`` (``offer`` with purpose marketing), the guest's grant, both loaded
    (False: the tree has no consent)."""
    runtime = service.state.runtime
    try:
        async with runtime.sessionmaker() as session:
            await ViewService(session).create("mkt", {**VIEW, "purpose": "marketing"})
            await session.commit()
    except Exception:  # a tree without consent refuses the member
        return False
    transport = httpx.ASGITransport(app=service, client=("127.0.0.1", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as http:
        granted = await http.patch(
            "/v1/profiles/crm_id/C-7",
            json=GRANT,
            headers={
                "Authorization": authorization.decode(),
                "Content-Type": "application/merge-patch+json",
            },
        )
        assert granted.is_success, granted.text
    await runtime.auth_sync.refresh()
    return True


async def api_key(service: Any) -> bytes | None:
    """An API key of a client with the profiles:read scope (None: the tree has none)."""
    if ApiKeyService is None:
        return None
    async with service.state.runtime.sessionmaker() as session:
        client, _ = await ClientService(session).create("bench key", "profiles:read")
        _, plain, _ = await ApiKeyService(session).create(client.client_id)
        await session.commit()
    return plain.encode()


def request_scope(
    method: str, body: bytes, query: bytes, authorization: bytes, extra: Any
) -> dict[str, Any]:
    """What uvicorn hands over for a request with the headers an HTTP client sends."""
    headers = [
        (b"host", b"enrich.example.com"),
        (b"user-agent", b"Sitecore-Personalize"),
        (b"accept", b"application/json"),
        (b"authorization", authorization) if authorization else (b"x-api-key", extra[0][1]),
        *(extra if authorization else extra[1:]),
    ]
    if method == "POST":
        headers.append((b"content-type", b"application/json"))
        headers.append((b"content-length", b"%d" % len(body)))
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": "/v1/enrich",
        "raw_path": b"/v1/enrich",
        "query_string": query,
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


class Exchange:
    """A fake server side: hands over the body, keeps the last status and X-Cache."""

    def __init__(self, body: bytes) -> None:
        self.message = {"type": "http.request", "body": body, "more_body": False}
        self.status = 0
        self.cache = b""

    async def receive(self) -> dict[str, Any]:
        return self.message

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.cache = dict(message["headers"]).get(b"x-cache", b"")


@contextlib.contextmanager
def stderr_to_devnull() -> Iterator[None]:
    """The access lines go to stderr: away while timing, as to a file in production."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


async def time_scenario(
    service: Any, authorization: bytes, scenario: tuple[Any, ...], requests: int, rounds: int
) -> float:
    """The best round's CPU seconds per request."""
    _, method, body, query, extra = scenario
    scope = request_scope(method, body, query, authorization, extra)
    exchange = Exchange(body)
    receive, send = exchange.receive, exchange.send
    for _ in range(WARM_UP_TRIES):  # the first is a miss; then a hit, once L1 holds it
        await service(dict(scope), receive, send)
        if exchange.cache == b"hit":
            break
        await asyncio.sleep(0.05)  # (a fill may still be on its way, slower under valgrind)
    assert (exchange.status, exchange.cache) == (200, b"hit"), scenario[0]
    best = float("inf")
    for _ in range(rounds):
        gc.collect()
        started = time.process_time()
        for _ in range(requests):
            await service(dict(scope), receive, send)  # a server makes a new scope per request
        best = min(best, (time.process_time() - started) / requests)
        assert (exchange.status, exchange.cache) == (200, b"hit"), scenario[0]
    return best


def tracing_settings(ratio: float | None, endpoint: str | None) -> dict[str, Any]:
    """The tracing settings (none: a tree without tracing is measured as it is)."""
    if ratio is None:
        return {}
    return {"tracing_enabled": True, "tracing_sample_ratio": ratio, "tracing_endpoint": endpoint}


async def main(
    requests: int, rounds: int, only: list[str] | None = None, tracing: dict[str, Any] | None = None
) -> None:
    tracing = tracing or {}
    with tempfile.TemporaryDirectory() as directory:
        url = f"sqlite+aiosqlite:///{Path(directory) / 'bench.db'}"
        await asyncio.to_thread(upgrade, settings_for(url))
        service = create_app(settings_for(url, **tracing))
        results = []
        with stderr_to_devnull():  # (up to the end: the last lines are written at shutdown)
            async with service.router.lifespan_context(service):
                authorization = await bearer(service)
                key = await api_key(service)
                runs = [(authorization, scenario) for scenario in SCENARIOS]
                if await view(service):
                    runs.insert(1, (authorization, VIEW_SCENARIO))  # (beside the plain POST)
                    if await purpose_view(service, authorization):
                        runs.insert(2, (authorization, PURPOSE_SCENARIO))
                if key is not None:  # (no Authorization header: the key in X-API-Key)
                    name, method, body, query, _ = API_KEY_SCENARIO
                    runs.append((b"", (name, method, body, query, ((b"x-api-key", key),))))
                if only:
                    runs = [(sent, scenario) for sent, scenario in runs if scenario[0] in only]
                gc.collect()
                gc.freeze()  # as the service does after start-up
                for sent, scenario in runs:
                    best = await time_scenario(service, sent, scenario, requests, rounds)
                    results.append((scenario[0], best))
    print(f"app: {Path(measured.__file__).parent}")
    if tracing:
        print(f"tracing: on, sample ratio {tracing['tracing_sample_ratio']}")
    print(f"{'L1 hit':<20}us of CPU per request (best of {rounds} rounds of {requests})")
    for name, seconds in results:
        print(f"{name:<20}{seconds * 1e6:8.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument(
        "--only", action="append", help="a scenario's name (repeat for several): only those"
    )
    parser.add_argument("--tracing", type=float, help="trace with this sample ratio (0 to 1)")
    parser.add_argument("--tracing-endpoint", help="OTLP/HTTP traces URL (default: a sink)")
    options = parser.parse_args()
    sink = None
    endpoint = options.tracing_endpoint
    if options.tracing is not None and endpoint is None:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from otlp_sink import start  # (the sink's own module: only when it is needed)

        sink, endpoint = start()
    try:
        traced = tracing_settings(options.tracing, endpoint)
        asyncio.run(main(options.requests, options.rounds, options.only, traced))
    finally:
        if sink is not None:
            sink.terminate()
