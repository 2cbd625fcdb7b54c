"""The benchmark scripts still run against the code as it is (their figures are not checked)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_token_bench_runs_and_prints_every_measurement() -> None:
    run = subprocess.run(
        [sys.executable, "bench/token_bench.py", "--iterations", "2000", "--warmup", "20"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    rows = [
        line.split()[:2]
        for line in run.stdout.splitlines()
        if line.startswith(("sqlite", "postgres"))
    ]
    for backend in ("sqlite", "postgres+redis"):
        for measurement in ("issue", "authorize", "protected", "open"):
            assert [backend, measurement] in rows, run.stdout
