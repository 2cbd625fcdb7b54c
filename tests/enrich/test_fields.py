"""`fields` read into a selection: what is allowed, and what is refused (422)."""

from __future__ import annotations

import pytest

from app.enrich.fields import ROOTS, FieldsError, parse_fields
from app.enrich.schemas import MAX_FIELDS_ITEM, MAX_FIELDS_ITEMS, MAX_FIELDS_TEXT

# The paths of a selection that names none under a root.
EMPTY: dict[str, list[tuple[str, ...]]] = {root: [] for root in ROOTS}


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


class TestFieldsLimits:
    """The documented limits (OpenAPI maxLength, maxItems): up to them is taken, past them a
    422 that says which limit."""

    def test_up_to_each_limit_is_taken(self) -> None:
        long_text = ",".join(["traits.x"] * 221) + ",traits.abcd"  # 2000 characters
        assert len(long_text) == MAX_FIELDS_TEXT
        assert parse_fields(long_text).paths is not None
        items = ["traits.a"] * MAX_FIELDS_ITEMS
        assert parse_fields(items).paths == {**EMPTY, "traits": [("a",)] * MAX_FIELDS_ITEMS}
        longest_item = "traits." + "a" * (MAX_FIELDS_ITEM - len("traits."))
        assert parse_fields([longest_item]).paths is not None

    @pytest.mark.parametrize(
        ("raw", "detail"),
        [
            ("traits.a," * 250, f"fields is longer than {MAX_FIELDS_TEXT} characters"),
            (["traits.a"] * (MAX_FIELDS_ITEMS + 1), f"at most {MAX_FIELDS_ITEMS} fields items"),
            (["traits." + "a" * MAX_FIELDS_ITEM], "a fields item is longer than 200 characters"),
        ],
    )
    def test_past_a_limit_the_detail_names_it(self, raw: str | list[str], detail: str) -> None:
        with pytest.raises(FieldsError) as refused:
            parse_fields(raw)
        assert (refused.value.status_code, refused.value.message) == (422, detail)
