"""Server time of the OAuth hot paths: issuing a token, and authorizing with a cached token.

    .venv/bin/python bench/token_bench.py [--iterations 5000] [--backend sqlite|postgres|both]


Requests are driven straight into the ASGI app (no HTTP client, no sockets), so the figures
are what the server spends: middleware, routing, dependencies, the database and Redis round
trips, signing and serialization; not the HTTP parser or the network. Each backend gets a
database of its own (a temporary SQLite file; a temporary PostgreSQL database with Redis,
as in production) that is removed afterwards.

Measured:
  issue           POST /oauth/token (client_secret_basic), the whole request
  authorize       require_scope("profiles:read") on an already verified (cached) token:
                  the Bearer header parse and the dependency, called directly
  protected GET   a whole request to an endpoint that only depends on require_scope
  open GET        the same endpoint without require_scope (the floor for comparison)
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import math
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import redis.asyncio as redis
from fastapi import Depends, FastAPI
from starlette.requests import Request

from app.auth.bearer import Authorizer, bearer_token, require_scope
from app.auth.clients import ClientService
from app.auth.tokens import Principal
from app.core.migrate import upgrade
from app.core.settings import Settings
from app.main import create_app

PG_ADMIN_URL = os.environ.get(
    "ENRICH_BENCH_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("ENRICH_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")

Call = Callable[[], Awaitable[Any]]


# --- driving the ASGI app --------------------------------------------------------------------


def http_scope(method: str, path: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"bench"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("bench", 80),
        "state": {},
    }


async def call_app(
    app: FastAPI, method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes = b""
) -> tuple[int, bytes]:
    """One request through the whole ASGI app; returns the status and the body."""
    scope = http_scope(method, path, headers)
    delivered = False
    status = 0
    chunks: list[bytes] = []

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    return status, b"".join(chunks)


# --- measuring -------------------------------------------------------------------------------


@dataclass
class Result:
    backend: str
    name: str
    samples: list[float]  # seconds

    def quantile(self, q: float) -> float:
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)


async def measure(call: Call, iterations: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        await call()
    samples = []
    clock = time.perf_counter
    for _ in range(iterations):
        start = clock()
        await call()
        samples.append(clock() - start)
    return samples


# --- the backends ----------------------------------------------------------------------------


@dataclass
class Backend:
    name: str
    settings: Settings
    cleanup: Callable[[], Awaitable[None]]


async def sqlite_backend(directory: Path) -> Backend:
    url = f"sqlite+aiosqlite:///{directory / 'bench.db'}"
    settings = bench_settings(database_url=url)
    await asyncio.to_thread(upgrade, settings)

    async def cleanup() -> None:
        return None  # the temporary directory goes with the run

    return Backend("sqlite", settings, cleanup)


async def postgres_backend() -> Backend:
    name = f"enrich_bench_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(PG_ADMIN_URL, timeout=5)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    prefix = f"enrich-bench-{uuid.uuid4().hex[:10]}:"
    settings = bench_settings(database_url=url, redis_url=REDIS_URL, redis_prefix=prefix)
    await asyncio.to_thread(upgrade, settings)

    async def cleanup() -> None:
        client = redis.Redis.from_url(REDIS_URL)
        try:
            keys = [k async for k in client.scan_iter(match=prefix + "*", count=1000)]
            if keys:
                await client.delete(*keys)
        finally:
            await client.aclose()
        conn = await asyncpg.connect(PG_ADMIN_URL, timeout=5)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    return Backend("postgres+redis", settings, cleanup)


def bench_settings(**values: Any) -> Settings:
    base: dict[str, Any] = {
        "environment": "production",
        "public_url": "http://bench",
        "log_level": "WARNING",
        "log_format": "json",
        # The limiter stays on (authorizing includes it) with room for every iteration.
        "rate_limit_rps": 1_000_000,
        "rate_limit_burst": 1_000_000,
    }
    return Settings(_env_file=None, **{**base, **values})  # type: ignore[call-arg]


# --- the scenarios ---------------------------------------------------------------------------


def mount_bench_routes(app: FastAPI) -> None:
    # A default value: an Annotated hint naming a local would not resolve (postponed hints).
    reader = Depends(require_scope("profiles:read"))

    @app.get("/_bench/protected")
    async def protected(caller: Principal = reader) -> dict[str, str]:
        return {"client_id": caller.client_id}

    @app.get("/_bench/open")
    async def open_endpoint() -> dict[str, str]:
        return {"client_id": "none"}


async def run_backend(backend: Backend, iterations: int, warmup: int) -> list[Result]:
    app = create_app(backend.settings)
    mount_bench_routes(app)
    results = []
    async with app.router.lifespan_context(app):
        runtime = app.state.runtime
        async with runtime.sessionmaker() as session:
            client, secret = await ClientService(session).create("bench", "profiles:read")
            await session.commit()
        basic = base64.b64encode(f"{client.client_id}:{secret}".encode())
        token_headers = [
            (b"authorization", b"Basic " + basic),
            (b"content-type", b"application/x-www-form-urlencoded"),
            (b"content-length", b"29"),
        ]
        form = b"grant_type=client_credentials"

        async def issue() -> None:
            status, body = await call_app(app, "POST", "/oauth/token", token_headers, form)
            if status != 200:
                raise RuntimeError(f"token request failed: {status} {body!r}")

        results.append(Result(backend.name, "issue", await measure(issue, iterations, warmup)))

        _, body = await call_app(app, "POST", "/oauth/token", token_headers, form)
        token = orjson.loads(body)["access_token"]
        bearer_headers = [(b"authorization", f"Bearer {token}".encode())]
        dependency = require_scope("profiles:read")
        request = Request(http_scope("GET", "/_bench/protected", bearer_headers))
        authorizer = Authorizer(runtime.verifier, runtime.auth_sync, runtime.ops.guard)

        async def authorize() -> None:
            value = await bearer_token(request)
            await dependency(request, authorizer, value)

        results.append(
            Result(backend.name, "authorize", await measure(authorize, iterations, warmup))
        )

        async def protected_get() -> None:
            status, _ = await call_app(app, "GET", "/_bench/protected", bearer_headers)
            if status != 200:
                raise RuntimeError(f"protected GET failed: {status}")

        async def open_get() -> None:
            await call_app(app, "GET", "/_bench/open", [])

        results.append(
            Result(backend.name, "protected GET", await measure(protected_get, iterations, warmup))
        )
        results.append(
            Result(backend.name, "open GET", await measure(open_get, iterations, warmup))
        )
    return results


def table(results: list[Result], loop: str, iterations: int) -> str:
    lines = [
        f"enrich token benchmark: server time per call, {iterations} iterations after warm-up, "
        f"event loop {loop}, Python {sys.version.split()[0]}, {os.cpu_count()} CPUs",
        "",
        f"{'backend':<16}{'measurement':<16}{'median':>12}{'p99':>12}{'mean':>12}",
        "-" * 68,
    ]
    for r in results:
        lines.append(
            f"{r.backend:<16}{r.name:<16}{fmt(r.median):>12}{fmt(r.quantile(0.99)):>12}"
            f"{fmt(statistics.fmean(r.samples)):>12}"
        )
    return "\n".join(lines)


def fmt(seconds: float) -> str:
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.3f} ms"
    return f"{seconds * 1e6:.1f} us"


async def main(args: argparse.Namespace) -> list[Result]:
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="enrich-bench-") as tmp:
        makers: list[Callable[[], Awaitable[Backend]]] = []
        if args.backend in ("sqlite", "both"):
            makers.append(lambda: sqlite_backend(Path(tmp)))
        if args.backend in ("postgres", "both"):
            makers.append(postgres_backend)
        for make in makers:
            backend = await make()
            try:
                results.extend(await run_backend(backend, args.iterations, args.warmup))
            finally:
                await backend.cleanup()
    return results


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iterations", type=int, default=5000)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    return parser.parse_args()


def run() -> None:
    arguments = parse_args()
    if arguments.iterations < 2000:
        raise SystemExit("use at least 2000 iterations for a stable p99")
    if arguments.loop == "uvloop":
        import uvloop

        measured = uvloop.run(main(arguments))
    else:
        measured = asyncio.run(main(arguments))
    print(table(measured, arguments.loop, arguments.iterations))


if __name__ == "__main__":
    run()
