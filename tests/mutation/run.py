"""``make mutation``: mutmut over the modules where a silent mistake costs most (docs/mutation.md).

The modules come in groups, each with the tests that can catch its mistakes: mutmut runs a
mutant against the tests that called the mutated function, so a narrow selection keeps a
function that every request calls (token verification, logging set-up) from costing a run of
the whole suite per mutant.

Each group runs in a directory of its own, ``mutants/<group>/``: links to app/, tests/,
migrations/ and alembic.ini, and a pyproject.toml that is the project's with the group's modules
(``only_mutate``) and tests (``pytest_add_cli_args_test_selection``) added to [tool.mutmut].
mutmut copies that into ``mutants/<group>/mutants/`` and mutates there. So one group's results
survive another group's run, and a group's next run tests only the mutants of functions whose
code changed; ``--retest`` runs its surviving mutants again (after tests were added), and
``rm -rf mutants/<group>`` starts it afresh.

Usage: run.py [--max-children N] [--retest] [MODULE ...]. A MODULE (a path under app/) runs
the group that holds it and reports on that module; none runs and reports every group.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import subprocess
import sys
import time
import tomllib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WORK = ROOT / "mutants"
MUTMUT = Path(sys.executable).with_name("mutmut")
# What a group directory links to: what mutmut copies (source_paths, also_copy and tests/).
LINKED = ("app", "tests", "migrations", "alembic.ini")
# What counts for the score, as mutmut's own badge counts: a mutant some test failed on
# (killed), or that kept the tests from ending (timeout).
DECIDED = ("killed", "timeout")
# What --retest runs again: the mutants a test may now kill. Not those never run ("not
# checked", after a run was stopped): a plain run takes those.
AGAIN = ("survived", "timeout", "suspicious", "no tests", "segfault")


@dataclass(frozen=True)
class Group:
    name: str
    modules: tuple[str, ...]  # fnmatch patterns of paths under app/
    tests: tuple[str, ...]  # pytest arguments: the tests that can kill the group's mutants


GROUPS = (
    # Event idempotency: the ledger claim, repeats, bounded metrics.
    Group(
        "events",
        ("app/events/service.py", "app/events/repository.py"),
        # test_migration.py: the ids processed before ids were per client (EventService._repeat).
        ("tests/events/test_router.py", "tests/events/test_migration.py"),
    ),
    # Log redaction: exceptions by type, never their text; the access line; the database
    # error log (app/core/db.py), whose text would carry a statement's parameters.
    Group(
        "logging",
        ("app/platform/logging.py", "app/core/db.py"),
        (
            "tests/platform/test_logs.py",
            "tests/core/test_db_errors.py",
            "tests/core/test_exceptions.py",
        ),
    ),
    # The answer: field selection, the cap on its size (document.py: fit, render), and what
    # goes out (headers, gzip).
    Group(
        "answer",
        ("app/enrich/document.py", "app/enrich/fields.py", "app/enrich/response.py"),
        (
            "tests/enrich/test_fields.py",
            "tests/enrich/test_document.py",
            "tests/enrich/test_router.py",
        ),
    ),
    # The fast path's checks (bearer, scope, revocation, deadline, identifiers) before the
    # cached answer.
    Group(
        "fastpath",
        ("app/enrich/fastpath.py", "app/enrich/request.py"),
        (
            "tests/enrich/test_fastpath.py",
            "tests/enrich/test_fastpath_guards.py",
            "tests/enrich/test_bad_identifiers.py",
            "tests/enrich/test_memory.py",
            "tests/auth/test_revocation.py",
            "tests/auth/test_bearer.py",
            # The fast path's own allowlist and rate-limit admission (``_admission``), and the
            # access line it records (its duration).
            "tests/auth/test_allowlist.py",
            "tests/platform/test_ratelimit.py",
            "tests/platform/test_logs.py",
            "tests/auth/test_api_keys.py",  # the fast path's API-key holder (``_key_holder``)
            "tests/platform/test_correlation.py",  # its request and correlation ids
            "tests/platform/test_body_limit.py",  # a body past the limit, handed to the stack
        ),
    ),
    # Token signing, verification and revocation (no test that starts worker processes: those
    # map to every function and would run for each mutant).
    Group(
        "tokens",
        ("app/auth/tokens/*.py",),
        (
            "tests/auth/test_jwt.py",
            "tests/auth/test_keys.py",
            "tests/auth/test_token.py",
            "tests/auth/test_token_cache.py",
            "tests/auth/test_revocation.py",
            "tests/auth/test_introspection.py",
            "tests/auth/test_bearer.py",
            # The certificate binding as the verifier reads it (``_bound_to``, ``refuses``):
            # without it a run left every binding mutant alive, one that ignores ``cnf`` too.
            "tests/auth/test_bound_tokens.py",
        ),
    ),
    # Cache invalidation, split in two so that each half fits: the two-level store ...
    Group(
        "cache",
        (
            "app/enrich/cache/store.py",
            "app/enrich/cache/l1.py",
            "app/enrich/cache/l2.py",
            "app/enrich/cache/coalesce.py",
            "app/enrich/cache/remote.py",
        ),
        (
            "tests/enrich/cache/test_store.py",
            "tests/enrich/cache/test_l1.py",
            "tests/enrich/cache/test_guarantees.py",
        ),
    ),
    # ... and the bus to the other workers, with the writes (API, import) that must use it.
    Group(
        "bus",
        ("app/enrich/cache/bus.py", "app/enrich/cache/messages.py", "app/profiles/writes.py"),
        (
            "tests/enrich/cache/test_bus.py",
            "tests/enrich/cache/test_bus_redis.py",
            "tests/enrich/cache/test_messages.py",
            "tests/enrich/cache/test_guarantees.py",
            "tests/profiles/test_invalidation.py",
            "tests/ingest/test_import_invalidation.py",
        ),
    ),
    # The cache's spans (tracing on): what they say, and that they say no identifier.
    Group("tracing", ("app/enrich/cache/traced.py",), ("tests/platform/test_tracing.py",)),
)


def missing(group: Group) -> list[str]:
    """The group's module patterns that match no file, and its test paths that do not exist:
    a module moved or a test renamed (issue 10's layout change left every group pointing at
    paths that were gone, and mutmut mutated nothing or ran no test without a word)."""
    absent = [p for p in group.modules if not list(ROOT.glob(p))]
    return absent + [t for t in group.tests if not (ROOT / t.split("::")[0]).exists()]


def say(line: str) -> None:
    print(line, flush=True)  # noqa: T201  (the run's report)


def chosen(modules: list[str]) -> list[tuple[Group, list[str]]]:
    """The groups to run, each with the globs of the mutants to report (none: all of them)."""
    if not modules:
        return [(group, []) for group in GROUPS]
    runs: dict[str, tuple[Group, list[str]]] = {}
    for module in modules:
        groups = [g for g in GROUPS if any(fnmatch.fnmatch(module, p) for p in g.modules)]
        if not groups:
            known = ", ".join(p for g in GROUPS for p in g.modules)
            raise SystemExit(f"{module} is in no group; the groups mutate {known}")
        for group in groups:
            runs.setdefault(group.name, (group, []))[1].append(mutant_glob(module))
    return list(runs.values())


def names_module(glob: str, group: Group) -> bool:
    """Whether ``glob`` (a mutant name pattern) can name a mutant of ``group``'s modules."""
    prefixes = [mutant_glob(p).split("*", 1)[0] for p in group.modules]
    head = glob.split("*", 1)[0]
    return any(p.startswith(head) or head.startswith(p) for p in prefixes)


