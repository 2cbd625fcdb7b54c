"""The releases of the libraries whose internals the service relies on, checked at start.

``app/platform/http.py`` subclasses uvicorn's httptools protocol (its ``cycle``, ``tasks``,
``shutdown`` and ``on_headers_complete``), the enrich fast path speaks ASGI below Starlette's
routing, and ``app/platform/redis_pipe.py`` builds on redis-py's URL parsing and connection classes.
A release outside these ranges may change any of that without an error of its own, so the
service refuses to start on one instead. The upper bounds are the next minor release after the
one the suite last passed on (``requirements/dev.lock``); raise one after ``make test`` passes
with the newer release.
"""

from __future__ import annotations

import re
from importlib.metadata import PackageNotFoundError, version

# name -> (lowest supported release, first unsupported release)
SUPPORTED: dict[str, tuple[str, str]] = {
    "uvicorn": ("0.30", "0.55"),
    "starlette": ("0.40", "1.11"),
    "redis": ("5.0", "8.2"),
}


class UnsupportedDependencyError(RuntimeError):
    """An installed library is outside the range the service was tested with."""


def release(text: str) -> tuple[int, ...]:
    """The numeric release of a version string: ``"8.1.0rc1"`` -> ``(8, 1, 0)``."""
    numbers = re.match(r"\d+(?:\.\d+)*", text)
    return tuple(int(n) for n in numbers.group().split(".")) if numbers else ()


def check_supported(supported: dict[str, tuple[str, str]] | None = None) -> None:
    """Raise ``UnsupportedDependencyError`` naming every library outside its range."""
    problems = []
    for name, (low, high) in (supported or SUPPORTED).items():
        spec = f"{name}>={low},<{high}"
        try:
            installed = version(name)
        except PackageNotFoundError:
            problems.append(f"{name} is not installed (enrich supports {spec})")
            continue
        if not release(low) <= release(installed) < release(high):
            problems.append(f"{name} {installed} is installed; enrich supports {spec}")
    if problems:
        raise UnsupportedDependencyError(
            "; ".join(problems) + ". Install the locked versions: "
            "pip install --require-hashes -r requirements/service.lock"
        )
