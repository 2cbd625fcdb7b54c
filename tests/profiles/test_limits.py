from __future__ import annotations

import re
from typing import Any

import pytest

from app.profiles.limits import DocumentLimits, UnstorableError, check_document

SMALL = DocumentLimits(max_depth=3, max_chars=20)


class TestCheckDocument:
    @pytest.mark.parametrize(
        ("document", "message"),
        [
            ({"a": {"b": ["x\x00"]}}, "a.b[0] holds a NUL character"),
            ({"a": [{"\ud800": 1}]}, "a member name in a[0] holds a lone surrogate"),
            ({"a": "\udfff"}, "a holds a lone surrogate"),
            ({"a": [1.5, float("nan")]}, "a[1] holds a number that is not finite"),
            ({"a": {"b": {"c": {}}}}, "a.b.c nests deeper than the 3 levels"),
            ({"a": "x" * 15, "b": "y" * 5}, "more than 20 characters"),
        ],
    )
    def test_names_the_place_not_the_content(self, document: Any, message: str) -> None:
        with pytest.raises(UnstorableError, match=re.escape(message)):
            check_document(document, SMALL)

    def test_what_stores_passes_and_large_integers_are_reported(self) -> None:
        document: dict[str, Any] = {"a": {"b": [2**64 - 1, "é😀"]}, "n": -(2**63)}
        assert check_document(document, SMALL) is False
        document["a"]["b"].append(2**64)
        assert check_document(document, SMALL) is True
        assert document["a"]["b"][2] == 2**64  # the caller decides where they become floats

    def test_depth_is_counted_from_the_document(self) -> None:
        check_document({"a": {"b": 1}}, DocumentLimits(max_depth=2))
        with pytest.raises(UnstorableError):
            check_document({"a": {"b": {}}}, DocumentLimits(max_depth=2))
        with pytest.raises(UnstorableError):
            check_document([[[]]], DocumentLimits(max_depth=2))

    def test_a_hostile_depth_is_checked_without_recursion(self) -> None:
        document: Any = 1
        for _ in range(100_000):
            document = [document]
        with pytest.raises(UnstorableError, match="32 levels"):
            check_document(document, DocumentLimits())