def mutant_glob(module: str) -> str:
    """mutmut names a mutant ``<dotted module>.<function>__mutmut_<n>``."""
    return module.removesuffix(".py").replace("/", ".") + ".*"


def group_pyproject(group: Group) -> str:
    """The project's pyproject.toml with the group's modules and tests in [tool.mutmut].

    pytest in the mutants' copy reads the rest ([tool.pytest.ini_options]).
    """
    text = (ROOT / "pyproject.toml").read_text()
    settings = {
        **tomllib.loads(text)["tool"]["mutmut"],
        "only_mutate": list(group.modules),
        "pytest_add_cli_args_test_selection": list(group.tests),
    }
    # JSON spells strings, numbers, booleans and lists of them as TOML does.
    assert all(not isinstance(v, dict) for v in settings.values()), "no tables in [tool.mutmut]"
    lines = "".join(f"{key} = {json.dumps(value)}\n" for key, value in settings.items())
    section = re.compile(r"^\[tool\.mutmut\]\n.*?(?=^\[|\Z)", re.MULTILINE | re.DOTALL)
    return section.sub(lambda _: f"[tool.mutmut]\n{lines}\n", text, count=1)


def prepare(group: Group) -> Path:
    directory = WORK / group.name
    directory.mkdir(parents=True, exist_ok=True)
    for name in LINKED:
        link = directory / name
        if not link.is_symlink():
            link.symlink_to(ROOT / name)
    config = directory / "pyproject.toml"
    wanted = group_pyproject(group)
    if not config.exists() or config.read_text() != wanted:
        config.write_text(wanted)
    # Before mutmut starts: PYTHONPATH names it, and Python skips a missing path entry for good.
    (directory / "mutants").mkdir(exist_ok=True)
    return directory


