"""Print the pins of a hashed lock that apply to another interpreter, without their markers.

Usage: python pins-for.py LOCK ENVIRONMENT_JSON   (the JSON from target-env.py). The output is a
requirements file for ``pip download --require-hashes`` on the host.
"""

import json
import sys
from pathlib import Path

from packaging.requirements import Requirement


def entries(lock: Path) -> list[str]:
    """One string per requirement: continuation lines joined, comments dropped."""
    found: list[str] = []
    for line in lock.read_text(encoding="utf-8").splitlines():
        text = line.split("#", 1)[0].rstrip()
        if not text:
            continue
        text = text.rstrip("\\").strip()
        if line[0].isspace():
            found[-1] += " " + text
        else:
            found.append(text)
    return found


def main(lock: str, environment: str) -> None:
    target = json.loads(Path(environment).read_text(encoding="utf-8"))
    for entry in entries(Path(lock)):
        spec, *hashes = entry.split(" --hash=")
        requirement = Requirement(spec)
        if requirement.marker is None or requirement.marker.evaluate(target):
            pinned = f"{requirement.name}{requirement.specifier}"
            print(" ".join([pinned, *(f"--hash={h.strip()}" for h in hashes)]))


if __name__ == "__main__":
    main(*sys.argv[1:3])
