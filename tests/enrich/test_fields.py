"""`fields` read into a selection: what is allowed, and what is refused (422)."""

from __future__ import annotations

import pytest

from app.enrich.fields import FieldsError, parse_fields


class TestParseFields:
    def test_no_fields_select_everything(self) -> None:
        assert parse_fields(None).paths is None
        assert parse_fields([]).paths is None
        assert parse_fields(" , ${fields}").paths is None

    def test_comma_separated_and_lists_mix(self) -> None:
        selection = parse_fields(["traits.tier,metrics.order_count", "segments"])
        assert selection.paths is not None
        assert selection.paths["traits"] == [("tier",)]
        assert selection.paths["metrics"] == [("order_count",)]
        assert selection.whole == {"segments"}

    @pytest.mark.parametrize("bad", ["profile.tier", "segments.first", "traits..x", "x"])
    def test_unknown_paths_are_refused(self, bad: str) -> None:
        with pytest.raises(FieldsError):
            parse_fields(bad)