def environment(directory: Path) -> dict[str, str]:
    """The tests' subprocesses (``enrich serve``, ``python -c``) import the mutated app too.

    They inherit the mutant's name (MUTANT_UNDER_TEST) from the test process, so a server a
    test starts runs the same mutant. Without this they would import the unmutated tree (the
    editable install, or the caller's PYTHONPATH) and a test through them could not fail.
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(directory / "mutants")
    return env


def run(group: Group, globs: list[str], max_children: int, retest: bool, only: list[str]) -> float:
    """Run the group's new and changed mutants, or (``retest``) again the undecided ones (AGAIN):
    the survivors after tests were added, and the timeouts, which a busy machine can cause."""
    directory = prepare(group)
    # mutmut runs again the mutants it is named; by default only those without a result.
    names: list[str] = list(only)
    if retest:
        undecided = reported(group, globs).items()
        names = sorted(n for n, status in undecided if status in AGAIN and chosen_by(n, only))
        if not names:
            say(f"== {group.name}: every mutant was killed")
            return 0.0
    say(f"== {group.name}: {' '.join(group.modules)} against {' '.join(group.tests)}")
    started = time.monotonic()
    command = [str(MUTMUT), "run", "--max-children", str(max_children), *names]
    subprocess.run(command, cwd=directory, env=environment(directory), check=True)
    return time.monotonic() - started


def chosen_by(name: str, only: list[str]) -> bool:
    return not only or any(fnmatch.fnmatch(name, glob) for glob in only)


def reported(group: Group, globs: list[str]) -> dict[str, str]:
    """Mutant name -> status (killed, survived, timeout, no tests, ...), from ``mutmut results``,
    for the mutants that match ``globs`` (all when there are none)."""
    directory = WORK / group.name
    if not (directory / "mutants" / "mutmut-stats.json").exists():
        return {}  # never run
    listed = subprocess.run(
        [str(MUTMUT), "results", "--all", "true"],
        cwd=directory,
        env=environment(directory),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found = {}
    for line in listed.splitlines():
        name, _, status = line.strip().rpartition(": ")
        if name and (not globs or any(fnmatch.fnmatch(name, glob) for glob in globs)):
            found[name] = status
    return found


def report(group: Group, globs: list[str], seconds: float) -> None:
    found = reported(group, globs)
    counts = Counter(found.values())
    # The score is over the mutants that ran ("not checked": a run stopped before them).
    tested = len(found) - counts["no tests"] - counts["skipped"] - counts["not checked"]
    score = sum(counts[s] for s in DECIDED) / tested if tested else 0.0
    figures = " ".join(f"{status}={n}" for status, n in sorted(counts.items()))
    say(f"== {group.name}: {len(found)} mutants, {figures}, score {score:.1%}, {seconds:.0f} s")
    undecided = [(name, status) for name, status in sorted(found.items()) if status in AGAIN]
    for name, status in undecided:
        say(f"   {status}: {name}")
    if undecided:
        say(f"   what each changed: cd {WORK / group.name} && {MUTMUT} show '<name>'")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-children", type=int, default=2)
    parser.add_argument("--retest", action="store_true", help="test surviving mutants again")
    parser.add_argument(
        "--mutants",
        action="append",
        default=[],
        help="only the mutants matching this glob, e.g. '*EventRepository*claim*' (repeatable)",
    )
    parser.add_argument("modules", nargs="*", help="paths under app/ (default: every group)")
    args = parser.parse_args()
    # Every group, not only the chosen ones: a moved module is found on the first run.
    for group in GROUPS:
        if absent := missing(group):
            raise SystemExit(
                f"group {group.name} names paths that do not exist: {', '.join(absent)}"
            )
    for group, globs in chosen(args.modules):
        only: list[str] = []
        if args.mutants:
            names = reported(group, [])  # (mutmut names the mutants of a group run before)
            only = [g for g in args.mutants if any(fnmatch.fnmatch(n, g) for n in names)]
            if not names:
                # Never run: mutmut makes the mutants first, then runs those the globs name.
                only = [g for g in args.mutants if names_module(g, group)]
            if not only:
                continue  # none of this group's mutants are chosen
        seconds = run(group, globs, args.max_children, args.retest, only)
        report(group, globs, seconds)


if __name__ == "__main__":
    main()
