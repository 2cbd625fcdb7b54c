"""make mutation's groups name modules and tests that exist (tests/mutation/run.py).

A module moved or a test file renamed would otherwise leave a group mutating nothing, or its
mutants run against no test that can kill them, and the score would look the same.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.mutation.run import GROUPS, ROOT, Group, missing

# The packages of the modules: every module in them is mutated by some group.
COVERED = ("app/auth/tokens", "app/enrich/cache")


def test_every_group_names_existing_modules_and_tests() -> None:
    assert {group.name: missing(group) for group in GROUPS} == {g.name: [] for g in GROUPS}


def test_every_module_of_the_guarded_packages_is_in_a_group() -> None:
    patterns = [p for group in GROUPS for p in group.modules]
    modules = sorted(
        str(path.relative_to(ROOT))
        for package in COVERED
        for path in (ROOT / package).glob("*.py")
        if path.name != "__init__.py"
    )
    outside = [m for m in modules if not any(Path(m).match(p) for p in patterns)]
    assert outside == []


def test_a_missing_path_is_named_and_stops_the_run() -> None:
    gone = Group("gone", ("app/enrich/service.py",), ("tests/ops/test_logs.py",))
    assert missing(gone) == ["app/enrich/service.py", "tests/ops/test_logs.py"]
    # The run itself refuses before it starts mutmut, naming the group and the paths.
    script = (
        "import sys; from tests.mutation import run; "
        "run.GROUPS = run.GROUPS + (run.Group('gone', ('app/enrich/service.py',), ()),); "
        "sys.argv = ['run.py', 'app/events/service.py']; run.main()"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 1
    assert "group gone names paths that do not exist: app/enrich/service.py" in result.stderr
