"""The hot-path benchmark: enrich beside a bare ASGI app, same server flags, one run.

    .venv/bin/python bench/hotpath.py [--profiles 100000] [--seconds 10] [--connections 32]
                                      [--rounds 3]

Starts the service on PostgreSQL + Redis with one uvicorn worker as `enrich serve` runs it
(uvloop, httptools with one write per response: app/platform/http.py), loads
the demo data set (N profiles, reused while the database holds them), and measures with wrk
(`wrk -t1 -cC -dS --latency`), each scenario after a 2 s warm-up:

  bare ASGI      bench/bare_app.py answering the same bytes as enrich, on the same server
                 with the same flags (the limit; the ratios are to it)
  ...stock       the same on stock uvicorn (httptools, two writes per response), for reference
  L1 hit         enrich for the demo guest, answered from the worker's own cache, with what
                 production runs on the hot path: a JSON access line per request (INFO, to a
                 file), metrics, rate limiter
  ...gzip        the same with Personalize's headers (Accept-Encoding: gzip)
  ...ops off     the same with the access log, metrics and rate limiter switched off
  L2 hit         the same with L1 off (ENRICH_CACHE_L1_MAX_ENTRIES=0): one Redis MGET
  miss to PG     cache off (ENRICH_CACHE_ENABLED=false), a random known guest per request
  unknown guest  cache on, a new unknown guest per request (PostgreSQL + a negative entry)
  1 connection   the L1 hit and the bare app with a single connection (latency)

The bare app and the L1 hit (32 and 1 connections, and with ops off) are measured in rounds
that take turns, with all three servers up; their rows are the medians, and the ratios of
each round are printed.
Prints a table with the ratios to the bare app, writes bench/out/hotpath.json and, when
matplotlib is installed (`pip install -e '.[bench]'`), bench/out/hotpath.png.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import redis
from common import OUT
from enrich_pg import ensure_profiles, make_client

from app.core.db import create_engine, create_sessionmaker
from app.core.settings import Settings

HERE = Path(__file__).resolve().parent
ENRICH = str(Path(sys.executable).with_name("enrich"))
UVICORN = str(Path(sys.executable).with_name("uvicorn"))
REDIS_URL = os.environ.get("ENRICH_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
DEMO_REQUEST = '{"identifiers":{"email":"demo@example.com"}}'


@dataclass
class Result:
    name: str
    connections: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def ensure_demo_guest(url: str) -> None:
    """The demo guest, whose answer the fixed scenarios ask for (a no-op once it is there)."""
    from app.ingest.demo import load_demo

    settings = Settings(_env_file=None, database_url=url)  # type: ignore[call-arg]
    engine = create_engine(settings)
    try:
        async with create_sessionmaker(engine)() as session:
            await load_demo(session, settings, 1)
            await session.commit()
    finally:
        await engine.dispose()


class Server:
    def __init__(self, command: list[str], env: dict[str, str], port: int) -> None:
        self.port = port
        # Nothing reads the server's output during a run: a pipe could fill and stall it.
        self.log = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            command, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=self.log
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code < 500:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        self.stop()
        self.log.seek(0)
        output = self.log.read().decode(errors="replace")[-4000:]
        raise RuntimeError(f"server on {port} did not start: {command}\n{output}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()


def enrich_server(env: dict[str, str]) -> Server:
    port = free_port()
    return Server(
        [ENRICH, "serve", "--port", str(port), "--workers", "1"],
        {**env, "ENRICH_PUBLIC_URL": f"http://127.0.0.1:{port}"},
        port,
    )


SAME_HTTP = "app.platform.http:CoalescingHttpToolsProtocol"  # what `enrich serve` runs


def bare_server(body_file: Path, http: str = SAME_HTTP) -> Server:
    port = free_port()
    command = [
        UVICORN, "bare_app:app", "--app-dir", str(HERE), "--port", str(port), "--workers", "1",
        "--loop", "uvloop", "--http", http, "--no-access-log", "--log-level", "warning",
        "--no-proxy-headers",  # as `enrich serve` (it reads X-Forwarded-For itself)
    ]  # fmt: skip
    return Server(command, {"ENRICH_BARE_BODY_FILE": str(body_file)}, port)


LUA = {
    "fixed": """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {token}"
wrk.body = '{body}'
""",
    "known": """
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {token}"
request = function()
  local body = string.format('{{"identifiers":{{"crm_id":"CRM-%07d"}}}}', math.random(1, {n}))
  return wrk.format("POST", "/v1/enrich", nil, body)
