"""Two checkouts of the service, side by side: which one answers a scenario faster.

    .venv/bin/python bench/compare_trees.py OLD_TREE NEW_TREE [--scenario l1] [--runs 8]
                                            [--seconds 3] [--profiles 10000]

For a change that should cost nothing (a refactoring, a move of code), throughput alone says
little on a small machine: between two minutes the same server's rps moves by 20 % or more.
This starts `enrich serve` (one worker, as bench/hotpath.py runs it) from each tree, both up at
once on the same PostgreSQL database and Redis, and measures them in turns with wrk, switching
the order every run. For each run it prints the rps and the server's CPU time per answered
request (its processes' user + system time over the run, from /proc, divided by the requests
wrk counted): CPU per request does not depend on how the scheduler shared the cores, so it is
the steadier figure. A tree is any directory holding app/ (`git worktree add /tmp/old REV`);
the venv's `enrich` runs it through PYTHONPATH.

Scenarios: l1 (the demo guest from the worker's cache, production's access line, metrics and
limiter on), l1-ops-off (the same with them off), l2 (L1 off: one Redis read), miss (cache
off: a random known guest from PostgreSQL).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import tempfile
import uuid
from pathlib import Path

from enrich_pg import make_client
from hotpath import (
    OPS_OFF,
    REDIS_URL,
    Server,
    enrich_server,
    ensure_demo_guest,
    ensure_profiles,
    scenario_script,
    token_for,
)

SCENARIOS = {
    "l1": ("fixed", {}),
    "l1-ops-off": ("fixed", OPS_OFF),
    "l2": ("fixed", {"ENRICH_CACHE_L1_MAX_ENTRIES": "0"}),
    "miss": ("known", {"ENRICH_CACHE_ENABLED": "false"}),
}
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system time of a process and its children (uvicorn's worker), so far."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    total = 0.0
    for process in (pid, *map(int, children)):
        fields = Path(f"/proc/{process}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / TICK
    return total


def measure(server: Server, script: str, seconds: int) -> tuple[float, float]:
    """One wrk run: (requests a second, server CPU microseconds per request)."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(script)
    url = f"http://127.0.0.1:{server.port}/v1/enrich"
    before = cpu_seconds(server.process.pid)
    output = subprocess.run(
        ["wrk", "-t1", "-c32", f"-d{seconds}s", "-s", handle.name, url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    spent = cpu_seconds(server.process.pid) - before
    os.unlink(handle.name)
    requests = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    return rps, spent / requests * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("trees", nargs=2, type=Path)
    parser.add_argument("--scenario", choices=SCENARIOS, default="l1")
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--profiles", type=int, default=10_000)
    parser.add_argument("--database", default="enrich_bench_trees")
    args = parser.parse_args()
    mode, scenario_env = SCENARIOS[args.scenario]

    url = asyncio.run(ensure_profiles(args.database, args.profiles))
    asyncio.run(ensure_demo_guest(url))
    client = asyncio.run(make_client(url))
    env = {
        "ENRICH_DATABASE_URL": url,
        "ENRICH_REDIS_URL": REDIS_URL,
        "ENRICH_REDIS_PREFIX": f"enrich-trees-{uuid.uuid4().hex[:8]}:",
        "ENRICH_ENVIRONMENT": "production",
        "ENRICH_LOG_LEVEL": "INFO",
        "ENRICH_WORKERS": "1",
        "ENRICH_RATE_LIMIT_RPS": "1000000",
        "ENRICH_RATE_LIMIT_BURST": "1000000",
        **scenario_env,
    }
    trees = [str(tree.resolve()) for tree in args.trees]
    servers = {tree: enrich_server({**env, "PYTHONPATH": tree}) for tree in trees}
    try:
        scripts = {
            tree: scenario_script(mode, token_for(server.port, client), args.profiles)
            for tree, server in servers.items()
        }
        for tree in trees:
            measure(servers[tree], scripts[tree], 2)  # warm-up: caches filled, code loaded
        figures: dict[str, list[tuple[float, float]]] = {tree: [] for tree in trees}
        for run in range(args.runs):
            for tree in trees if run % 2 == 0 else trees[::-1]:
                figures[tree].append(measure(servers[tree], scripts[tree], args.seconds))
    finally:
        for server in servers.values():
            server.stop()
    print(f"{args.scenario}: {args.runs} runs of wrk -t1 -c32 -d{args.seconds}s each, in turns")
    for tree in trees:
        rps = [r for r, _ in figures[tree]]
        cpu = [c for _, c in figures[tree]]
        print(
            f"{tree}\n  rps      median {statistics.median(rps):8,.0f}   "
            + " ".join(f"{r:,.0f}" for r in rps)
            + f"\n  CPU µs   median {statistics.median(cpu):8.1f}   "
            + " ".join(f"{c:.1f}" for c in cpu)
        )


if __name__ == "__main__":
    main()
