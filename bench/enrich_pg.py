"""Enrich latency against PostgreSQL: a fixed offered rate (open loop), then saturation.

    .venv/bin/python bench/enrich_pg.py [--profiles 1000000] [--rate 500] [--seconds 20]
        [--cache off|on] [--database enrich_bench] [--port 8765]

Loads N profiles into a PostgreSQL database of its own once (through the importer; reused
while it holds them), runs ``enrich serve`` with one worker and no Redis, and drives
``POST /v1/enrich`` with bench/loadgen.py: ``--rate`` requests a second for ``--seconds``
(latency counted from each request's due time), then 32 concurrent clients as fast as the
service answers. Every request asks for a different known guest by email (a seeded random
mix over all N). The per-client rate limit is off for the run. ``--cache off`` (the
default) sets ENRICH_CACHE_ENABLED=false so every request reads PostgreSQL; ``--cache on``
keeps the in-process cache (the mix is large, so it mostly misses anyway).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import httpx
import orjson
from common import OUT, create_database, data_file, database_exists, pg_url

from app.auth.clients import ClientService
from app.core.db import create_engine, create_sessionmaker
from app.core.migrate import upgrade
from app.core.settings import Settings
from app.ingest.demo import demo_profile
from app.ingest.importer import import_file

HERE = Path(__file__).resolve().parent
ENRICH = str(Path(sys.executable).with_name("enrich"))


async def ensure_profiles(database: str, profiles: int) -> str:
    url = pg_url(database)
    if await database_exists(database):
        connection = await asyncpg.connect(url)
        try:
            count = await connection.fetchval("SELECT count(*) FROM profiles")
        finally:
            await connection.close()
        if count >= profiles:
            print(f"reusing {database}: {count:,} profiles")
            settings = Settings(_env_file=None, database_url=url)  # type: ignore[call-arg]
            await asyncio.to_thread(upgrade, settings)  # the schema may have moved on since
            return url
    url = await create_database(database)
    path = data_file(profiles, "ndjson", "full")
    settings = Settings(_env_file=None, database_url=url)  # type: ignore[call-arg]
    report = await import_file(path, settings)
    print(f"loaded {report.rows:,} profiles in {report.seconds:.0f} s")
    connection = await asyncpg.connect(url)
    try:
        await connection.execute("VACUUM ANALYZE")
    finally:
        await connection.close()
    return url


async def make_client(url: str) -> tuple[str, str]:
    engine = create_engine(Settings(_env_file=None, database_url=url))  # type: ignore[call-arg]
    try:
        async with create_sessionmaker(engine)() as session:
            client, secret = await ClientService(session).create("bench", "profiles:read")
            await session.commit()
            return client.client_id, secret
    finally:
        await engine.dispose()


def bodies_file(profiles: int, count: int) -> Path:
    rng = random.Random(42)
    path = OUT / f"enrich-bodies-{profiles}-{count}.ndjson"
    with path.open("wb") as handle:
        for _ in range(count):
            email = demo_profile(rng.randrange(profiles))["identifiers"]["email"]
            handle.write(orjson.dumps({"identifiers": {"email": email}}) + b"\n")
    return path


def start_server(url: str, port: int, cache: bool) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENRICH_")}
    env |= {
        "ENRICH_DATABASE_URL": url,
        "ENRICH_LOG_LEVEL": "WARNING",
        "ENRICH_CACHE_ENABLED": "true" if cache else "false",
        # Saturation measures the service, not the per-client limit (1,000/s by default).
        "ENRICH_RATE_LIMIT_ENABLED": "false",
        "ENRICH_PUBLIC_URL": f"http://127.0.0.1:{port}",
    }
    return subprocess.Popen(
        [ENRICH, "serve", "--workers", "1", "--port", str(port), "--host", "127.0.0.1"],
        env=env,
        cwd=OUT,
        start_new_session=True,
    )


def wait_ready(base: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit("the server did not start")


def loadgen(base: str, token: str, bodies: Path, *extra: str) -> dict[str, object]:
    command = [
        sys.executable,
        str(HERE / "loadgen.py"),
        "--url",
        f"{base}/v1/enrich",
        "--token",
        token,
        "--bodies",
        str(bodies),
        *extra,
    ]
    print("$", " ".join(command).replace(token, "$TOKEN"))
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    result: dict[str, object] = json.loads(done.stdout)
    print(json.dumps(result))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", type=int, default=1_000_000)
    parser.add_argument("--database", default="enrich_bench")
    parser.add_argument("--rate", type=float, default=500)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--saturation-seconds", type=float, default=10)
    parser.add_argument("--cache", choices=("off", "on"), default="off")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--bodies", type=int, default=50_000, help="distinct guests in the mix")
    args = parser.parse_args()

    OUT.mkdir(parents=True, exist_ok=True)
    url = asyncio.run(ensure_profiles(args.database, args.profiles))
    client_id, secret = asyncio.run(make_client(url))
    bodies = bodies_file(args.profiles, args.bodies)
    base = f"http://127.0.0.1:{args.port}"
    server = start_server(url, args.port, args.cache == "on")
    try:
        wait_ready(base)
        token = httpx.post(
            f"{base}/oauth/token",
            data={"grant_type": "client_credentials"},
            auth=(client_id, secret),
        ).json()["access_token"]
        print(f"server: 1 worker, no Redis, cache {args.cache}; {args.profiles:,} profiles")
        loadgen(base, token, bodies, "--rate", "200", "--seconds", "3")  # warm-up
        loadgen(base, token, bodies, "--rate", str(args.rate), "--seconds", str(args.seconds))
        loadgen(base, token, bodies, "--closed", "32", "--seconds", str(args.saturation_seconds))
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