end
""",
    "unknown": """
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {token}"
counter = 0
request = function()
  counter = counter + 1
  local body = string.format('{{"identifiers":{{"crm_id":"NOPE-%d-%d"}}}}', {salt}, counter)
  return wrk.format("POST", "/v1/enrich", nil, body)
end
""",
}

# The fixed request with the headers Personalize sends on every call.
LUA["gzip"] = LUA["fixed"] + 'wrk.headers["Accept"] = "application/json"\n'
LUA["gzip"] += 'wrk.headers["Accept-Encoding"] = "gzip"\n'

_LATENCY = re.compile(r"^\s+(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s)\s*$", re.M)
_UNIT = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def wrk(name: str, port: int, script: str, connections: int, seconds: int) -> Result:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(script)
    url = f"http://127.0.0.1:{port}/v1/enrich"
    base = ["wrk", "-t1", f"-c{connections}", "--latency", "-s", handle.name]
    subprocess.run([*base, "-d2s", url], capture_output=True, check=True)  # warm-up
    output = subprocess.run(
        [*base, f"-d{seconds}s", url], capture_output=True, text=True, check=True
    ).stdout
    os.unlink(handle.name)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    latency = {p: float(v) * _UNIT[u] for p, v, u in _LATENCY.findall(output)}
    errors = sum(
        int(n) for n in re.findall(r"(?:Non-2xx or 3xx responses|errors: .*?):? (\d+)", output)
    )
    return Result(name, connections, rps, latency["50"], latency["99"], errors)


def scenario_script(mode: str, token: str, profiles: int) -> str:
    return LUA[mode].format(
        token=token, body=DEMO_REQUEST, n=profiles, salt=uuid.uuid4().int % 1_000_000
    )


def token_for(port: int, client: tuple[str, str]) -> str:
    response = httpx.post(
        f"http://127.0.0.1:{port}/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=client,
    )
    response.raise_for_status()
    return str(response.json()["access_token"])


OPS_OFF = {
    "ENRICH_ACCESS_LOG": "false",
    "ENRICH_METRICS_ENABLED": "false",
    "ENRICH_RATE_LIMIT_ENABLED": "false",
}


def median_of(rounds: list[Result]) -> Result:
    """One row for a scenario measured in several rounds: the median of each figure."""
    first = rounds[0]
    return Result(
        first.name,
        first.connections,
        statistics.median(r.rps for r in rounds),
        statistics.median(r.p50_ms for r in rounds),
        statistics.median(r.p99_ms for r in rounds),
        sum(r.errors for r in rounds),
    )


def run(args: argparse.Namespace) -> tuple[list[Result], dict[str, list[float]]]:
    """Every scenario's row, and the ratios to the bare app of each round."""
    url = asyncio.run(ensure_profiles(args.database, args.profiles))
    asyncio.run(ensure_demo_guest(url))
    client = asyncio.run(make_client(url))
    prefix = f"enrich-bench-{uuid.uuid4().hex[:8]}:"
    base_env = {
        "ENRICH_DATABASE_URL": url,
        "ENRICH_REDIS_URL": REDIS_URL,
        "ENRICH_REDIS_PREFIX": prefix,
        "ENRICH_ENVIRONMENT": "production",
        "ENRICH_LOG_LEVEL": "INFO",  # production's: one JSON access line per request
        "ENRICH_WORKERS": "1",
        # The limiter stays on (its cost is measured) with room for the whole run.
        "ENRICH_RATE_LIMIT_RPS": "1000000",
        "ENRICH_RATE_LIMIT_BURST": "1000000",
    }
    results: list[Result] = []
    rounds: dict[str, list[Result]] = {}
    c, s = args.connections, args.seconds
    OUT.mkdir(parents=True, exist_ok=True)  # (a fresh checkout has no bench/out yet)
    body_file = OUT / "hotpath-answer.json"
    try:
        server = enrich_server(base_env)
        bare: Server | None = None
        lean: Server | None = None
        try:
            token = token_for(server.port, client)
            answer = httpx.post(
                f"http://127.0.0.1:{server.port}/v1/enrich",
                content=DEMO_REQUEST,
                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            )
            assert answer.json()["found"], answer.text
            body_file.write_bytes(answer.content)
            print(f"answer: {len(answer.content)} bytes")
            bare = bare_server(body_file)
            lean = enrich_server({**base_env, **OPS_OFF})
            lean_script = scenario_script("fixed", token_for(lean.port, client), args.profiles)
            fixed = scenario_script("fixed", token, args.profiles)
            # The ratios come from rounds that take turns, so a drift of the machine's speed
            # during the run (it happens: +-8 % between minutes) falls on both sides.
            for number in range(args.rounds):
                measured = [
                    wrk("bare ASGI", bare.port, fixed, c, s),
                    wrk("L1 hit", server.port, fixed, c, s),
                    wrk("L1 hit, logs/metrics/limits off", lean.port, lean_script, c, s),
                    wrk("bare ASGI, 1 connection", bare.port, fixed, 1, s),
                    wrk("L1 hit, 1 connection", server.port, fixed, 1, s),
                ]
                for result in measured:
                    rounds.setdefault(result.name, []).append(result)
                bare_rps = measured[0].rps
                print(
                    f"round {number + 1}: L1 hit {measured[1].rps / bare_rps:.2f} x bare,"
                    f" with logs/metrics/limits off {measured[2].rps / bare_rps:.2f}",
                    flush=True,
                )
            results.extend(median_of(r) for r in rounds.values())
            results.append(
                wrk("L1 hit, gzip (Personalize's headers)", server.port,
                    scenario_script("gzip", token, 0), c, s)
            )  # fmt: skip
            results.append(
                wrk("unknown guest", server.port, scenario_script("unknown", token, 0), c, s)
            )
        finally:
            server.stop()
            for other in (bare, lean):
                if other is not None:
                    other.stop()
        stock = bare_server(body_file, "httptools")
        try:
            results.insert(1, wrk("bare ASGI, stock uvicorn", stock.port, fixed, c, s))
        finally:
            stock.stop()
        for name, env, mode in (
            ("L2 hit (L1 off)", {"ENRICH_CACHE_L1_MAX_ENTRIES": "0"}, "fixed"),
            ("miss to PostgreSQL", {"ENRICH_CACHE_ENABLED": "false"}, "known"),
        ):
            server = enrich_server({**base_env, **env})
            try:
                token = token_for(server.port, client)
                script = scenario_script(mode, token, args.profiles)
                results.append(wrk(name, server.port, script, c, s))
            finally:
                server.stop()
    finally:
        flush = redis.Redis.from_url(REDIS_URL)
        keys = list(flush.scan_iter(match=prefix + "*", count=1000))
        if keys:
            flush.delete(*keys)
        flush.close()
    bare_rounds = rounds["bare ASGI"]
    ratios = {
        name: [r.rps / bare.rps for r, bare in zip(rounds[name], bare_rounds, strict=True)]
        for name in ("L1 hit", "L1 hit, logs/metrics/limits off")
    }
    return results, ratios


