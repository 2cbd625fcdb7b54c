"""The wheel, installed into a clean venv with no checkout around: what a user of the package gets.

The wheel is built from this checkout, installed with --no-deps on top of exactly
requirements/service.lock (by uv, from its cache after the first run), and then run from an
empty directory with none of the test run's environment: ``enrich --version``, ``enrich migrate``
(the migrations come from inside the package), ``enrich demo``, ``enrich serve``, and a token and
an enrich call with the demo client.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

import app
from tests.fixtures.service import RecordProperty, free_port

ROOT = Path(__file__).resolve().parent.parent
SERVICE_LOCK = ROOT / "requirements" / "service.lock"
UV = Path(sys.executable).with_name("uv")
SETUP_SECONDS: list[float] = []  # building and installing the wheel: reported, not bounded


def run(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 120) -> str:
    done = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"{' '.join(args)} exited {done.returncode}:\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv holding the locked service requirements and the enrich wheel, nothing else."""
    if shutil.which(str(UV)) is None:
        pytest.fail("uv is not installed next to the test's Python: make install")
    base = tmp_path_factory.mktemp("wheel")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ENRICH_", "PYTHON"))}
    started = time.monotonic()
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check"]
    # make install puts the build backend (requirements/build.in) in the venv: no download then.
    isolation = [] if importlib.util.find_spec("hatchling") is None else ["--no-build-isolation"]
    run([*pip_wheel, "--no-deps", *isolation, "-w", str(base / "dist"), str(ROOT)], base, env)
    (wheel,) = (base / "dist").glob("enrich-*.whl")
    assert wheel.name.startswith(f"enrich-{app.__version__}-")
    venv = base / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], base, env)
    uv = [
        str(UV),
        "pip",
        "install",
        "--quiet",
        "--native-tls",
        "--python",
        str(venv / "bin/python"),
    ]
    run([*uv, "--no-deps", "--require-hashes", "-r", str(SERVICE_LOCK)], base, env, timeout=300)
    run([*uv, "--no-deps", str(wheel)], base, env)
    SETUP_SECONDS.append(time.monotonic() - started)
    return venv


@pytest.fixture
def clean_env(installed: Path) -> dict[str, str]:
    """Only the venv on PATH: no ENRICH_* settings, PYTHONPATH or virtualenv of the test run."""
    keep = ("HOME", "LANG", "LC_ALL", "TMPDIR", "SSL_CERT_FILE")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env["PATH"] = f"{installed / 'bin'}:/usr/bin:/bin"
    return env


def test_the_package_comes_from_the_venv(
    installed: Path, clean_env: dict[str, str], tmp_path: Path, record_property: RecordProperty
) -> None:
    record_property("wheel_venv_seconds", round(SETUP_SECONDS[0], 1))
    where = run(
        [str(installed / "bin/python"), "-c", "import app; print(app.__file__)"],
        tmp_path,
        clean_env,
    )
    package = Path(where.strip()).parent
    assert package.is_relative_to(installed), package
    assert (package / "_migrations" / "env.py").is_file()
    assert (package / "_migrations" / "alembic.ini").is_file()


def test_version_migrate_demo_serve(
    installed: Path, clean_env: dict[str, str], tmp_path: Path
) -> None:
    enrich = str(installed / "bin/enrich")
    assert run([enrich, "--version"], tmp_path, clean_env).strip() == f"enrich {app.__version__}"
    run([enrich, "migrate"], tmp_path, clean_env)
    assert (tmp_path / "var").is_dir(), "the SQLite default lives under ./var"
    run([enrich, "demo", "--profiles", "20"], tmp_path, clean_env)
    demo = json.loads((tmp_path / "var" / "demo-client.json").read_text())

    port = free_port()
    log = (tmp_path / "serve.log").open("wb")
    server = subprocess.Popen(
        [enrich, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        cwd=tmp_path,
        env={**clean_env, "ENRICH_PUBLIC_URL": f"http://127.0.0.1:{port}"},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
            deadline = time.monotonic() + 60
            while True:
                assert server.poll() is None, (tmp_path / "serve.log").read_text()[-4000:]
                try:
                    if http.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "enrich serve did not start"
                time.sleep(0.2)
            token = http.post(
                "/oauth/token",
                data={"grant_type": "client_credentials"},
                auth=(demo["client_id"], demo["client_secret"]),
            )
            assert token.status_code == 200, token.text
            answer = http.post(
                "/v1/enrich",
                json={"identifiers": {"email": "demo@example.com"}},
                headers={"Authorization": f"Bearer {token.json()['access_token']}"},
            )
            assert answer.status_code == 200, answer.text
            assert answer.json()["found"] is True
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            # uvicorn stops gracefully, then raises the signal it caught again
            assert server.wait(timeout=30) in (0, -signal.SIGTERM)
        finally:
            if server.poll() is None:
                os.killpg(server.pid, signal.SIGKILL)
            log.close()
