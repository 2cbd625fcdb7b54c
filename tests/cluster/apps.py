"""The app hosts (``enrich serve --workers 2`` in a namespace each) and the balancer (HAProxy in
a namespace of its own, health-checking ``/readyz``)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.cluster.netns import Host
from tests.fixtures.service import ENRICH, STARTUP_SECONDS, children_of, worker_processes

APP_PORT = 8000
BALANCER_PORT = 8000
WORKERS = 2
# How the balancer watches the hosts: a /readyz every CHECK_MS, down after FALL failures, up
# after RISE successes. With the service's 5 s drain (ENRICH_SHUTDOWN_DRAIN_SECONDS), a host
# stopping is out of rotation well before it stops accepting.
CHECK_MS = 500
FALL = 2
RISE = 2

HAPROXY_CONFIG = """\
global
    maxconn 4096
    stats socket {socket} mode 600 level admin
    log stdout format raw local0 info

defaults
    mode http
    log global
    option httplog
    option dontlog-normal
    timeout connect 1s
    timeout client 30s
    # Past the service's own deadlines (even the tests' relaxed ones): a host that took a
    # request and then went silent costs that request this long, then another host answers.
    timeout server 10s
    timeout check 1s
    # A request the chosen host did not take (refused, reset before an answer, no answer
    # at all) goes to another host: what a host that dies or stops costs a caller.
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response response-timeout
    option http-buffer-request

frontend api
    bind {address}:{port}
    default_backend apps

backend apps
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
    default-server inter {check_ms}ms fastinter {check_ms}ms fall {fall} rise {rise}
    # Which host answered, for the drills (a real deployment would leave this out).
    http-response set-header X-Served-By %s
{servers}
"""


@dataclass
class AppHost:
    """``enrich serve`` in a namespace, with the settings every host shares."""

    host: Host
    env: dict[str, str]
    directory: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    _log: Path = field(init=False)

    def __post_init__(self) -> None:
        self._log = self.directory / f"{self.host.name}.log"

    @property
    def name(self) -> str:
        return self.host.name

    @property
    def base_url(self) -> str:
        return f"http://{self.host.address}:{APP_PORT}"

    def log_text(self) -> str:
        return self._log.read_text(errors="replace")[-20_000:] if self._log.exists() else ""

    def start(self) -> None:
        argv = [str(ENRICH), "serve", "--host", "0.0.0.0", "--port", str(APP_PORT)]
        with self._log.open("ab") as out:
            self.process = subprocess.Popen(
                self.host.command(*argv, "--workers", str(WORKERS)),
                env=self.env,
                cwd=self.directory,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.starts += 1

    def workers(self) -> set[int]:
        assert self.process is not None
        return worker_processes(self.process.pid)

    def wait_ready(self) -> None:
        """Until /readyz answers 200 and both workers run (hang guard: STARTUP_SECONDS)."""
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            assert self.process is not None
            assert self.process.poll() is None, f"{self.name} exited:\n" + self.log_text()
            with contextlib.suppress(httpx.HTTPError):
                ready = httpx.get(f"{self.base_url}/readyz", timeout=2).status_code == 200
                if ready and len(self.workers()) >= WORKERS:
                    return
            time.sleep(0.1)
        raise AssertionError(f"{self.name} did not become ready:\n" + self.log_text())

    def kill(self) -> None:
        """SIGKILL to the host's every process at once: a host that dies."""
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)
        self.process = None

    def terminate(self) -> None:
        """SIGTERM to ``enrich serve``: a graceful stop (the workers drain first)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)

    def wait_exit(self, within: float = 60) -> None:
        """Until ``enrich serve`` has exited (hang guard: ``within``, past the drain and the
        graceful shutdown's 5 + 20 s)."""
        assert self.process is not None
        try:
            self.process.wait(timeout=within)
        except subprocess.TimeoutExpired:
            left = {pid: _command(pid) for pid in children_of(self.process.pid)}
            for pid in left:  # each Python thread's stack to the log (PYTHONFAULTHANDLER)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGABRT)
            time.sleep(1)
            raise AssertionError(
                f"{self.name} still runs {within} s after SIGTERM; its children: {left}\n"
                + self.log_text()
            ) from None
        self.stop()

    def stop(self) -> None:
        if self.process is None:
            return
        pids = {self.process.pid, *children_of(self.process.pid)}
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.wait(timeout=30)
        self.process = None


def _command(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:120]
    return "?"


@dataclass
class Balancer:
    """HAProxy in front of the app hosts."""

    host: Host
    apps: list[AppHost]
    directory: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host.address}:{BALANCER_PORT}"

    @property
    def socket_path(self) -> Path:
        return self.directory / "haproxy.sock"

    def config(self) -> str:
        servers = "\n".join(
            f"    server {app.name} {app.host.address}:{APP_PORT} check" for app in self.apps
        )
        return HAPROXY_CONFIG.format(
            socket=self.socket_path,
            address=self.host.address,
            port=BALANCER_PORT,
            check_ms=CHECK_MS,
            fall=FALL,
            rise=RISE,
            servers=servers,
        )

    def start(self) -> None:
        binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
        assert Path(binary).exists(), "haproxy not found (apt-get install haproxy)"
        path = self.directory / "haproxy.cfg"
        path.write_text(self.config())
        check = subprocess.run([binary, "-c", "-f", str(path)], capture_output=True, check=False)
        assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()
        with (self.directory / "haproxy.log").open("ab") as out:
            self.process = subprocess.Popen(
                self.host.command(binary, "-db", "-f", str(path)),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def states(self) -> dict[str, str]:
        """Each app host's state as HAProxy sees it: ``UP``, ``DOWN``, ``UP 1/2``, ``MAINT``..."""
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(str(self.socket_path))
            sock.sendall(b"show stat\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        lines = data.decode().splitlines()
        header = lines[0].lstrip("# ").split(",")
        states = {}
        for line in lines[1:]:
            row = dict(zip(header, line.split(","), strict=False))
            if row.get("pxname") == "apps" and row.get("svname") not in ("BACKEND", None):
                states[row["svname"]] = row["status"]
        return states

    def wait_states(self, wanted: dict[str, str], within: float = STARTUP_SECONDS) -> float:
        """Until HAProxy sees each named host in the wanted state; returns the seconds taken."""
        start = time.monotonic()
        while True:
            with contextlib.suppress(OSError):
                states = self.states()
                if all(states.get(name) == state for name, state in wanted.items()):
                    return time.monotonic() - start
            if time.monotonic() - start > within:
                raise AssertionError(f"HAProxy: {wanted} not within {within} s")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)
        self.process = None
