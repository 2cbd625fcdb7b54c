"""A real `enrich serve` process on a free port, on a fresh database with the demo data set.

The QA tools (newman, Chromium, Locust, schemathesis) talk to it over HTTP exactly as they
would to the README's running service: `enrich migrate`, `enrich demo --profiles 200`, then
`enrich serve`, each a subprocess with its own environment and working directory (where
`enrich demo` keeps the demo client's credentials, as `make run` does).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.fixtures.service import (
    ENRICH,
    RELAXED_DB_POOL_TIMEOUT_SECONDS,
    RELAXED_DEADLINE_MS,
    free_port,
    service_env,
)

BIN = ENRICH.parent
ROOT = Path(__file__).resolve().parents[2]
NODE_BIN = ROOT / "node_modules" / ".bin"
ARTIFACTS = ROOT / "test-artifacts"
DEMO_PROFILES = 200
STARTUP_SECONDS = 60


def require(path: Path, install: str) -> Path:
    """The tool at ``path``; a missing tool fails the test (it is never skipped)."""
    assert path.exists(), f"{path} is missing: {install}"
    return path


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, "Chromium is missing: apt-get install -y chromium"
    return found


@dataclass
class LiveServer:
    base_url: str
    client_id: str
    client_secret: str
    workdir: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes]
    log: Path
    extra: dict[str, str] = field(default_factory=dict)

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run a command in the server's environment and working directory."""
        return subprocess.run(
            args,
            env=self.env,
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")[-5000:]


def server_env(database_url: str, port: int, **settings: str) -> dict[str, str]:
    # The QA tools are not about the enrich deadline (250 ms in production): a read that a
    # busy CI machine slows past it would be a 503 they count as a failure.
    settings.setdefault("deadline_ms", str(RELAXED_DEADLINE_MS))
    settings.setdefault("db_pool_timeout", str(RELAXED_DB_POOL_TIMEOUT_SECONDS))
    env = service_env(
        {
            "ENRICH_DATABASE_URL": database_url,
            "ENRICH_PUBLIC_URL": f"http://127.0.0.1:{port}",
            "ENRICH_HOST": "127.0.0.1",
            "ENRICH_PORT": str(port),
            **{f"ENRICH_{name.upper()}": value for name, value in settings.items()},
        }
    )
    env["NO_UPDATE_NOTIFIER"] = "1"  # Node tools must not look for a proxy or phone home.
    return env


@contextlib.contextmanager
def live_server(workdir: Path, database_url: str, **settings: str) -> Iterator[LiveServer]:
    """Migrate, load the demo data, serve; stop the server afterwards."""
    port = free_port()
    env = server_env(database_url, port, **settings)
    for command in (["migrate"], ["demo", "--profiles", str(DEMO_PROFILES)]):
        done = subprocess.run(
            [str(ENRICH), *command],
            env=env,
            cwd=workdir,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, f"enrich {command[0]} failed:\n{done.stdout}\n{done.stderr}"
    credentials = json.loads((workdir / "var" / "demo-client.json").read_text())
    log = workdir / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(ENRICH), "serve"], env=env, cwd=workdir, stdout=out, stderr=subprocess.STDOUT
        )
    server = LiveServer(
        f"http://127.0.0.1:{port}",
        credentials["client_id"],
        credentials["client_secret"],
        workdir,
        env,
        process,
        log,
    )
    try:
        wait_until_up(server)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def wait_until_up(server: LiveServer) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        assert server.process.poll() is None, "the server exited:\n" + server.log_text()
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{server.base_url}/readyz", timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise AssertionError("the server did not start:\n" + server.log_text())