def report(results: list[Result], args: argparse.Namespace) -> None:
    bare = {
        r.connections: r
        for r in results
        if r.name.startswith("bare ASGI") and "stock" not in r.name
    }
    print(
        f"\nwrk -t1 -c{args.connections} -d{args.seconds}s, 1 uvicorn worker"
        " (uvloop, httptools, one write per response),"
        f" {args.profiles:,} profiles, PostgreSQL + Redis\n"
    )
    print("| scenario | connections | rps | x bare | p50 ms | p99 ms | errors |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        ratio = r.rps / bare[r.connections].rps if r.connections in bare else float("nan")
        print(
            f"| {r.name} | {r.connections} | {r.rps:,.0f} | {ratio:.2f} | {r.p50_ms:.3f} |"
            f" {r.p99_ms:.2f} | {r.errors} |"
        )
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "hotpath.json").write_text(json.dumps([asdict(r) for r in results], indent=2))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("\n(matplotlib not installed: no chart; pip install -e '.[bench]')")
        return
    many = [r for r in results if r.connections == args.connections]
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    names = [r.name for r in many]
    left.barh(names, [r.rps for r in many], color="#3b7dd8")
    left.set_xlabel("requests per second")
    left.invert_yaxis()
    right.barh(names, [r.p99_ms for r in many], color="#d8823b")
    right.set_xlabel("p99 latency (ms)")
    right.invert_yaxis()
    right.set_yticklabels([])
    figure.suptitle(f"enrich hot path vs a bare ASGI app ({args.connections} connections)")
    figure.tight_layout()
    figure.savefig(OUT / "hotpath.png", dpi=110)
    print(f"\nchart: {OUT / 'hotpath.png'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profiles", type=int, default=100_000)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--database", default="enrich_bench_hot")
    parser.add_argument("--rounds", type=int, default=3, help="turns of bare and L1 hit")
    args = parser.parse_args()
    results, ratios = run(args)
    report(results, args)
    for name, each in ratios.items():
        print(
            f"{name} / bare, per round: {', '.join(f'{r:.2f}' for r in each)}"
            f" (median {statistics.median(each):.2f})"
        )


if __name__ == "__main__":
    main()
