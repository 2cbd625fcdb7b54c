"""``enrich audit --since``: the times people write, relative or absolute."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import typer

from app.cli.audit import parse_since


class TestParseSince:
    def test_relative_and_absolute_times(self) -> None:
        now = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
        assert parse_since("30m", now) == now - timedelta(minutes=30)
        assert parse_since("24h", now) == now - timedelta(hours=24)
        assert parse_since("7d", now) == now - timedelta(days=7)
        assert parse_since("2026-11-01", now) == datetime(2026, 11, 1, tzinfo=UTC)
        assert parse_since("2026-11-01T09:00+09:00", now) == datetime(2026, 11, 1, tzinfo=UTC)
        with pytest.raises(typer.BadParameter):
            parse_since("last tuesday", now)
