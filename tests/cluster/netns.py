"""The cluster's network: one Linux bridge and a network namespace per host, on 10.77.0.0/24.

Every name starts with ``enrc-`` (the namespaces, the bridge, the bridge's end of each veth
pair), so a later run can find what an earlier one left (a crashed test, a killed CLI) and
remove it: the processes still in those namespaces are killed first. The namespaces have no
default route and the machine does not forward (``net.ipv4.ip_forward`` is left as it is), so
no packet of theirs can leave the machine; the bridge is the root namespace's only way in.
Needs root (``ip netns``).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PREFIX = "enrc-"
BRIDGE = f"{PREFIX}br"
NETWORK = "10.77.0"
ROOT_ADDRESS = f"{NETWORK}.1"  # the bridge: where the tests and the CLI speak from
LOCK = Path("/run/lock/enrich-netns-cluster.lock")
LOCK_WAIT_SECONDS = 900.0  # another run holds the cluster's names: wait for it, not forever


@dataclass(frozen=True)
class Host:
    """A network namespace with one address on the bridge."""

    name: str  # short: "data", "lb", "app1"
    address: str

    @property
    def netns(self) -> str:
        return f"{PREFIX}{self.name}"

    def command(self, *argv: str) -> list[str]:
        """``argv`` run inside the namespace (``ip netns exec`` execs it: same pid)."""
        return ["ip", "netns", "exec", self.netns, *argv]


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result


def ours() -> list[str]:
    """The namespaces of this harness that exist now (ours or an earlier run's)."""
    listed = ip("netns", "list").stdout.split("\n")
    return [line.split()[0] for line in listed if line.startswith(PREFIX)]


def pids_in(netns: str) -> list[int]:
    out = ip("netns", "pids", netns, check=False).stdout
    return [int(pid) for pid in out.split()]


def kill_all_in(netns: str) -> None:
    """SIGKILL every process in the namespace, until none is left (hang-guarded)."""
    deadline = time.monotonic() + 30
    while pids := pids_in(netns):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            raise AssertionError(f"processes survive in {netns}: {pids}")
        time.sleep(0.05)


def remove_all() -> None:
    """Kill what runs in our namespaces, delete them, the bridge and any link of ours."""
    for netns in ours():
        kill_all_in(netns)
        ip("netns", "del", netns, check=False)
    links = ip("-o", "link", "show").stdout.split("\n")
    for line in links:
        parts = line.split(":")
        if len(parts) > 1 and parts[1].strip().split("@")[0].startswith(PREFIX):
            ip("link", "del", parts[1].strip().split("@")[0], check=False)


def create(hosts: list[Host]) -> None:
    """The bridge (with the root namespace's address) and one namespace per host."""
    ip("link", "add", BRIDGE, "type", "bridge")
    ip("addr", "add", f"{ROOT_ADDRESS}/24", "dev", BRIDGE)
    ip("link", "set", BRIDGE, "up")
    for host in hosts:
        ip("netns", "add", host.netns)
        ip("link", "add", host.netns, "type", "veth", "peer", "name", "eth0", "netns", host.netns)
        ip("link", "set", host.netns, "master", BRIDGE)
        ip("link", "set", host.netns, "up")
        inside = ("-n", host.netns)
        ip(*inside, "link", "set", "lo", "up")
        ip(*inside, "addr", "add", f"{host.address}/24", "dev", "eth0")
        ip(*inside, "link", "set", "eth0", "up")


def unplug(host: Host) -> None:
    """Cut the host's cable: its packets go nowhere (a host that died without a word)."""
    ip("link", "set", host.netns, "down")


def plug(host: Host) -> None:
    ip("link", "set", host.netns, "up")


@contextlib.contextmanager
def exclusive() -> Iterator[None]:
    """Hold the harness's lock: one cluster at a time owns the ``enrc-`` names."""
    LOCK.parent.mkdir(parents=True, exist_ok=True)
    with LOCK.open("w") as handle:
        deadline = time.monotonic() + LOCK_WAIT_SECONDS
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"{LOCK} held for {LOCK_WAIT_SECONDS} s") from None
                time.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
