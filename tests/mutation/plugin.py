"""pytest plugin for ``make mutation`` (loaded by [tool.mutmut] pytest_add_cli_args only).

- mutmut maps each test to the functions it calls (its stats run) by what the test's own
  process calls. A test that starts a process (``enrich serve``, ``python -c``) may reach a
  function only there, where no call can be seen: such a test is mapped to every mutated
  function, so that the mutants run it (the process runs the mutant: make mutation points
  PYTHONPATH at the mutated copy, and the process inherits MUTANT_UNDER_TEST). In the stats run
  itself those processes run the unmutated code: recording a call needs mutmut's configuration,
  which a server started in a temporary directory does not find (it fails to start). The test
  process keeps the mode: mutmut keeps a process-local copy of it.
- A mutant's tests run fastest first: mutmut hands them over in no particular order, and a
  killed mutant is known at its first failing test (``-x``). The durations are the ones mutmut
  measured while mapping tests to functions (mutmut-stats.json in the mutants' copy).
- Each failure is noted with the mutant it killed (mutation-kills.log in the mutants' copy):
  mutmut keeps only the verdict, and a kill by a test that fails on its own on a busy machine
  (a wall-clock bound) is no kill; the log says which test to suspect.
- A hang after the last test, when the session's event loop is closed, ends the run with the
  tests' verdict. Closing the loop waits, with no limit, for every task left over, and an
  invalidation listener that did not end on cancel (InvalidationBus.stop gives up on it after
  2 s) has been seen to wait there for good on two busy cores. Without this guard mutmut's
  stats or clean run would never end, and a mutant's run would count as a timeout instead of
  the verdict its tests gave.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from mutmut.state import state

STATS = Path("mutmut-stats.json")
# Where the guard notes each run it ended (pytest's capture holds stderr at that point).
HANGS = Path("mutation-hangs.log")
KILLS = Path("mutation-kills.log")
# The names mutmut gives its own runs: mapping tests to functions, the forced failure, clean.
NOT_A_MUTANT = {"", "stats", "fail", "list_all_tests", "mutant_generation"}
# Set when the running test started a process (stats run only).
STARTED = threading.Event()
# How long closing the session may take after its last test before the run ends without it.
CLOSING_SECONDS = 60.0


def pytest_configure() -> None:
    if os.environ.get("MUTANT_UNDER_TEST") == "stats":
        del os.environ["MUTANT_UNDER_TEST"]
        watch_processes()


def watch_processes() -> None:
    """Note that the running test started a process (asyncio's subprocesses are Popen too)."""
    start = subprocess.Popen.__init__

    def noting(self: subprocess.Popen[Any], *args: Any, **kwargs: Any) -> None:
        STARTED.set()
        start(self, *args, **kwargs)

    subprocess.Popen.__init__ = noting  # type: ignore[method-assign]


def map_to_every_function() -> None:
    """Before mutmut's own teardown hook files the functions the test called (its stats)."""
    state()._stats.update(state().current_function_hashes)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    try:
        durations = json.loads(STATS.read_text())["duration_by_test"]
    except (OSError, ValueError, KeyError):
        return  # the stats run itself: nothing measured yet
    items.sort(key=lambda item: durations.get(item.nodeid, 0.0))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    mutant = os.environ.get("MUTANT_UNDER_TEST", "")
    # Also a failure of mutmut's own runs but the forced one: a test that fails unmutated
    # stops the whole run ("failed to collect stats", "Failed to run clean test"), and mutmut
    # does not say which.
    if report.failed and mutant != "fail":
        reason = report.longreprtext.strip().splitlines()[-1:] or [""]
        with KILLS.open("a") as log:
            name = mutant if mutant not in NOT_A_MUTANT else f"(unmutated: {mutant or 'clean'})"
            log.write(f"{name}\t{report.nodeid}\t{report.when}\t{reason[0][:200]}\n")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """After the last test, its teardown closes the session-scoped fixtures (the loop)."""
    if STARTED.is_set():
        STARTED.clear()
        map_to_every_function()
    if nextitem is not None:
        return (yield)
    with closing_watched(item.session):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_sessionfinish(session: pytest.Session) -> Iterator[None]:
    """After a failure (``-x``), the session-scoped fixtures close here instead."""
    with closing_watched(session):
        return (yield)


@contextmanager
def closing_watched(session: pytest.Session) -> Iterator[None]:
    watchdog = threading.Timer(CLOSING_SECONDS, end_with_verdict, args=(session,))
    watchdog.daemon = True
    watchdog.start()
    try:
        yield
    finally:
        watchdog.cancel()


def end_with_verdict(session: pytest.Session) -> None:
    """Exit as pytest would have: 1 if a test failed, else 0 (mutmut: killed, survived)."""
    failed = session.testsfailed
    mutant = os.environ.get("MUTANT_UNDER_TEST", "")
    with HANGS.open("a") as log:
        log.write(
            f"{time.strftime('%H:%M:%S')} {mutant or '-'}: not closed within "
            f"{CLOSING_SECONDS:.0f} s, ended with {failed} failed\n"
        )
    os._exit(1 if failed else 0)
