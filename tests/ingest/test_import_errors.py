"""``enrich import`` when the database refuses a write: a one-line error by type, no values."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import Backend
from tests.fixtures.refusals import (  # noqa: F401  (fixture)
    EMAIL,
    NEVER_LOGGED,
    REFUSED_SOURCE,
    TRAIT,
    refusing_triggers,
)
from tests.ingest.test_import import run


@pytest.mark.usefixtures("refusing_triggers")
class TestImportRefusedByTheDatabase:
    async def test_the_error_names_the_type_and_no_value(
        self, backend: Backend, tmp_path: Path
    ) -> None:
        (tmp_path / "people.csv").write_text(f"email,traits.secret\n{EMAIL},{TRAIT}\n")
        result = run(backend, "people.csv", "--source", REFUSED_SOURCE, cwd=tmp_path)
        assert result.returncode == 1
        expected = (
            "RaiseError P0001"
            if backend.name == "postgres"
            else ("IntegrityError SQLITE_CONSTRAINT_TRIGGER")
        )
        assert f"error: database: {expected}" in result.stderr
        for value in NEVER_LOGGED:
            assert value not in result.stderr + result.stdout, result.stderr
