"""``python -m tests.cluster up|down|status``: the namespace cluster from the command line.

``up`` builds it and leaves it running (it prints the addresses and an OAuth client for it);
``down`` removes it, or whatever an earlier run left. As root, from the checkout's root.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from tests.cluster import harness, netns
from tests.fixtures.service import create_client


def up() -> None:
    cluster = harness.Cluster()
    cluster.up()
    assert cluster.balancer is not None
    assert cluster.redis is not None
    client_id, secret = asyncio.run(
        create_client(cluster.database_url, "profiles:read profiles:write events:write")
    )
    lines = [
        f"balancer    {cluster.balancer.base_url}  (HAProxy, checks /readyz)",
        *(f"{app.name:<11} {app.base_url}  (enrich serve --workers 2)" for app in cluster.apps),
        f"primary     {cluster.database_url}",
        f"replica     {cluster.replica_url}",
        f"redis       {cluster.redis.url} + {cluster.redis.seeds}",
        f"client      {client_id} {secret}",
        f"state       {cluster.directory} (logs)",
        "stop with   python -m tests.cluster down",
    ]
    print("\n".join(lines))  # noqa: T201  (the command's output)


def status() -> None:
    names = netns.ours()
    print("\n".join(f"{n}: {len(netns.pids_in(n))} processes" for n in names) or "no cluster")  # noqa: T201


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.cluster")
    parser.add_argument("command", choices=["up", "down", "status"])
    command = parser.parse_args(argv).command
    with netns.exclusive():
        if command == "up":
            up()
        elif command == "down":
            harness.down()
        else:
            status()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
