"""Instructions per enrich L1 hit on the fast path, counted by valgrind's callgrind.

    .venv/bin/python bench/fastpath_instructions.py [TREE ...] [--only POST] [--small 200]
                                                    [--large 10200] [--tracing RATIO]

A count of instructions does not move with what else the machine is doing, so a change that
should cost the hot path nothing can be checked on a busy machine, where timings cannot. For
each tree (a directory holding app/; default: this one) it runs ``bench/fastpath_micro.py``
under callgrind twice, with ``--small`` and ``--large`` requests of one scenario, and prints
(large - small) / (large - small requests): the start-up (imports, migrations) cancels out.
Slow: about two minutes a run, almost all of it the start-up under valgrind. ``--tracing``
passes the sample ratio on (trees with tracing only), with spans exported to a sink started here
(bench/otlp_sink.py, outside valgrind).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from otlp_sink import start  # noqa: E402  (beside this script)


def instructions(tree: Path, requests: int, only: str, tracing: list[str]) -> int:
    """The instructions a run of fastpath_micro.py with ``requests`` requests executes."""
    with tempfile.TemporaryDirectory() as directory:
        out = Path(directory) / "callgrind.out"
        env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONHASHSEED": "0"}
        micro = (str(HERE / "fastpath_micro.py"), "--requests", str(requests), "--rounds", "1")
        command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable]
        run = [*command, *micro, "--only", only, *tracing]
        subprocess.run(run, env=env, check=True, capture_output=True)
        found = re.search(r"^summary: (\d+)$", out.read_text(), re.MULTILINE)
        assert found, "callgrind wrote no summary"
        return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("trees", nargs="*", type=Path, default=[ROOT])
    parser.add_argument("--only", default="POST", help="the scenario (fastpath_micro.py's name)")
    parser.add_argument("--small", type=int, default=200)
    parser.add_argument("--large", type=int, default=10_200)
    parser.add_argument("--tracing", type=float, help="trace with this sample ratio (0 to 1)")
    options = parser.parse_args()
    traced = "" if options.tracing is None else f", tracing at {options.tracing}"
    print(f"instructions per L1 hit, scenario {options.only!r}{traced}")
    sink, tracing = None, []
    if options.tracing is not None:
        sink, endpoint = start()
        tracing = ["--tracing", str(options.tracing), "--tracing-endpoint", endpoint]
    try:
        for tree in options.trees:
            small = instructions(tree, options.small, options.only, tracing)
            large = instructions(tree, options.large, options.only, tracing)
            per_request = (large - small) / (options.large - options.small)
            print(f"{tree}: {per_request:,.0f}", flush=True)
    finally:
        if sink is not None:
            sink.terminate()


if __name__ == "__main__":
    main()
