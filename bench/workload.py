"""A realistic workload: many guests, a few seen often, most once; enrich and events mixed.

    .venv/bin/python bench/workload.py [--profiles 1000000] [--rate 1000] [--seconds 60]
                                       [--zipf 1.0] [--events 0.05] [--workers 2]
    .venv/bin/python bench/workload.py --unknown --rate 2000 --workers 1 --seconds 20

Loads N profiles into a PostgreSQL database of its own once (reused while it holds them), starts
`enrich serve` with W workers on it and on Redis under a new key prefix, so both cache levels
start cold, and drives it open loop (bench/loadgen.py: request i is due at start + i / rate,
its latency counted from that due time) with:

- guests drawn from a Zipf distribution over the N profiles (rank k with weight 1 / k^s):
  with s = 1 over 1,000,000 guests, the top 100 take about a third of the calls and most
  guests are seen once or not at all;
- a share of the calls (``--events``, 5 % by default) `POST /v1/events` (a purchase for the
  same kind of guest), the rest `POST /v1/enrich` by email.

``--unknown`` is the unknown-guest storm instead: every call asks for an identifier nobody has
(a PostgreSQL lookup and a negative entry each).

Prints, per window of ``--window`` seconds: the calls due in it, errors, the share of enrich
answers served from a cache (X-Cache: hit), and p50 / p99 / max latency; then the whole run.
Writes bench/out/workload.json. The load generator runs on the same two cores as the service:
at high rates it takes about one of them.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import signal
import subprocess
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
import orjson
from common import OUT
from enrich_pg import ENRICH, ensure_profiles, wait_ready
from hotpath import REDIS_URL, free_port
from loadgen import Client, percentile

from app.auth.clients import ClientService
from app.core.db import create_engine, create_sessionmaker
from app.core.settings import Settings
from app.ingest.demo import demo_profile

SCOPES = "profiles:read events:write"


@dataclass
class Window:
    """What happened to the calls due in one window of the run."""

    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    cache: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)

    def add(self, other: Window) -> None:
        self.latencies += other.latencies
        self.statuses.update(other.statuses)
        self.cache.update(other.cache)
        self.errors.update(other.errors)

    def row(self) -> dict[str, object]:
        ms = [value * 1000 for value in self.latencies]
        looked_up = sum(self.cache.values())
        failed = sum(n for status, n in self.statuses.items() if status >= 400)
        return {
            "calls": len(ms) + sum(self.errors.values()),
            "errors": failed + sum(self.errors.values()),
            "statuses": dict(sorted(self.statuses.items())),
            "error_kinds": dict(self.errors),
            "hit_ratio": round(self.cache["hit"] / looked_up, 3) if looked_up else None,
            "p50_ms": round(percentile(ms, 0.50), 2),
            "p99_ms": round(percentile(ms, 0.99), 2),
            "max_ms": round(max(ms), 2) if ms else None,
        }


def zipf_ranks(profiles: int, exponent: float, count: int, rng: random.Random) -> list[int]:
    """``count`` profile numbers (0-based), rank k drawn with weight 1 / k^exponent."""
    weights = itertools.accumulate(1.0 / (k**exponent) for k in range(1, profiles + 1))
    return rng.choices(range(profiles), cum_weights=list(weights), k=count)


def plan(args: argparse.Namespace, client: Client, tokens: dict[str, str]) -> list[bytes]:
    """Every call of the run, in order, as the bytes to send."""
    rng = random.Random(42)
    total = int(args.rate * args.seconds)
    if args.unknown:
        salt = uuid.uuid4().hex[:8]
        bodies = (
            orjson.dumps({"identifiers": {"crm_id": f"NOPE-{salt}-{n}"}}) for n in range(total)
        )
        return [client.payload(body) for body in bodies]
    emails: dict[int, str] = {}
    calls = []
    for number in zipf_ranks(args.profiles, args.zipf, total, rng):
        email = emails.get(number)
        if email is None:
            email = emails[number] = demo_profile(number)["identifiers"]["email"]
        if rng.random() < args.events:
            body = {
                "event_id": str(uuid.UUID(int=rng.getrandbits(128))),
                "type": "purchase",
                "identifiers": {"email": email},
                "occurred_at": datetime.now(UTC).isoformat(),
                "data": {"amount": round(rng.uniform(5, 200), 2), "currency": "EUR"},
            }
            calls.append(client.payload(orjson.dumps(body), "/v1/events", tokens["events"]))
        else:
            calls.append(client.payload(orjson.dumps({"identifiers": {"email": email}})))
    return calls


async def drive(client: Client, calls: list[bytes], rate: float, window: float) -> list[Window]:
    """Open loop: call i is due at start + i / rate; each result lands in its due window."""
    windows = [Window() for _ in range(int(len(calls) / rate / window) + 1)]
    tasks: set[asyncio.Task[None]] = set()

    async def one(due: float, payload: bytes, into: Window) -> None:
        try:
            status, cache = await client.send(payload)
        except Exception as exc:
            into.errors[type(exc).__name__] += 1
            return
        into.latencies.append(time.perf_counter() - due)
        into.statuses[status] += 1
        if cache:
            into.cache[cache] += 1

    start = time.perf_counter() + 0.05
    for number, payload in enumerate(calls):
        due = start + number / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(due, payload, windows[int(number / rate / window)]))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks)
    return windows


async def make_client(url: str) -> tuple[str, str]:
    engine = create_engine(Settings(_env_file=None, database_url=url))  # type: ignore[call-arg]
    try:
        async with create_sessionmaker(engine)() as session:
            client, secret = await ClientService(session).create("workload", SCOPES)
            await session.commit()
            return client.client_id, secret
    finally:
        await engine.dispose()


def start_server(url: str, port: int, workers: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENRICH_")}
    env |= {
        "ENRICH_DATABASE_URL": url,
        "ENRICH_REDIS_URL": REDIS_URL,
        "ENRICH_REDIS_PREFIX": f"enrich-workload-{uuid.uuid4().hex[:8]}:",  # cold caches
        "ENRICH_ENVIRONMENT": "production",
        "ENRICH_LOG_LEVEL": "WARNING",
        "ENRICH_RATE_LIMIT_ENABLED": "false",  # the service is measured, not the client's limit
        "ENRICH_PUBLIC_URL": f"http://127.0.0.1:{port}",
    }
    command = [ENRICH, "serve", "--workers", str(workers), "--port", str(port)]
    log = (OUT / "workload-server.log").open("ab")  # (its warnings: deadlines passed, ...)
    return subprocess.Popen(
        command, env=env, cwd=OUT, stdout=log, stderr=log, start_new_session=True
    )


def stop(server: subprocess.Popen[bytes]) -> None:
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=60)
    except subprocess.TimeoutExpired:
        print("the server did not stop within 60 s of SIGTERM: killed")
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def report(args: argparse.Namespace, windows: list[Window]) -> dict[str, object]:
    whole = Window()
    rows = []
    for number, window in enumerate(windows):
        whole.add(window)
        row = {"from_s": round(number * args.window, 1), **window.row()}
        rows.append(row)
        print(
            f"{row['from_s']:>6} s {row['calls']:>7} calls {row['errors']:>5} errors"
            f"  hit {row['hit_ratio'] if row['hit_ratio'] is not None else '-':>5}"
            f"  p50 {row['p50_ms']:>7} ms  p99 {row['p99_ms']:>7} ms  max {row['max_ms']} ms"
        )
    total = whole.row()
    print("whole run:", json.dumps(total))
    return {"arguments": vars(args), "windows": rows, "total": total}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profiles", type=int, default=1_000_000)
    parser.add_argument("--database", default="enrich_workload")
    parser.add_argument("--rate", type=float, default=1000)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--zipf", type=float, default=1.0, help="the distribution's exponent s")
    parser.add_argument("--events", type=float, default=0.05, help="the share of event calls")
    parser.add_argument("--unknown", action="store_true", help="the unknown-guest storm")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--window", type=float, default=5.0, help="seconds a report row covers")
    parser.add_argument("--max-connections", type=int, default=256)
    args = parser.parse_args()

    OUT.mkdir(parents=True, exist_ok=True)
    url = asyncio.run(ensure_profiles(args.database, args.profiles))
    client_id, secret = asyncio.run(make_client(url))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = start_server(url, port, args.workers)
    try:
        wait_ready(base, 120)  # (two workers start slowly on a busy machine)
        token = httpx.post(
            f"{base}/oauth/token",
            data={"grant_type": "client_credentials"},
            auth=(client_id, secret),
        ).json()["access_token"]
        client = Client(f"{base}/v1/enrich", token, args.max_connections)
        calls = plan(args, client, {"events": token})
        kind = "unknown guests" if args.unknown else f"Zipf s={args.zipf}, {args.events:.0%} events"
        print(
            f"{args.workers} workers, {args.profiles:,} profiles, {kind}, open loop at"
            f" {args.rate:,.0f}/s for {args.seconds:.0f} s, caches cold"
        )
        try:
            import uvloop

            runner = uvloop.run
        except ImportError:
            runner = asyncio.run
        windows = runner(drive(client, calls, args.rate, args.window))
    finally:
        stop(server)
    result = report(args, windows)
    (OUT / "workload.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
